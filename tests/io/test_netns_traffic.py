"""Traffic over a real link between two network namespaces: volume, TLS, errors, a bad network."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

import stockings
from conftest import FLAVOURS
from netns_peer import StreamDigest, send_mixed
from netns_support import PEER_PORT, REFUSED_PORT, NetnsHost, netns_host
from stockings import Stocking

__all__: list[str] = []

pytestmark = pytest.mark.timeout(120)

#: Messages each way in the volume tests (about 40 MB each way).
COUNT = 100_000
SLACK = 1.5


@pytest.fixture
def host(tmp_path: Path) -> Iterator[NetnsHost]:
    with netns_host(tmp_path) as made:
        yield made


def exchange(
    host: NetnsHost,
    flavour: type[Stocking],
    count: int,
    large_every: int = 20_000,
    tls: tuple[ssl.SSLContext, list[str]] | None = None,
) -> None:
    """Send ``count`` mixed messages each way at once; check both streams' checksums."""
    peer_args = ["mixed", flavour.__name__, str(count), "2", str(large_every)]
    context = None
    if tls is not None:
        context, tls_args = tls
        peer_args += ["--tls", *tls_args]
    peer = host.peer(*peer_args)
    with stockings.connect(
        (host.address, PEER_PORT), timeout=10, ssl=context, cls=flavour
    ) as stocking:
        sent = StreamDigest()
        failures: list[BaseException] = []

        def send() -> None:
            try:
                send_mixed(stocking, 1, count, large_every, sent)
            except BaseException as exc:
                failures.append(exc)

        sender = threading.Thread(target=send, name="netns-test-sender")
        sender.start()
        received = StreamDigest()
        try:
            while received.count < count:
                message = stocking.read(timeout=30)
                assert message is not None, (
                    f"{received.count} of {count} received, then nothing: {stocking!r}"
                    f" ({stocking.end_exception!r})"
                )
                received.add(message)
        finally:
            sender.join(60)
        assert not failures, failures
        peer_sent, peer_received = peer.expect("digest", timeout=60)
        assert received.hexdigest() == peer_sent, "the peer's messages changed on the way"
        assert sent.hexdigest() == peer_received, "our messages changed on the way"


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
def test_mixed_messages_both_ways_at_once(host: NetnsHost, flavour: type[Stocking]) -> None:
    exchange(host, flavour, COUNT)


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
def test_mixed_messages_both_ways_at_once_over_tls(
    host: NetnsHost, tmp_path: Path, flavour: type[Stocking]
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert(host.address)
    chain, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(key)
    for i, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(chain, append=i > 0)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    exchange(host, flavour, COUNT, tls=(context, [str(chain), str(key)]))


def test_connect_where_nothing_listens_is_refused(host: NetnsHost) -> None:
    with pytest.raises(ConnectionRefusedError):
        stockings.connect((host.address, REFUSED_PORT), timeout=10)


def test_connect_over_a_cut_link_times_out_within_timeout(host: NetnsHost) -> None:
    host.peer("echo", "Stocking")
    host.partition()
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        stockings.connect((host.address, PEER_PORT), timeout=2)
    took = time.monotonic() - start
    assert 2 - 0.1 <= took <= 2 + SLACK, f"connect(timeout=2) gave up after {took:.2f} s"


def test_every_message_arrives_over_a_slow_lossy_link(host: NetnsHost) -> None:
    # 20 ms each way and 1% of packets lost, on both ends of the link: TCP
    # retransmits, and stockings must still deliver every message whole.
    host.netem("delay", "20ms", "loss", "1%")
    exchange(host, Stocking, 3_000, large_every=3_000)
