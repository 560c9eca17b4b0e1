"""Flow control both ways, and many writers and many stockings at once.

Outbound: a writer faster than its peer blocks at ``write_high_water`` (or
raises :class:`~stockings.WriteTimeout` after ``write_timeout``), and the
queue never holds much more than the mark. Inbound: a reader that does not
read makes the hub stop reading the socket once ``read_high_water`` is
passed, so TCP pushes back on the sender; nothing is lost once it reads.
"""

from __future__ import annotations

import hashlib
import random
import select
import socket
import threading

import pytest

import stockings
from conftest import FLAVOURS, tcp_pair, wait_until
from stockings import EndReason, Stocking, WriteTimeout

__all__: list[str] = []

# Every test fails if any thread dies with an exception (conftest.thread_errors).
pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("thread_errors")]

KiB = 1024
MiB = 1024 * KiB


def small_buffers(*socks: socket.socket) -> None:
    """Shrink kernel buffers so the library's own queues, not the kernel's, fill up."""
    for sock in socks:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 128 * KiB)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 128 * KiB)


# ------------------------------------------------------------------ outbound


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
def test_write_timeout_when_the_peer_stocking_never_reads(
    flavour: type[Stocking], no_leaks: None
) -> None:
    a, b = tcp_pair()
    small_buffers(a, b)
    high = 256 * KiB
    writer = flavour(a, write_high_water=high, write_timeout=0.2)
    # The peer stocking never reads, and stops reading its socket at its own mark.
    lazy = flavour(b, read_high_water=128 * KiB)
    message = b"m" * (64 * KiB)
    written = 0
    peak = 0
    with pytest.raises(WriteTimeout):
        for _ in range(10_000):
            writer.write(message)
            written += 1
            peak = max(peak, writer.queued_bytes)
    # Bounded: the queue never held more than the mark plus one message.
    assert peak <= high + len(message) + 8
    assert writer.active  # a timed-out write does not end the stocking
    # The message that timed out was not queued: the peer gets exactly the others.
    for _ in range(written):
        assert lazy.read(timeout=10) == message
    assert lazy.read(timeout=0.2) is None
    writer.close()
    lazy.close()


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
def test_raw_peer_that_never_reads(flavour: type[Stocking], no_leaks: None) -> None:
    a, peer = tcp_pair()
    small_buffers(a, peer)
    high = 128 * KiB
    writer = flavour(a, write_high_water=high, write_timeout=0.2)
    message = b"r" * (32 * KiB)
    written = 0
    with pytest.raises(WriteTimeout):
        for _ in range(10_000):
            writer.write(message)
            written += 1
            assert writer.queued_bytes <= high + len(message) + 8
    assert writer.active  # a timed-out write does not end the stocking
    # Now the peer reads everything: exactly the messages that were written.
    writer.write_timeout = None
    decoder = stockings.Decoder()
    got = 0
    with peer:
        peer.settimeout(10)
        while got < written:
            got += len(decoder.feed(peer.recv(MiB)))
        assert got == written
        writer.close()
        assert peer.recv(10) == b""
    assert writer.end_reason is EndReason.CLOSED


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
def test_writer_blocks_at_the_mark_until_the_reader_catches_up(
    flavour: type[Stocking], no_leaks: None
) -> None:
    a, b = tcp_pair()
    small_buffers(a, b)
    high = 128 * KiB
    writer = flavour(a, write_high_water=high)
    reader = flavour(b, read_high_water=64 * KiB)
    count = 200
    message = b"w" * (16 * KiB)
    progress = [0]
    peak = [0]

    def produce() -> None:
        for _ in range(count):
            writer.write(message)
            progress[0] += 1
            peak[0] = max(peak[0], writer.queued_bytes)

    thread = threading.Thread(daemon=True, target=produce)
    thread.start()
    # The producer gets stuck well before the end: nobody reads.
    wait_until(lambda: writer._channel.outbox._flow.waiters == 1)
    stuck_at = progress[0]
    assert thread.is_alive()
    assert stuck_at < count
    for _ in range(count):
        assert reader.read(timeout=10) == message
    thread.join(10)
    assert progress[0] == count
    assert peak[0] <= high + len(message) + 8
    writer.close()
    reader.close()


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("how", ["abort", "close"])
def test_a_writer_blocked_at_the_mark_is_told_how_the_stocking_ended(
    flavour: type[Stocking], how: str, no_leaks: None
) -> None:
    a, b = tcp_pair()
    small_buffers(a, b)
    writer = flavour(a, write_high_water=64 * KiB)
    reader = flavour(b, read_high_water=64 * KiB)
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            while True:
                writer.write(b"w" * (16 * KiB))
        except stockings.ConnectionClosed as exc:
            errors.append(exc)

    thread = threading.Thread(daemon=True, target=produce)
    thread.start()
    wait_until(lambda: writer._channel.outbox._flow.waiters == 1)
    if how == "abort":
        writer.abort()
    else:
        writer.close(timeout=0.5)
    thread.join(10)
    assert not thread.is_alive()
    [error] = errors
    assert isinstance(error, stockings.ConnectionClosed)
    if how == "abort":
        # An abort drops data: a writer checking ``reason.clean`` must see so.
        assert error.reason is EndReason.ABORTED
        assert not error.reason.clean
    else:
        # Closing (or its flush timing out) ends it too, and says so.
        assert error.reason in (EndReason.CLOSED, EndReason.TIMEOUT)
    reader.close()


# ------------------------------------------------------------------- inbound


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
def test_unread_messages_push_back_on_a_fast_sender(
    flavour: type[Stocking], no_leaks: None
) -> None:
    ours, sender = tcp_pair()
    high = MiB
    stocking = flavour(ours, read_high_water=high)
    message = stockings.encode(b"i" * (16 * KiB))
    limit = 64 * MiB  # a stocking without inbound flow control would take it all
    sent = 0
    sender.setblocking(False)
    with sender:
        while sent < limit:
            try:
                sent += sender.send(message[sent % len(message) :])
            except BlockingIOError:
                # TCP pushback: wait a while for room; none means the reader stopped.
                _, writable, _ = select.select([], [sender], [], 0.5)
                if not writable:
                    break
        assert sent < limit, "the sender never blocked: nothing pushed back"
        # Our process holds at most the mark plus what one receive can bring.
        assert stocking.unread_bytes <= high + 256 * KiB + len(message)
        assert not stocking._channel._reading
        # Once the reader reads, everything arrives, in full.
        whole = sent // len(message)
        remainder = sent % len(message)
        finisher = None
        if remainder:
            # The rest of the cut message goes out while we read: the kernel
            # buffers are full, so a blocking send here would wait on us.
            sender.setblocking(True)
            finisher = threading.Thread(
                target=sender.sendall, args=(message[remainder:],), daemon=True
            )
            finisher.start()
            whole += 1
        for _ in range(whole):
            assert stocking.read(timeout=10) == b"i" * (16 * KiB)
        if finisher is not None:
            finisher.join(10)
            assert not finisher.is_alive()
    wait_until(lambda: stocking.ended)
    assert stocking.end_reason is EndReason.PEER_CLOSED
    stocking.close()


# --------------------------------------------------------------- concurrency


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
def test_sixteen_threads_write_to_one_stocking(flavour: type[Stocking], no_leaks: None) -> None:
    a, b = tcp_pair()
    writer = flavour(a, write_high_water=256 * KiB)
    reader = flavour(b)
    threads = 16
    per_thread = 300
    rng = random.Random(16)
    sizes = [rng.choice((0, 10, 100, 5000, 70_000)) for _ in range(per_thread)]
    start = threading.Barrier(threads)

    def produce(tid: int) -> None:
        start.wait()
        for n, size in enumerate(sizes):
            body = f"{tid}:{n}:".encode() + bytes([tid]) * size
            # Text and bytes alternate, so both paths interleave with each other.
            writer.write(body if n % 2 else body.decode("latin-1"))

    workers = [threading.Thread(daemon=True, target=produce, args=(tid,)) for tid in range(threads)]
    for worker in workers:
        worker.start()
    next_n = [0] * threads
    for _ in range(threads * per_thread):
        message = reader.read(timeout=20)
        assert message is not None
        raw = message.encode("latin-1") if isinstance(message, str) else message
        tid_text, n_text, body = raw.split(b":", 2)
        tid, n = int(tid_text), int(n_text)
        # Whole and in each thread's own order: no interleaving, nothing lost.
        assert n == next_n[tid]
        assert isinstance(message, bytes) == bool(n % 2)
        assert body == bytes([tid]) * sizes[n]
        next_n[tid] += 1
    for worker in workers:
        worker.join(10)
    assert next_n == [per_thread] * threads
    writer.close()
    reader.close()


def test_sixteen_stockings_at_once(no_leaks: None) -> None:
    pairs = []
    for index in range(16):
        kind = FLAVOURS[index % len(FLAVOURS)]
        a, b = tcp_pair() if index % 2 else socket.socketpair()
        pairs.append((kind(a), kind(b)))
    rng = random.Random(99)
    messages = [rng.randbytes(rng.choice((0, 50, 3000, 100_000))) for _ in range(150)]
    expected = hashlib.sha256(b"".join(messages)).hexdigest()
    digests: dict[tuple[int, str], str] = {}

    def send(stocking: Stocking) -> None:
        for message in messages:
            stocking.write(message)

    def receive(key: tuple[int, str], stocking: Stocking) -> None:
        digest = hashlib.sha256()
        for _ in messages:
            message = stocking.read(timeout=30)
            if message is None:
                return
            digest.update(message)
        digests[key] = digest.hexdigest()

    workers = []
    for index, (left, right) in enumerate(pairs):
        workers += [
            threading.Thread(daemon=True, target=send, args=(left,)),
            threading.Thread(daemon=True, target=send, args=(right,)),
            threading.Thread(daemon=True, target=receive, args=((index, "right"), right)),
            threading.Thread(daemon=True, target=receive, args=((index, "left"), left)),
        ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(40)
    assert len(digests) == 32
    assert set(digests.values()) == {expected}
    for left, right in pairs:
        left.close()
        wait_until(lambda r=right: r.ended)  # type: ignore[misc]
        assert right.end_reason is EndReason.PEER_CLOSED
        right.close()
