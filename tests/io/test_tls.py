"""TLS stockings over loopback TCP, with certificates made by trustme at test time."""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import sys
import threading
from typing import Any

import pytest
import trustme

import stockings
from conftest import FLAVOURS, tcp_pair, wait_until
from stockings import EndReason, HandshakeFailed, Hub, Stocking, _outbox, _receiver
from stockings._encoding import encode

__all__: list[str] = []

pytestmark = pytest.mark.timeout(30)

BIG = bytes(range(256)) * (4 * 1024 * 1024 // 256)  # 4 MiB


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def wrap_pair(
    client_context: ssl.SSLContext,
    server_context: ssl.SSLContext,
    hostname: str = "localhost",
) -> tuple[ssl.SSLSocket, ssl.SSLSocket]:
    """Two ends of a loopback TCP connection, wrapped for TLS, handshake not started."""
    a, b = tcp_pair()
    client = client_context.wrap_socket(a, server_hostname=hostname, do_handshake_on_connect=False)
    server = server_context.wrap_socket(b, server_side=True, do_handshake_on_connect=False)
    return client, server


def tls_stocking_and_raw_peer(
    flavour: type[Stocking],
    client_context: ssl.SSLContext,
    server_context: ssl.SSLContext,
    **client_options: Any,
) -> tuple[Stocking, ssl.SSLSocket]:
    """A TLS server stocking, and a blocking ``ssl`` client socket (10 s timeout) as its peer."""
    a, b = tcp_pair()
    stocking = flavour(
        server_context.wrap_socket(b, server_side=True, do_handshake_on_connect=False)
    )
    a.settimeout(10)
    raw = client_context.wrap_socket(a, server_hostname="localhost", **client_options)
    return stocking, raw


def make_stockings(
    flavour: type[Stocking],
    client_context: ssl.SSLContext,
    server_context: ssl.SSLContext,
    hostname: str = "localhost",
    **kwargs: object,
) -> tuple[Stocking, Stocking]:
    client, server = wrap_pair(client_context, server_context, hostname)
    return flavour(client, **kwargs), flavour(server, **kwargs)  # type: ignore[arg-type]


def read_n(stocking: Stocking, n: int, timeout: float = 20.0) -> list[object]:
    got = []
    for _ in range(n):
        message = stocking.read(timeout=timeout)
        assert message is not None, f"only {len(got)} of {n} messages arrived"
        got.append(message)
    return got


def write_early(stocking: Stocking, message: str) -> None:
    """Write during the TLS handshake: queued, or refused if it has already failed."""
    try:
        stocking.write(message)
    except stockings.ConnectionClosed as exc:
        assert exc.reason is EndReason.HANDSHAKE_FAILED


def assert_failed_handshake(stocking: Stocking) -> None:
    wait_until(lambda: stocking.ended)
    assert stocking.end_reason is EndReason.HANDSHAKE_FAILED
    assert isinstance(stocking.end_exception, HandshakeFailed)
    assert "TLS" in str(stocking.end_exception)


# ------------------------------------------------------------------ works


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.usefixtures("no_leaks")
def test_verified_connection_carries_every_kind_of_message(
    flavour: type[Stocking], client_context: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    client, server = make_stockings(flavour, client_context, server_context)
    assert isinstance(client.sock, ssl.SSLSocket)
    messages: list[object] = ["text", b"bytes", "", b"", "\u00e9\u4e2d", BIG]
    for message in messages:
        client.write(message)
        server.write(message)
    assert read_n(server, len(messages)) == messages
    assert read_n(client, len(messages)) == messages
    assert client.sock.version() in ("TLSv1.2", "TLSv1.3")
    client.close()
    server.close()


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.usefixtures("no_leaks")
def test_burst_both_ways_at_once(
    flavour: type[Stocking], client_context: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    client, server = make_stockings(flavour, client_context, server_context)
    count = 3000

    def burst(stocking: Stocking, tag: str) -> None:
        for i in range(count):
            stocking.write(f"{tag}{i}" * (1 + i % 50))

    writers = [
        threading.Thread(target=burst, args=(client, "c")),
        threading.Thread(target=burst, args=(server, "s")),
    ]
    for writer in writers:
        writer.start()
    from_client = read_n(server, count)
    from_server = read_n(client, count)
    for writer in writers:
        writer.join(10)
    assert from_client == [f"c{i}" * (1 + i % 50) for i in range(count)]
    assert from_server == [f"s{i}" * (1 + i % 50) for i in range(count)]
    client.close()
    server.close()


@pytest.mark.usefixtures("no_leaks")
def test_a_burst_of_small_writes_goes_out_in_few_records(
    monkeypatch: pytest.MonkeyPatch,
    client_context: ssl.SSLContext,
    server_context: ssl.SSLContext,
) -> None:
    # Every write after the first counts as part of a burst, however slow the machine.
    monkeypatch.setattr(_outbox, "BURST_GAP", 3600.0)
    client_sock, server_sock = wrap_pair(client_context, server_context)
    sends: list[int] = []
    send = client_sock.send

    def counting_send(data: Any, flags: int = 0) -> int:
        sends.append(len(data))
        return send(data, flags)

    client_sock.send = counting_send  # type: ignore[method-assign]
    client, server = Stocking(client_sock), Stocking(server_sock)
    # Writes wait for the handshake behind a marker, batched anyway: finish it first.
    client.write(b"hello")
    assert server.read(timeout=10) == b"hello"
    wait_until(lambda: client.queued_bytes == 0)
    del sends[:]
    count = 2000
    for i in range(count):
        client.write(b"%099d" % i)
    assert read_n(server, count) == [b"%099d" % i for i in range(count)]
    # One TLS record per send: a send per message would be `count` of them.
    assert len(sends) <= count // 10, f"{len(sends)} sends for {count} small messages"
    client.close()
    server.close()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
@pytest.mark.usefixtures("no_leaks")
def test_tls_12_and_13(
    version: ssl.TLSVersion, ca: trustme.CA, server_context: ssl.SSLContext
) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.minimum_version = context.maximum_version = version
    client, server = make_stockings(Stocking, context, server_context)
    client.write(b"x" * 100_000)
    server.write("pong")
    assert server.read(timeout=10) == b"x" * 100_000
    assert client.read(timeout=10) == "pong"
    assert client.sock.version() == version.name.replace("_", ".")
    client.close()
    server.close()


@pytest.mark.usefixtures("no_leaks")
def test_connect_and_server_helpers(
    client_context: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    with stockings.Server(("127.0.0.1", 0), ssl=server_context) as listener:
        client = stockings.connect(
            listener.address, ssl=client_context, server_hostname="localhost", timeout=10
        )
        server = listener.accept(timeout=10)
        assert server is not None
        client.write("over TLS")
        assert server.read(timeout=10) == "over TLS"
        server.write(b"and back")
        assert client.read(timeout=10) == b"and back"
        client.close()
        assert server.read(timeout=10) is None
        assert server.end_reason is EndReason.PEER_CLOSED


@pytest.mark.usefixtures("no_leaks")
def test_writes_made_during_the_handshake_wait_for_it(
    client_context: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    client_sock, server_sock = wrap_pair(client_context, server_context)
    client = Stocking(client_sock)
    # The server end is not served yet, so the client's handshake cannot finish.
    sent = [f"early {i}" for i in range(200)] + [BIG]
    for message in sent:
        client.write(message)
    assert client.queued_bytes > len(BIG)
    server = Stocking(server_sock)
    assert read_n(server, len(sent)) == sent
    client.close()
    server.close()


@pytest.mark.usefixtures("no_leaks")
def test_reading_resumes_with_bytes_already_decrypted(
    client_context: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    # A tiny inbound high-water mark pauses reading between TLS records, with
    # decrypted bytes left in the TLS object where select cannot see them.
    client, server = make_stockings(
        Stocking, client_context, server_context, read_high_water=100, read_low_water=0
    )
    sent = [bytes([i % 256]) * (1 + i * 7 % 300) for i in range(2000)]
    for message in sent:
        client.write(message)
    assert read_n(server, len(sent)) == sent
    client.close()
    server.close()


# ---------------------------------------------------------------- failures


def check_rejected_certificate(client: Stocking, server: Stocking, why: str) -> None:
    """The client refused the server's certificate: both ends failed, nothing delivered."""
    write_early(client, "must not arrive")
    write_early(server, "must not arrive either")
    assert_failed_handshake(client)
    assert isinstance(client.end_exception.__cause__, ssl.SSLCertVerificationError)
    assert why in str(client.end_exception)
    assert_failed_handshake(server)
    assert client.read() is None
    assert server.read() is None
    client.close()
    server.close()


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.usefixtures("no_leaks")
def test_wrong_hostname_fails_clearly_and_delivers_nothing(
    flavour: type[Stocking], client_context: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    client, server = make_stockings(
        flavour, client_context, server_context, hostname="wrong.example"
    )
    check_rejected_certificate(client, server, "wrong.example")


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.usefixtures("no_leaks")
def test_untrusted_ca_fails_clearly_and_delivers_nothing(
    flavour: type[Stocking], server_context: ssl.SSLContext
) -> None:
    stranger = ssl.create_default_context()
    trustme.CA().configure_trust(stranger)
    client, server = make_stockings(flavour, stranger, server_context)
    check_rejected_certificate(client, server, "certificate verify failed")


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.usefixtures("no_leaks")
def test_plain_peer_talking_to_a_tls_server(
    flavour: type[Stocking], server_context: ssl.SSLContext
) -> None:
    a, b = tcp_pair()
    plain = flavour(a)
    tls = flavour(server_context.wrap_socket(b, server_side=True, do_handshake_on_connect=False))
    plain.write("hello in the clear")
    assert_failed_handshake(tls)
    assert isinstance(tls.end_exception.__cause__, ssl.SSLError)
    assert tls.read() is None
    wait_until(lambda: plain.ended)
    plain.close()
    tls.close()


@pytest.mark.usefixtures("no_leaks")
def test_tls_client_talking_to_a_plain_peer(client_context: ssl.SSLContext) -> None:
    a, b = tcp_pair()
    tls = Stocking(
        client_context.wrap_socket(a, server_hostname="localhost", do_handshake_on_connect=False)
    )
    plain = Stocking(b)
    plain.write("hello in the clear")
    assert_failed_handshake(tls)
    assert tls.read() is None
    wait_until(lambda: plain.ended)
    assert plain.end_reason is not EndReason.CLOSED
    plain.close()
    tls.close()


# ------------------------------------------------------------------- close


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.usefixtures("no_leaks")
def test_close_sends_close_notify(
    flavour: type[Stocking], client_context: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    # A strict peer: a TCP end without close_notify would raise SSLEOFError.
    stocking, raw = tls_stocking_and_raw_peer(
        flavour, client_context, server_context, suppress_ragged_eofs=False
    )
    stocking.write("last words")
    stocking.write(BIG)
    received = b""
    want = len(stockings.encode("last words")) + len(stockings.encode(BIG))
    while len(received) < want:
        chunk = raw.recv(1 << 20)
        assert chunk, "the stream ended early"
        received += chunk
    assert received == stockings.encode("last words") + stockings.encode(BIG)
    stocking.close()
    assert stocking.end_reason is EndReason.CLOSED
    assert raw.recv(1024) == b""  # close_notify: a clean TLS end, not a truncation
    raw.close()


@pytest.mark.usefixtures("no_leaks")
def test_peer_sees_a_clean_end_after_everything(
    client_context: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    client, server = make_stockings(Stocking, client_context, server_context)
    sent = [f"m{i}" for i in range(500)] + [BIG]
    for message in sent:
        client.write(message)
    client.close()
    assert client.end_reason is EndReason.CLOSED
    assert list(server) == sent
    assert server.end_reason is EndReason.PEER_CLOSED
    server.close()


def tcp_state(sock: socket.socket) -> int:
    """The kernel's TCP state of ``sock`` (the first byte of ``TCP_INFO``)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


_TCP_FIN_WAIT1 = 4
_TCP_FIN_WAIT2 = 5


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's TCP_INFO")
@pytest.mark.usefixtures("no_leaks")
def test_a_late_session_ticket_does_not_cut_the_last_message_short(
    client_context: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    # A TLS 1.3 server sends its session tickets once it reads the client's
    # Finished, which may be after the client has written, closed and shut
    # its socket down. Had the client closed the descriptor, its kernel would
    # answer the tickets with a reset and drop the unsent end of the message.
    for _ in range(20):
        client_sock, server_sock = wrap_pair(client_context, server_context)
        # The client's kernel takes the whole message; the server's holds a part.
        client_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        server_sock.setblocking(False)
        client = Stocking(client_sock)
        # The server's first flight only: it stops before the client's Finished.
        select.select([server_sock], [], [], 10.0)
        try:
            server_sock.do_handshake()
        except ssl.SSLWantReadError:
            break
        # The client's hub answered within the server's one handshake call,
        # which then read its Finished too: no late tickets. Again.
        client.abort()
        server_sock.close()
    else:
        pytest.fail("the server's handshake never stopped before the client's Finished")
    wait_until(lambda: not client._channel.transport.handshaking)
    payload = BIG[: 1024 * 1024]
    client.write(payload)
    closer = threading.Thread(target=client.close, name="test-closer")
    closer.start()
    # The client has sent close_notify and shut its socket down (or closed it).
    wait_until(lambda: client.ended or tcp_state(client_sock) in (_TCP_FIN_WAIT1, _TCP_FIN_WAIT2))
    server_sock.settimeout(20.0)
    server_sock.do_handshake()  # now the tickets go out
    expected = len(stockings.encode(payload))
    received = 0
    while True:
        chunk = server_sock.recv(1 << 20)
        if not chunk:
            break
        received += len(chunk)
    closer.join(20.0)
    assert not closer.is_alive()
    assert client.end_reason is EndReason.CLOSED
    assert received == expected
    server_sock.close()


@pytest.mark.usefixtures("no_leaks")
def test_abort_during_the_handshake(
    client_context: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    client_sock, server_sock = wrap_pair(client_context, server_context)
    client = Stocking(client_sock)
    client.write("never sent")
    client.abort()
    assert client.end_reason is EndReason.ABORTED
    server_sock.close()


@pytest.mark.usefixtures("no_leaks")
def test_close_during_a_stalled_handshake_does_not_wait(
    client_context: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    client_sock, server_sock = wrap_pair(client_context, server_context)
    client = Stocking(client_sock)
    client.close(timeout=30)  # nothing was written: no reason to wait for the peer
    assert client.end_reason is EndReason.CLOSED
    server_sock.close()


# ------------------------------------------------------------------- hub


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.usefixtures("no_leaks")
def test_stalled_handshake_blocks_no_other_stocking(
    flavour: type[Stocking],
    client_context: ssl.SSLContext,
    server_context: ssl.SSLContext,
    closing: list[Stocking],
) -> None:
    hub = Hub(flavour.selector_factory, name="stockings-test-hub")
    # One peer connects and sends half a ClientHello, then nothing.
    silent, victim_sock = tcp_pair()
    victim = flavour(
        server_context.wrap_socket(victim_sock, server_side=True, do_handshake_on_connect=False),
        hub=hub,
    )
    closing.append(victim)
    silent.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    pairs = []
    for _ in range(20):
        client, server = make_stockings(flavour, client_context, server_context, hub=hub)
        closing.extend((client, server))
        pairs.append((client, server))
    for i, (client, server) in enumerate(pairs):
        client.write(f"ping {i}")
        server.write(f"pong {i}")
    for i, (client, server) in enumerate(pairs):
        assert server.read(timeout=10) == f"ping {i}"
        assert client.read(timeout=10) == f"pong {i}"
    assert not victim.ended
    for client, server in pairs:
        client.close()
        server.close()
    victim.close()
    assert victim.end_reason is EndReason.CLOSED
    silent.close()


@pytest.mark.usefixtures("no_leaks")
def test_paused_reading_resumes_on_bytes_only_the_tls_object_holds(
    client_context: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    # The client queues its messages behind its handshake, so they leave in
    # one TLS record. The server reads it through a small buffer: part of the
    # record is still inside the TLS object, invisible to select, when its
    # tiny inbound high-water mark pauses reading. Nothing more will come
    # from the socket, so only resuming from the TLS object delivers the rest.
    hub = Hub(name="stockings-test-small-buffer")
    hub.recv_buffer = bytearray(512)
    hub.recv_view = memoryview(hub.recv_buffer)
    client_sock, server_sock = wrap_pair(client_context, server_context)
    client = Stocking(client_sock)
    sent = [bytes([i]) * 50 for i in range(100)]
    for message in sent:
        client.write(message)
    server = Stocking(server_sock, hub=hub, read_high_water=100, read_low_water=0)
    assert read_n(server, len(sent), timeout=5) == sent
    client.close()
    server.close()


@pytest.mark.usefixtures("no_leaks")
def test_socket_already_past_its_handshake(
    client_context: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    # Wrapped the ordinary way, handshake done before the stocking exists.
    a, b = tcp_pair()
    a.settimeout(10)
    b.settimeout(10)
    accepted: list[ssl.SSLSocket] = []
    accepting = threading.Thread(
        target=lambda: accepted.append(server_context.wrap_socket(b, server_side=True))
    )
    accepting.start()
    client_sock = client_context.wrap_socket(a, server_hostname="localhost")
    accepting.join(10)
    client, server = Stocking(client_sock), Stocking(accepted[0])
    client.write("already secure")
    server.write(BIG)
    assert server.read(timeout=10) == "already secure"
    assert client.read(timeout=10) == BIG
    client.close()
    assert server.read(timeout=10) is None
    assert server.end_reason is EndReason.PEER_CLOSED
    server.close()


class _NoSendmsgSocket(socket.socket):
    """A socket without sendmsg (as TLS sockets and Windows), whose next large send would block."""

    block_next_large = True

    @property
    def sendmsg(self) -> None:  # type: ignore[override]
        raise AttributeError("sendmsg")

    def send(self, data: Any, flags: int = 0) -> int:
        if self.block_next_large and len(data) > 1000:
            self.block_next_large = False
            raise BlockingIOError
        return super().send(data, flags)


@pytest.mark.usefixtures("no_leaks")
def test_header_sent_alone_is_not_sent_again() -> None:
    # Without sendmsg a large message goes out as header, then payload: when
    # only the payload would block, the header must not be queued again.
    a, b = socket.socketpair()
    writer = Stocking(_NoSendmsgSocket(fileno=a.detach()))
    reader = Stocking(b)
    writer.write(BIG)
    writer.write("after")
    assert reader.read(timeout=10) == BIG
    assert reader.read(timeout=10) == "after"
    writer.close()
    reader.close()


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.usefixtures("no_leaks")
def test_tampered_stream_ends_with_the_tls_error(
    flavour: type[Stocking], client_context: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    stocking, raw = tls_stocking_and_raw_peer(flavour, client_context, server_context)
    raw.sendall(stockings.encode("genuine"))
    assert stocking.read(timeout=10) == "genuine"
    # A record whose authentication tag cannot be right, straight onto the TCP stream.
    socket.socket.sendall(raw, b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
    wait_until(lambda: stocking.ended)
    assert stocking.end_reason is EndReason.ERROR
    assert isinstance(stocking.end_exception, ssl.SSLError)
    assert stocking.read() is None
    stocking.close()
    raw.close()


def test_the_default_client_context_verifies_and_refuses_renegotiation() -> None:
    from stockings._client import default_client_context

    context = default_client_context()
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.options & ssl.OP_NO_RENEGOTIATION


@pytest.mark.usefixtures("no_leaks")
def test_a_write_just_before_close_is_not_overtaken_by_close_notify(
    client_context: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    """A close() racing the hub's flush: the message written before it still arrives.

    The hub flushes the queue, finds it empty, and only then looks whether
    the stocking is closing. A write and a close() landing in that gap must
    not have the hub send close_notify with the new message still queued.
    The gap is held open by pausing the hub where it is (``_set_interest``,
    called between the two), while this thread writes and closes.
    """
    writer, reader = make_stockings(stockings.Stocking, client_context, server_context)
    channel = writer._channel
    writer.write(b"warm-up")
    assert reader.read(timeout=10) == b"warm-up"

    in_gap = threading.Event()
    go_on = threading.Event()
    original = channel._set_interest
    armed = True

    def pause_in_gap() -> None:
        nonlocal armed
        if armed and not channel.outbox.pending and not channel.outbox.closing:
            armed = False
            in_gap.set()
            go_on.wait(10)
        original()

    channel._set_interest = pause_in_gap  # type: ignore[method-assign]
    # Written on the main thread, so the hub sends it, then pauses in the gap.
    writer.write(b"first")
    assert in_gap.wait(10)
    writer.write(b"second")
    closer = threading.Thread(target=writer.close, name="test-closer")
    closer.start()
    wait_until(lambda: channel.outbox.closing)
    go_on.set()
    closer.join(10)
    assert not closer.is_alive()
    assert writer.end_reason is EndReason.CLOSED, repr(writer.end_exception)
    assert read_n(reader, 2) == [b"first", b"second"]
    assert reader.read(timeout=10) is None
    assert reader.end_reason is EndReason.PEER_CLOSED, repr(reader.end_exception)
    reader.close()


@pytest.mark.usefixtures("no_leaks")
def test_close_notify_goes_out_once_when_a_flush_and_close_meet(
    client_context: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    """The flush that empties the queue and close()'s own step both finish a close.

    With the hub held while a message is written and close() is called, it
    then runs the flush (which sees the queue empty and closing) and the
    close step (which sees it empty too). Only the first may start the TLS
    shutdown: a second one skipped the wait for the peer's acknowledgement.
    """
    writer, reader = make_stockings(stockings.Stocking, client_context, server_context)
    channel = writer._channel
    writer.write(b"warm-up")
    assert reader.read(timeout=10) == b"warm-up"
    tls = channel.sock
    unwraps: list[int] = []
    original_unwrap = tls.unwrap

    def counted_unwrap() -> Any:
        unwraps.append(1)
        return original_unwrap()

    tls.unwrap = counted_unwrap  # type: ignore[method-assign]
    hold = threading.Event()
    channel.hub.call_soon(lambda: hold.wait(10))
    writer.write(b"last")
    closer = threading.Thread(target=writer.close, name="test-closer")
    closer.start()
    wait_until(lambda: channel.closer.posted)
    hold.set()
    assert reader.read(timeout=10) == b"last"
    assert reader.read(timeout=10) is None
    reader.close()
    closer.join(10)
    assert not closer.is_alive()
    assert writer.end_reason is EndReason.CLOSED, repr(writer.end_exception)
    assert len(unwraps) == 1


@pytest.mark.usefixtures("no_leaks")
def test_a_write_as_the_peer_half_closes_is_sent_or_refused(
    client_context: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    """A write between the peer's end of stream and the stocking's end is never dropped.

    The hub, having found nothing left to send, is held just before it ends
    the stocking; a write then (queued, as every TLS write of the main
    thread is) must either raise or reach the peer, which still reads.
    """
    stocking, raw = tls_stocking_and_raw_peer(stockings.Stocking, client_context, server_context)
    with raw:
        raw.sendall(b"\x82hi")
        assert stocking.read(timeout=10) == "hi"
        channel = stocking._channel
        at_end = threading.Event()
        go_on = threading.Event()
        original_end = channel._end

        def held_end(reason: EndReason, exc: BaseException | None = None) -> None:
            if reason is EndReason.PEER_CLOSED and not at_end.is_set():
                at_end.set()
                go_on.wait(10)
            original_end(reason, exc)

        channel._end = held_end  # type: ignore[method-assign]
        # TCP's half-close under TLS: the peer can still read what comes.
        socket.socket.shutdown(raw, socket.SHUT_WR)
        assert at_end.wait(10)
        try:
            stocking.write(b"late")
        except stockings.ConnectionClosed:
            written = False
        else:
            written = True
        go_on.set()
        received = b""
        try:
            while chunk := raw.recv(4096):
                received += chunk
        except OSError:
            pass
    assert stocking.read(timeout=10) is None
    assert stocking.end_reason is EndReason.PEER_CLOSED, repr(stocking.end_exception)
    if written:
        assert b"late" in received, "write() returned, but the message never arrived"
    stocking.close()


# ------------------------------------------------------------ large payloads


@pytest.mark.usefixtures("no_leaks")
def test_large_payloads_are_decrypted_into_a_buffer_of_their_own(
    client_context: ssl.SSLContext,
    server_context: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assembled: list[int] = []
    real = _receiver.Receiver.payload_arrived

    def counted(self: _receiver.Receiver, received: int) -> int:
        outcome = real(self, received)
        if outcome == _receiver._DELIVERED:
            assembled.append(received)
        return outcome

    monkeypatch.setattr(_receiver.Receiver, "payload_arrived", counted)
    client, server = make_stockings(Stocking, client_context, server_context)
    sent: list[bytes | str] = [b"a" * 600_000, "small", b"b" * 1_500_000, b"", b"c" * 70_000]
    with client, server:
        for message in sent:
            client.write(message)
        assert read_n(server, len(sent)) == sent
    # 70 KB comes whole in the hub's buffer; the two larger ones are assembled.
    assert len(assembled) >= 2


@pytest.mark.usefixtures("no_leaks")
def test_a_tls_stream_ending_inside_a_large_payload_is_an_incomplete_message(
    client_context: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    stocking, raw = tls_stocking_and_raw_peer(Stocking, client_context, server_context)
    with stocking:
        raw.sendall(encode(b"first") + encode(b"x" * 600_000)[:300_000])
        assert stocking.read(timeout=10) == b"first"
        # Wait until the hub is inside the payload before the peer closes.
        wait_until(lambda: stocking.bytes_received > 250_000)
        # A clean TLS close (close_notify) in the middle of the message; the
        # stocking's own answer may beat the unwrap to it.
        with contextlib.suppress(OSError):
            raw.unwrap()
        raw.close()
        assert stocking.read(timeout=10) is None
        assert stocking.end_reason is stockings.EndReason.PROTOCOL_ERROR
        assert isinstance(stocking.end_exception, stockings.IncompleteMessage)


def test_a_tls_receiver_never_touches_the_socket_s_low_water_mark(
    client_context: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    # TLS decrypts what the receiver gets: only the plain path may receive whole.
    client, server = make_stockings(Stocking, client_context, server_context)
    with client, server:
        assert server._channel.receiver.whole is None
