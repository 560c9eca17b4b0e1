"""What stockings logs, through the ``stockings`` logger hierarchy."""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator

import pytest
import trustme

import stockings
from conftest import FLAVOURS, wait_until
from stockings import EndReason, Hub, Server, Stocking

PairMaker = Callable[[], tuple[socket.socket, socket.socket]]


@pytest.fixture
def debug_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG, logger="stockings")
    yield caplog


def records(caplog: pytest.LogCaptureFixture, name: str, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == name and r.levelno == level]


def test_the_library_is_silent_unless_logging_is_configured() -> None:
    # A handler that raises, and a peer that breaks the protocol: both are
    # logged, but an application that configured no logging prints nothing.
    script = textwrap.dedent(
        """
        import socket, stockings

        def handler(stocking):
            raise ValueError("a failing handler")

        with stockings.Server(("127.0.0.1", 0), handler=handler) as server:
            client = stockings.connect(server.address, timeout=5)
            raw, sock = socket.socketpair()
            bad = stockings.Stocking(sock)
            raw.sendall(b"\\x00" * 12)  # a header that never ends
            assert bad.read(timeout=5) is None
            assert bad.end_reason is stockings.EndReason.PROTOCOL_ERROR
            client.close()
            bad.close()
            raw.close()
        print("done")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done\n"
    assert done.stderr == ""
    root = logging.getLogger("stockings")
    assert any(isinstance(h, logging.NullHandler) for h in root.handlers)


def one_message_then_both_closed(
    debug_log: pytest.LogCaptureFixture, text: str
) -> list[logging.LogRecord]:
    """Send ``text`` over a socket pair, close both ends; their DEBUG records."""
    a, b = socket.socketpair()
    left, right = Stocking(a), Stocking(b)
    left.write(text)
    assert right.read(timeout=5) == text
    left.close()
    assert right.read(timeout=5) is None
    right.close()

    def logged() -> list[logging.LogRecord]:
        return records(debug_log, "stockings.connection", logging.DEBUG)

    # The hub thread logs an end just after the stocking turned ended.
    wait_until(lambda: sum("ended:" in r.getMessage() for r in logged()) == 2)
    return logged()


def test_debug_records_a_connection_opening_and_ending(
    debug_log: pytest.LogCaptureFixture,
) -> None:
    debug = one_message_then_both_closed(debug_log, "hello")
    messages = [r.getMessage() for r in debug]
    assert sum("opened (Stocking)" in m for m in messages) == 2
    assert any("ended: closed;" in m for m in messages)
    assert any("ended: peer closed;" in m for m in messages)
    assert all(hasattr(r, "peer") for r in debug)


def test_a_peer_that_breaks_the_protocol_is_a_warning_naming_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        raw = socket.create_connection(listener.getsockname())
        sock, _ = listener.accept()
    host, port = raw.getsockname()[:2]
    peer = f"{host}:{port}"
    stocking = Stocking(sock, max_message_size=1024)
    try:
        raw.sendall(stockings.encode("fine") + stockings.encode_header(4096, False))
        assert stocking.read(timeout=5) == "fine"
        assert stocking.read(timeout=5) is None
        assert stocking.end_reason is EndReason.MESSAGE_TOO_LARGE
    finally:
        stocking.close()
        raw.close()
    (warning,) = records(caplog, "stockings.connection", logging.WARNING)
    message = warning.getMessage()
    assert message == f"{peer}: the peer broke the protocol: {stocking.end_exception}"
    assert "4096" in message
    assert warning.peer == peer


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    return context


@pytest.fixture
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def test_a_tls_handshake_is_recorded(
    debug_log: pytest.LogCaptureFixture,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    with Server(("127.0.0.1", 0), ssl=server_context) as server:
        client = stockings.connect(
            server.address, ssl=client_context, server_hostname="localhost", timeout=5
        )
        served = server.accept(timeout=5)
        assert served is not None
        try:
            client.write("over tls")
            assert served.read(timeout=5) == "over tls"
        finally:
            client.close()
            served.close()
    done = [
        r.getMessage()
        for r in records(debug_log, "stockings.connection", logging.DEBUG)
        if "TLS handshake done" in r.getMessage()
    ]
    assert len(done) == 2
    assert all("TLSv1" in m for m in done)
    accepted = records(debug_log, "stockings.server", logging.DEBUG)
    assert any("accepted 127.0.0.1:" in r.getMessage() for r in accepted)


def test_an_error_on_a_hub_thread_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = Hub(name="stockings-hub-test-log")
    a, b = socket.socketpair()
    left, right = Stocking(a, hub=hub), Stocking(b, hub=hub)
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise ZeroDivisionError("nobody's callback")

    try:
        hub.call_soon(broken)
        wait_until(lambda: records(caplog, "stockings.hub", logging.ERROR))
        # Nobody's callback: reported, and everyone else carries on.
        left.write("still here")
        assert right.read(timeout=5) == "still here"
    finally:
        left.close()
        right.close()
    (error,) = records(caplog, "stockings.hub", logging.ERROR)
    assert error.exc_info is not None
    assert isinstance(error.exc_info[1], ZeroDivisionError)
    assert error.exc_info[2] is not None


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
def test_counters_count_messages_and_bytes_both_ways(
    flavour: type[Stocking], make_pair: PairMaker
) -> None:
    a, b = make_pair()
    left, right = flavour(a), flavour(b)
    try:
        assert (left.messages_sent, left.bytes_sent) == (0, 0)
        assert (right.messages_received, right.bytes_received) == (0, 0)
        big = b"x" * (3 * 1024 * 1024)
        messages: list[str | bytes] = ["", "hello", b"\x00" * 100, big]
        for message in messages:
            left.write(message)
        left.write_many(["one", b"two"])
        messages += ["one", b"two"]
        wire = sum(len(stockings.encode(m)) for m in messages)
        got = [right.read(timeout=10) for _ in messages]
        assert got == messages
        wait_until(lambda: left.bytes_sent == wire)
        assert left.messages_sent == len(messages)
        assert right.messages_received == len(messages)
        assert right.bytes_received == wire
        # The other way round too, and nothing counted twice.
        right.write("back")
        assert left.read(timeout=5) == "back"
        wait_until(lambda: right.bytes_sent == len(stockings.encode("back")))
        assert (left.messages_received, left.bytes_received) == (1, 5)
        assert (right.messages_sent, left.messages_sent) == (1, len(messages))
    finally:
        left.close()
        right.close()


def test_the_end_record_carries_the_counters(debug_log: pytest.LogCaptureFixture) -> None:
    debug = one_message_then_both_closed(debug_log, "four")
    ends = [r.getMessage() for r in debug if "ended:" in r.getMessage()]
    assert any(m.endswith("in: 0 messages, 0 bytes; out: 1 messages, 5 bytes") for m in ends)
    assert any(m.endswith("in: 1 messages, 5 bytes; out: 0 messages, 0 bytes") for m in ends)


def test_counters_over_tls(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> None:
    with Server(("127.0.0.1", 0), ssl=server_context) as server:
        client = stockings.connect(
            server.address, ssl=client_context, server_hostname="localhost", timeout=5
        )
        served = server.accept(timeout=5)
        assert served is not None
        try:
            for _ in range(100):
                client.write(b"0123456789")
            for _ in range(100):
                assert served.read(timeout=5) == b"0123456789"
            # Plaintext bytes: the stream as written, not the TLS records.
            wait_until(lambda: client.bytes_sent == 1100)
            assert served.bytes_received == 1100
            assert (client.messages_sent, served.messages_received) == (100, 100)
        finally:
            client.close()
            served.close()


class FailingHandshake(Stocking):
    def handshake(self) -> bool:
        raise KeyError("no such user")


def test_a_handshake_hook_that_raises_is_an_error_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = socket.socketpair()
    failing, peer = FailingHandshake(a), Stocking(b)
    try:
        assert not failing.wait_handshake(10)
        assert failing.end_reason is EndReason.HANDSHAKE_FAILED
    finally:
        failing.close()
        peer.close()
    (error,) = records(caplog, "stockings.connection", logging.ERROR)
    assert "the handshake hook raised" in error.getMessage()
    assert error.exc_info is not None and isinstance(error.exc_info[1], KeyError)
