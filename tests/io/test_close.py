"""Close semantics: nothing lost on close(), abort() drops, end reasons on both sides.

Also: close() from another thread while a read and a write block, the idle
timeout, and TCP keepalive.
"""

from __future__ import annotations

import hashlib
import socket
import threading

import pytest

import stockings
from conftest import FLAVOURS, tcp_pair, wait_until
from stockings import ConnectionClosed, EndReason, Stocking, WriteTimeout

__all__: list[str] = []

# Every test fails if any thread dies with an exception (conftest.thread_errors).
pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("thread_errors")]

KiB = 1024
MiB = 1024 * KiB


def in_thread(target: object) -> tuple[threading.Thread, list[object]]:
    """Run ``target()`` in a thread; the list gets its result or the exception it raised."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(target())  # type: ignore[operator]
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(daemon=True, target=run)
    thread.start()
    return thread, outcome


# ------------------------------------------------------------ close and abort


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
def test_close_flushes_everything_written_before_it(
    flavour: type[Stocking], no_leaks: None
) -> None:
    a, b = tcp_pair()
    sender = flavour(a, write_high_water=64 * MiB)
    receiver = flavour(b)
    chunks = [bytes([n]) * MiB for n in range(50)]

    def drain() -> tuple[int, bytes]:
        digest = hashlib.sha256()
        count = 0
        for message in receiver:  # ends quietly after a clean end
            digest.update(message)
            count += 1
        return count, digest.digest()

    reader, outcome = in_thread(drain)
    for chunk in chunks:
        sender.write(chunk)
    assert sender.queued_bytes > 0  # much of the 50 MB is still queued here
    sender.close(timeout=30)  # at once
    assert sender.end_reason is EndReason.CLOSED
    assert sender.end_exception is None
    reader.join(30)
    assert outcome == [(50, hashlib.sha256(b"".join(chunks)).digest())]
    assert receiver.end_reason is EndReason.PEER_CLOSED
    receiver.close()


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
def test_abort_drops_what_is_queued_and_resets(flavour: type[Stocking], no_leaks: None) -> None:
    a, b = tcp_pair()
    sender = flavour(a, write_high_water=64 * MiB)
    receiver = flavour(b, read_high_water=MiB)
    for n in range(50):
        sender.write(bytes([n]) * MiB)
    sender.abort()
    assert sender.end_reason is EndReason.ABORTED
    with pytest.raises(ConnectionClosed) as info:
        sender.write("x")
    assert info.value.reason is EndReason.ABORTED
    got = 0
    while receiver.read(timeout=10) is not None:
        got += 1
    assert got < 50
    # A reset, never a clean close: the receiver knows the stream was cut short.
    assert receiver.end_reason is EndReason.RESET
    with pytest.raises(ConnectionClosed):
        list(receiver)
    receiver.close()


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
def test_close_times_out_when_the_peer_never_reads(flavour: type[Stocking], no_leaks: None) -> None:
    ours, peer = tcp_pair()
    stocking = flavour(ours, write_high_water=64 * MiB)
    with peer:
        stocking.write(b"z" * (16 * MiB))
        stocking.close(timeout=0.3)
        assert stocking.end_reason is EndReason.TIMEOUT
        assert isinstance(stocking.end_exception, WriteTimeout)
        assert not stocking.end_reason.clean


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
def test_end_reasons_on_both_sides(flavour: type[Stocking], no_leaks: None) -> None:
    # Local close: CLOSED here, PEER_CLOSED there; received messages stay readable.
    a, b = tcp_pair()
    left, right = flavour(a), flavour(b)
    right.write("unread")
    wait_until(lambda: left.unread_bytes > 0)
    left.close()
    wait_until(lambda: right.ended)
    assert (left.end_reason, right.end_reason) == (EndReason.CLOSED, EndReason.PEER_CLOSED)
    assert left.read() == "unread"
    assert left.read() is None
    right.close()
    assert right.end_reason is EndReason.PEER_CLOSED  # close() after the end changes nothing

    # Close on both sides at once: each side's own close wins for itself.
    a, b = tcp_pair()
    left, right = flavour(a), flavour(b)
    thread, _ = in_thread(left.close)
    right.close()
    thread.join(10)
    assert left.end_reason in (EndReason.CLOSED, EndReason.PEER_CLOSED)
    assert right.end_reason in (EndReason.CLOSED, EndReason.PEER_CLOSED)


def test_close_is_idempotent_and_context_managed(no_leaks: None) -> None:
    a, b = socket.socketpair()
    with Stocking(a) as left, Stocking(b) as right:
        left.write("bye")
        for _ in range(3):
            left.close()
            left.abort()
        assert left.end_reason is EndReason.CLOSED
        assert right.read(timeout=5) == "bye"
        wait_until(lambda: right.ended)
    assert right.end_reason is EndReason.PEER_CLOSED


# ------------------------------------------------- close while others block


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
def test_close_from_another_thread_wakes_a_blocked_read_and_write(
    flavour: type[Stocking], no_leaks: None
) -> None:
    ours, peer = tcp_pair()  # the peer never reads nor writes
    stocking = flavour(ours, write_high_water=256 * KiB)
    with peer:
        reader, read_outcome = in_thread(lambda: stocking.read(timeout=None))

        def write_until_blocked() -> None:
            while True:
                stocking.write(b"b" * (64 * KiB))

        writer, write_outcome = in_thread(write_until_blocked)
        channel = stocking._channel
        wait_until(lambda: channel.outbox._flow.waiters == 1)
        wait_until(lambda: channel.inbox._waiting.count == 1)
        # close() itself cannot flush to a peer that never reads: it times out,
        # but the blocked calls must not wait for that.
        closer, _ = in_thread(lambda: stocking.close(timeout=20))
        reader.join(5)
        writer.join(5)
        assert not reader.is_alive() and not writer.is_alive()
        assert read_outcome == [None]
        assert len(write_outcome) == 1
        assert isinstance(write_outcome[0], ConnectionClosed)
        stocking.abort()  # no need to wait out the flush
        closer.join(10)
        assert not closer.is_alive()
    assert stocking.end_reason is EndReason.ABORTED


# ------------------------------------------------------ idle and keepalive


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
def test_idle_timeout_ends_a_silent_peer(flavour: type[Stocking], no_leaks: None) -> None:
    ours, peer = tcp_pair()
    stocking = flavour(ours, idle_timeout=0.2)
    with peer:
        peer.sendall(stockings.encode("one, then silence"))
        assert stocking.read(timeout=None) == "one, then silence"
        # The silent peer: a blocked read returns once the idle timeout ends it.
        assert stocking.read(timeout=None) is None
        assert stocking.end_reason is EndReason.TIMEOUT
        assert isinstance(stocking.end_exception, TimeoutError)
        with pytest.raises(ConnectionClosed):
            stocking.write("too late")
    stocking.close()


class IdleWitness:
    """A stocking whose peer never speaks: it times out once ``idle_timeout`` has passed.

    Made on the same hub as the stocking under test, its end by
    ``EndReason.TIMEOUT`` proves that the hub's clock has run through that
    long, without the test guessing how long its own thread sleeps.
    """

    def __init__(self, idle_timeout: float) -> None:
        ours, self._peer = tcp_pair()
        self._stocking = Stocking(ours, idle_timeout=idle_timeout)

    @property
    def timed_out(self) -> bool:
        return self._stocking.end_reason is EndReason.TIMEOUT

    def close(self) -> None:
        self._stocking.close()
        self._peer.close()


def test_idle_timeout_spares_a_peer_that_talks(no_leaks: None) -> None:
    ours, peer = tcp_pair()
    stocking = Stocking(ours, idle_timeout=1.0)
    # Made after the stocking, with three of its idle periods: once it has
    # timed out, a stocking whose timer the messages did not restart would
    # have timed out before it.
    witness = IdleWitness(3.0)
    try:
        n = 0
        while not witness.timed_out:
            peer.sendall(stockings.encode(str(n)))
            assert stocking.read(timeout=5) == str(n)
            n += 1
        assert stocking.active
        # Closed here before the peer closes: its end of stream must not
        # win the race and end the stocking as PEER_CLOSED first.
        stocking.close()
        assert stocking.end_reason is EndReason.CLOSED
    finally:
        witness.close()
        stocking.close()
        peer.close()


def test_idle_timeout_spares_a_peer_pushed_back_by_flow_control(no_leaks: None) -> None:
    ours, peer = tcp_pair()
    stocking = Stocking(ours, idle_timeout=0.2, read_high_water=64 * KiB)
    message = stockings.encode(b"p" * (16 * KiB))
    count = 200
    with peer:
        sender, _ = in_thread(lambda: peer.sendall(message * count))
        # The peer is silent only because we stopped reading: not its fault.
        wait_until(lambda: not stocking._channel._reading)
        # Five idle periods of pause, as the hub's clock counts them.
        witness = IdleWitness(1.0)
        try:
            wait_until(lambda: witness.timed_out)
        finally:
            witness.close()
        assert stocking.active
        for _ in range(count):
            assert stocking.read(timeout=10) == b"p" * (16 * KiB)
        sender.join(10)
    stocking.close()


@pytest.mark.skipif(not hasattr(socket, "TCP_KEEPIDLE"), reason="needs TCP_KEEPIDLE")
def test_keepalive_options(no_leaks: None) -> None:
    pairs = [tcp_pair() for _ in range(3)]
    plain = Stocking(pairs[0][0])
    system = Stocking(pairs[1][0], keepalive=True)
    tuned = Stocking(pairs[2][0], keepalive=30)
    try:
        assert plain.sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
        assert system.sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
        assert tuned.sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
        assert tuned.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
        assert tuned.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 10
        assert tuned.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            # Unacknowledged data is given up on as fast as silence: 30 + 3 x 10 s.
            assert tuned.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 60_000
            assert plain.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 0
    finally:
        for stocking in (plain, system, tuned):
            stocking.close()
        for _, other in pairs:
            other.close()
    with pytest.raises(ValueError):
        Stocking(socket.socketpair()[0], idle_timeout=0)


def test_bad_keepalive_is_refused() -> None:
    a, b = tcp_pair()
    with a, b, pytest.raises(ValueError):
        Stocking(a, keepalive=-1)
