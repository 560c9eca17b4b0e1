"""Faults a stocking must survive, each from a real misbehaving peer.

Bad input comes from a raw socket writing exactly the bytes under test;
stream faults (trickling, chopping, delays, resets) come from
:mod:`faultproxy` standing between two stockings. Every test also fails if
any thread dies with an unreported exception (see ``thread_errors``).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import socket
import threading
import tracemalloc
from typing import Any

import pytest

import stockings
from conftest import FLAVOURS, tcp_pair, wait_until
from faultproxy import Faults, proxied_pair, reset_socket
from stockings import (
    ConnectionClosed,
    EndReason,
    IncompleteMessage,
    MessageTooLarge,
    ProtocolError,
    Stocking,
)

__all__: list[str] = []

# Every test fails if any thread dies with an exception (conftest.thread_errors).
pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("thread_errors")]


def raw_peer(flavour: type[Stocking] = Stocking, **options: Any) -> tuple[Stocking, socket.socket]:
    """A stocking and, connected to it over TCP, a bare socket playing the peer."""
    ours, theirs = tcp_pair()
    return flavour(ours, **options), theirs


def check_ended_cleanly_after_fault(
    stocking: Stocking, reason: EndReason, readable: list[object]
) -> None:
    """The end is recorded, earlier messages stay readable, writing is refused."""
    wait_until(lambda: stocking.ended)
    assert stocking.end_reason is reason
    for expected in readable:
        assert stocking.read() == expected
    assert stocking.read() is None
    assert stocking.read(timeout=None) is None
    with pytest.raises(ConnectionClosed) as info:
        stocking.write("too late")
    assert info.value.reason is reason
    assert not stocking.active


# ------------------------------------------------------------------ bad input

BAD_STREAMS = {
    # 11 header bytes, none marked last: the header never ends.
    "endless header": (b"\x00" * 11, ProtocolError, EndReason.PROTOCOL_ERROR),
    # A stray HTTP client: every byte below 0x80, so it reads as one long header.
    "garbage header": (
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        ProtocolError,
        EndReason.PROTOCOL_ERROR,
    ),
    "invalid utf-8": (b"\x83\xff\xfe\xfd", ProtocolError, EndReason.PROTOCOL_ERROR),
    # 2**40 bytes announced, the docs/wire.md test vector.
    "over the limit": (
        bytes.fromhex("4000000000c0") + b"x" * 1000,
        MessageTooLarge,
        EndReason.MESSAGE_TOO_LARGE,
    ),
}


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("case", sorted(BAD_STREAMS))
def test_bad_stream_ends_at_once_keeping_earlier_messages(
    flavour: type[Stocking], case: str, no_leaks: None
) -> None:
    bad, error_type, reason = BAD_STREAMS[case]
    stocking, peer = raw_peer(flavour)
    with peer:
        # The peer keeps its socket open: the fault alone must end the stocking.
        peer.sendall(stockings.encode("first") + stockings.encode(b"second") + bad)
        wait_until(lambda: stocking.ended)
        assert isinstance(stocking.end_exception, error_type)
        assert type(stocking.end_exception) is not IncompleteMessage
        check_ended_cleanly_after_fault(stocking, reason, ["first", b"second"])
        stocking.close()
    if reason is EndReason.MESSAGE_TOO_LARGE:
        exc = stocking.end_exception
        assert isinstance(exc, MessageTooLarge)
        assert exc.size == 2**40
        assert exc.limit == stockings.DEFAULT_MAX_MESSAGE_SIZE


CUT_STREAMS = {
    "mid header": stockings.encode_header(100_000, False)[:2],
    "mid payload": stockings.encode_header(100, True) + b"a" * 10,
    "right after a header": stockings.encode_header(5, False),
}


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("case", sorted(CUT_STREAMS))
def test_connection_cut_inside_a_message(
    flavour: type[Stocking], case: str, no_leaks: None
) -> None:
    stocking, peer = raw_peer(flavour)
    peer.sendall(stockings.encode("whole") + CUT_STREAMS[case])
    peer.close()
    check_ended_cleanly_after_fault(stocking, EndReason.PROTOCOL_ERROR, ["whole"])
    assert isinstance(stocking.end_exception, IncompleteMessage)
    stocking.close()


def test_announced_length_allocates_nothing_ahead_of_the_data(no_leaks: None) -> None:
    # No limit at all: the decoder must still store only what has arrived.
    stocking, peer = raw_peer(max_message_size=None)
    tracemalloc.start()
    try:
        peer.sendall(bytes.fromhex("4000000000c0") + b"y" * 2**20)
        decoder = stocking._channel.receiver.decoder
        wait_until(lambda: decoder.payload_missing == 2**40 - 2**20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stocking.active
    assert peak < 8 * 2**20, f"{peak} bytes allocated for 1 MiB of payload"
    peer.close()
    check_ended_cleanly_after_fault(stocking, EndReason.PROTOCOL_ERROR, [])
    assert isinstance(stocking.end_exception, IncompleteMessage)
    stocking.close()


def test_over_limit_refused_before_any_payload(no_leaks: None) -> None:
    stocking, peer = raw_peer(max_message_size=1000)
    with peer:
        # Only the header: no payload byte was sent, so the refusal cannot
        # wait for one.
        peer.sendall(stockings.encode(b"ok") + stockings.encode_header(1001, False))
        check_ended_cleanly_after_fault(stocking, EndReason.MESSAGE_TOO_LARGE, [b"ok"])
        stocking.close()


# -------------------------------------------------------------- stream faults

SIZES = [0, 1, 63, 64, 127, 128, 8191, 8192, 8256, 20_000]


def messages_for(sizes: list[int], rng: random.Random) -> list[bytes | str]:
    out: list[bytes | str] = []
    for size in sizes:
        out.append(rng.randbytes(size))
        out.append("é" * (size // 2) + "x" * (size % 2))
    return out


def exchange(left: Stocking, right: Stocking, messages: list[bytes | str]) -> None:
    """Send ``messages`` both ways at once and check both sides got them in order."""
    received: dict[str, list[Any]] = {"left": [], "right": []}

    def pump(name: str, reader: Stocking) -> None:
        for _ in messages:
            received[name].append(reader.read(timeout=20))

    readers = [
        threading.Thread(daemon=True, target=pump, args=("left", left)),
        threading.Thread(daemon=True, target=pump, args=("right", right)),
    ]
    for thread in readers:
        thread.start()
    for message in messages:
        left.write(message)
        right.write(message)
    for thread in readers:
        thread.join(25)
    assert received["left"] == messages
    assert received["right"] == messages


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
def test_stream_trickled_one_byte_at_a_time(flavour: type[Stocking], no_leaks: None) -> None:
    one_byte = Faults(chunk=(1, 1))
    with proxied_pair(one_byte, one_byte) as (client, server, _):
        left, right = flavour(client), flavour(server)
        exchange(left, right, messages_for(SIZES, random.Random(1)))
        left.close()
        wait_until(lambda: right.ended)
        assert right.end_reason is EndReason.PEER_CLOSED
        right.close()


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
def test_random_chunks_with_delays(flavour: type[Stocking], no_leaks: None) -> None:
    rng = random.Random(7)
    sizes = [min(int(rng.expovariate(1 / 2000)), 60_000) for _ in range(150)]
    choppy = Faults(chunk=(1, 3000), delay=(0.0, 0.001))
    with proxied_pair(choppy, choppy, seed=3) as (client, server, _):
        left, right = flavour(client), flavour(server)
        exchange(left, right, messages_for(sizes, rng))
        left.close()
        right.close()
    assert left.end_reason is EndReason.CLOSED


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
def test_reset_mid_message(flavour: type[Stocking], no_leaks: None) -> None:
    first = b"a" * 1000
    second = b"b" * 100_000
    # The proxy resets both connections once 1000 bytes of ``second`` passed.
    after = len(stockings.encode(first)) + 1000
    with proxied_pair(to_client=Faults(after=after, action="reset")) as (client, server, proxy):
        left, right = flavour(client), flavour(server)
        right.write(first)
        assert left.read(timeout=10) == first
        right.write(second)
        assert proxy.acted.wait(10)
        wait_until(lambda: left.ended)
        assert left.end_reason is EndReason.RESET
        assert isinstance(left.end_exception, ConnectionResetError)
        assert left.read() is None  # the partial message was dropped
        # The proxy reset the sender's connection too.
        wait_until(lambda: right.ended)
        assert right.end_reason is EndReason.RESET
        with pytest.raises(ConnectionClosed):
            right.write(b"more")
        left.close()
        right.close()


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
def test_peer_half_close_after_its_last_message(flavour: type[Stocking], no_leaks: None) -> None:
    stocking, peer = raw_peer(flavour)
    with peer:
        peer.sendall(stockings.encode("one") + stockings.encode(b"two"))
        peer.shutdown(socket.SHUT_WR)
        assert stocking.read(timeout=10) == "one"
        assert stocking.read(timeout=10) == b"two"
        # No more can come: a blocking read returns rather than waits.
        assert stocking.read(timeout=None) is None
        wait_until(lambda: stocking.ended)
        assert stocking.end_reason is EndReason.PEER_CLOSED
        assert stocking.end_exception is None
        assert stocking.end_reason.clean
        # Our side's FIN followed.
        peer.settimeout(10)
        assert peer.recv(10) == b""
        stocking.close()


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
def test_replies_queued_before_a_half_close_still_arrive(
    flavour: type[Stocking], no_leaks: None
) -> None:
    ours, peer = tcp_pair()
    # A small send buffer, so that most replies wait in our queue.
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    stocking = flavour(ours, write_high_water=64 * 2**20)
    with peer:
        replies = [os.urandom(256 * 1024) for _ in range(16)]
        for reply in replies:
            stocking.write(reply)
        # The peer has not read: most of the 4 MiB is still queued here.
        assert stocking.queued_bytes > 2 * 2**20
        peer.sendall(stockings.encode("last words"))
        peer.shutdown(socket.SHUT_WR)
        assert stocking.read(timeout=10) == "last words"
        wait_until(lambda: stocking._channel._peer_eof or stocking.ended)
        with pytest.raises(ConnectionClosed) as info:
            stocking.write("no new writes once the peer has gone")
        assert info.value.reason is EndReason.PEER_CLOSED
        decoder = stockings.Decoder(None)
        got: list[object] = []
        peer.settimeout(10)
        while chunk := peer.recv(1 << 20):
            got.extend(decoder.feed(chunk))
        decoder.eof()
        assert got == replies
        wait_until(lambda: stocking.ended)
        assert stocking.end_reason is EndReason.PEER_CLOSED
        stocking.close()


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
def test_socket_closed_under_us(flavour: type[Stocking], no_leaks: None) -> None:
    stocking, peer = raw_peer(flavour)
    # A bystander on the same hub must not suffer for it.
    a, b = socket.socketpair()
    other, other_peer = flavour(a), flavour(b)
    results: list[object] = []
    reader = threading.Thread(
        daemon=True, target=lambda: results.append(stocking.read(timeout=None))
    )
    reader.start()
    wait_until(lambda: stocking._channel.inbox._waiting.count == 1)
    stocking.sock.close()  # the rogue caller
    reader.join(15)
    assert not reader.is_alive(), "read(timeout=None) hung on a socket closed under it"
    assert results == [None]
    wait_until(lambda: stocking.ended)
    assert stocking.end_reason is EndReason.ERROR
    assert isinstance(stocking.end_exception, OSError)
    with pytest.raises(ConnectionClosed):
        stocking.write("x")
    stocking.close()
    other.write("still here")
    assert other_peer.read(timeout=10) == "still here"
    other.close()
    other_peer.close()
    peer.close()


# ---------------------------------------------------------- signals and fork


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer")
# The timer's SIGALRM is the test's own: pytest-timeout watches from a thread here.
@pytest.mark.timeout(30, method="thread")
@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
def test_signals_during_io_lose_nothing(flavour: type[Stocking], no_leaks: None) -> None:
    fired = 0

    def on_alarm(signum: int, frame: object) -> None:
        nonlocal fired
        fired += 1

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
    try:
        a, b = tcp_pair()
        left, right = flavour(a, write_high_water=256 * 1024), flavour(b)
        rng = random.Random(5)
        sent = [rng.randbytes(rng.choice((10, 1000, 100_000))) for _ in range(400)]
        digest = hashlib.sha256()
        writer = threading.Thread(daemon=True, target=lambda: [right.write(m) for m in sent])
        writer.start()
        for _ in sent:
            # The main thread, which takes the signals, blocks here.
            message = left.read(timeout=20)
            assert message is not None, "a message was lost or stuck"
            digest.update(message)
        writer.join(10)
        left.write(b"x" * 5_000_000)  # a large direct send from the signalled thread
        assert len(right.read(timeout=20)) == 5_000_000
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, previous)
    assert digest.digest() == hashlib.sha256(b"".join(sent)).digest()
    assert fired > 10
    left.close()
    right.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
# Forking a process with a hub thread running is the very case under test
# (Python 3.12 and newer warn about it).
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
def test_forked_child_cannot_use_the_parents_stocking(
    flavour: type[Stocking], no_leaks: None
) -> None:
    a, b = tcp_pair()
    ours, theirs = flavour(a), flavour(b)
    theirs.write("before the fork")
    wait_until(lambda: ours.unread_bytes > 0)

    def child() -> int:
        # Each failed check exits with its own code, for the parent to report.
        if ours.read(timeout=None) is not None:
            return 3  # nothing to read: the parent owns the messages
        if ours.end_reason is not EndReason.ERROR or ours.active:
            return 4
        try:
            ours.write("from the child")
        except ConnectionClosed as exc:
            if "forked child" not in str(exc.__cause__):
                return 5
        else:
            return 6
        ours.close()  # a no-op for the parent's connection
        # Fresh stockings made in the child work.
        x, y = socket.socketpair()
        with flavour(x) as left, flavour(y) as right:
            left.write("child's own")
            if right.read(timeout=10) != "child's own":
                return 7
        return 0

    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 99
        try:
            code = child()
        finally:
            os._exit(code)
    status: list[int] = []

    def reaped() -> bool:
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            status.append(code)
        return bool(done)

    wait_until(reaped, timeout=20)
    assert os.waitstatus_to_exitcode(status[0]) == 0
    # The parent's connection is untouched by anything the child did.
    assert ours.read(timeout=5) == "before the fork"
    ours.write("after the fork")
    assert theirs.read(timeout=5) == "after the fork"
    assert ours.active
    ours.close()
    theirs.close()


def test_reset_by_raw_peer_while_idle(no_leaks: None) -> None:
    stocking, peer = raw_peer()
    peer.sendall(stockings.encode("hello"))
    assert stocking.read(timeout=10) == "hello"
    reset_socket(peer)
    check_ended_cleanly_after_fault(stocking, EndReason.RESET, [])
    stocking.close()
