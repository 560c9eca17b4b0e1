"""The fast paths of write and read: batching, the writer's flush, the lock-free read."""

from __future__ import annotations

import gc
import select
import socket
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import stockings
from conftest import wait_until
from stockings import _outbox, _sender

Pair = tuple[socket.socket, socket.socket]


@pytest.fixture
def bursty(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make every write after the first count as part of a burst (queued, batched)."""
    monkeypatch.setattr(_outbox, "BURST_GAP", 3600.0)
    yield


def _messages() -> list[Any]:
    big = bytes(range(256)) * 400  # 100 KiB: sent beside its header, not copied
    return [
        b"",
        b"a",
        "text \u00e9",
        b"x" * 63,
        b"y" * 64,
        b"z" * 1023,
        b"w" * 1024,
        bytearray(b"mutable"),
        memoryview(b"view"),
        big,
        "",
        b"q" * 5000,
    ]


def _expected(message: Any) -> Any:
    if isinstance(message, str):
        return message
    return bytes(message)


@pytest.mark.timeout(30)
def test_a_burst_of_mixed_messages_arrives_whole_and_in_order(
    make_pair: Callable[[], Pair], bursty: None, no_leaks: None
) -> None:
    a, b = make_pair()
    with stockings.Stocking(a) as left, stockings.Stocking(b) as right:
        sent = _messages() * 50
        for message in sent:
            left.write(message)
        for message in sent:
            assert right.read(timeout=10) == _expected(message)


@pytest.mark.timeout(30)
def test_a_buffer_changed_after_write_is_sent_as_it_was(
    make_pair: Callable[[], Pair], bursty: None, no_leaks: None
) -> None:
    a, b = make_pair()
    with stockings.Stocking(a) as left, stockings.Stocking(b) as right:
        left.write(b"first")  # direct: the next writes join a queued batch
        small, large = bytearray(b"s" * 10), bytearray(b"L" * 100_000)
        left.write(small)
        left.write(large)
        small[:] = b"!" * 10
        large[:] = b"!" * 100_000
        assert right.read(timeout=10) == b"first"
        assert right.read(timeout=10) == b"s" * 10
        assert right.read(timeout=10) == b"L" * 100_000


@pytest.mark.timeout(30)
def test_the_tail_of_a_burst_is_flushed_without_further_writes(
    make_pair: Callable[[], Pair], bursty: None, no_leaks: None
) -> None:
    a, b = make_pair()
    with stockings.Stocking(a) as left, stockings.Stocking(b) as right:
        for i in range(10):
            left.write(b"%d" % i)
        # Far below the writer's flush size: only the hub can have sent these.
        assert [right.read(timeout=10) for _ in range(10)] == [b"%d" % i for i in range(10)]
        wait_until(lambda: left.queued_bytes == 0)


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch, bursty: None) -> Iterator[None]:
    """Bursts, as ``bursty`` makes them, whose hold does not run out within a test."""
    monkeypatch.setattr(_sender, "BURST_HOLD", 3600.0)
    yield


@pytest.mark.timeout(30)
def test_a_burst_wakes_the_hub_once_not_every_few_writes(
    monkeypatch: pytest.MonkeyPatch, make_pair: Callable[[], Pair], held: None, no_leaks: None
) -> None:
    a, b = make_pair()
    with stockings.Stocking(a) as left, stockings.Stocking(b) as right:
        hub = left._channel.hub
        writer = threading.get_ident()
        from_writer: list[object] = []
        original = hub.call_soon

        def counted(callback: Callable[[], None]) -> None:
            if threading.get_ident() == writer:
                from_writer.append(callback)
            original(callback)

        monkeypatch.setattr(hub, "call_soon", counted)
        left.write(b"first")  # sent at once; the rest is one burst

        def hub_caught_up() -> None:
            # The hub runs what was posted so far: a flush asked for now has run.
            done = threading.Event()
            original(done.set)
            assert done.wait(10)

        # About 100 KiB: more than the writer's flush size, less than the
        # kernel takes, so that no send leaves bytes behind for the hub.
        for _ in range(100):
            left.write(b"m" * 1000)
            hub_caught_up()
        # The writer sent its full batch itself; the hub was asked once,
        # for whatever the burst leaves at its end, not each time it had
        # sent what was queued.
        assert len(from_writer) <= 1, f"{len(from_writer)} posts to the hub for one burst"
        monkeypatch.undo()
        left.close()
        assert right.read(timeout=10) == b"first"
        for _ in range(100):
            assert right.read(timeout=10) == b"m" * 1000


@pytest.mark.timeout(30)
def test_a_read_that_waits_sends_the_held_burst_first(
    make_pair: Callable[[], Pair], held: None, no_leaks: None
) -> None:
    a, b = make_pair()
    with stockings.Stocking(a) as left, stockings.Stocking(b) as right:
        # Registered: the hub's first flush, at registration, is behind us.
        wait_until(lambda: left._channel.interest.events)
        left.write(b"request, part 1")  # sent at once
        left.write(b"request, part 2")  # held: the hold outlasts the test
        assert right.read(timeout=10) == b"request, part 1"
        assert right.read(timeout=0.3) is None
        # Waiting for the answer must not leave the request's end behind.
        assert left.read(timeout=0.01) is None
        assert right.read(timeout=10) == b"request, part 2"


def _flushes_asked_of_the_hub(
    monkeypatch: pytest.MonkeyPatch, stocking: stockings.Stocking
) -> list[str]:
    """The flushes of ``stocking``'s queue posted to its hub from now on, at once or later."""
    hub = stocking._channel.hub
    sender = stocking._channel.outbox._sender
    flushes: list[str] = []

    def counting(post: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any) -> Any:
            callback = args[-1]
            if getattr(callback, "__self__", None) is sender:
                flushes.append(callback.__name__)
            return post(*args)

        return counted

    monkeypatch.setattr(hub, "call_soon", counting(hub.call_soon))
    monkeypatch.setattr(hub, "call_later", counting(hub.call_later))
    return flushes


@pytest.mark.timeout(30)
def test_a_burst_of_large_payloads_is_sent_by_the_writer_not_the_hub(
    monkeypatch: pytest.MonkeyPatch, make_pair: Callable[[], Pair], bursty: None, no_leaks: None
) -> None:
    a, b = make_pair()
    with stockings.Stocking(a) as left, stockings.Stocking(b) as right:
        flushes = _flushes_asked_of_the_hub(monkeypatch, left)
        large = bytes(range(256)) * 257  # each slice below a large payload, 64 KiB or more
        for i in range(5):
            # Each one read before the next, so the kernel takes it whole:
            # nothing is left for the hub to finish.
            left.write(large[i:])
            assert right.read(timeout=10) == large[i:]
        # Each was one sendmsg of the writer's: waking the hub to send a
        # payload costs both threads a switch of the GIL, more than the send.
        assert not flushes, f"the hub was asked to flush {flushes} for 5 large writes"
        monkeypatch.undo()


@pytest.mark.timeout(30)
def test_a_message_sent_alone_that_the_kernel_takes_in_part_arrives_whole(
    no_leaks: None,
) -> None:
    a, b = socket.socketpair()
    # A send buffer far smaller than the message: the first send takes a part.
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with stockings.Stocking(a) as left, stockings.Stocking(b, read_high_water=1) as right:
        alone = bytes(range(256)) * 200  # 50 KiB, under a large payload: one buffer
        left.write(alone)
        rest = left.queued_bytes
        framed = len(stockings.encode(alone))
        assert 0 < rest < framed, f"the kernel took {framed - rest} of {framed} bytes"
        assert left.bytes_sent == framed - rest
        # Later writes queue behind the rest, in order.
        left.write(b"after")
        left.write_many([b"and", "then"])
        assert right.read(timeout=10) == alone
        assert [right.read(timeout=10) for _ in range(3)] == [b"after", b"and", "then"]
        wait_until(lambda: left.queued_bytes == 0)
        assert left.bytes_sent == framed + sum(
            len(stockings.encode(m)) for m in (b"after", b"and", "then")
        )


@pytest.mark.timeout(30)
def test_close_sends_the_held_burst(
    make_pair: Callable[[], Pair], held: None, no_leaks: None
) -> None:
    a, b = make_pair()
    with stockings.Stocking(a) as left, stockings.Stocking(b) as right:
        for i in range(3):
            left.write(b"%d" % i)
        left.close()
        assert [right.read(timeout=10) for _ in range(3)] == [b"0", b"1", b"2"]
        assert right.read(timeout=10) is None


@pytest.fixture
def writer_flushes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The bytes queued at each send a writer's thread makes of a full batch."""
    flushes: list[int] = []
    original = _outbox.Outbox._flush_by_writer

    def counting(self: _outbox.Outbox) -> None:
        flushes.append(self.queued_bytes)
        original(self)

    monkeypatch.setattr(_outbox.Outbox, "_flush_by_writer", counting)
    return flushes


@pytest.mark.timeout(30)
def test_the_writer_flushes_a_full_batch_itself(
    writer_flushes: list[int], bursty: None, no_leaks: None
) -> None:
    flushes = writer_flushes
    a, b = socket.socketpair()
    with stockings.Stocking(a) as left, stockings.Stocking(b) as right:
        for _ in range(2000):
            left.write(b"m" * 100)
        assert flushes, "a burst larger than WRITER_FLUSH_SIZE never flushed from the writer"
        assert min(flushes) >= _outbox.WRITER_FLUSH_SIZE
        for _ in range(2000):
            assert right.read(timeout=10) == b"m" * 100


@pytest.mark.timeout(30)
def test_a_writer_facing_a_full_kernel_tries_again_per_step_not_per_write(
    writer_flushes: list[int], bursty: None, no_leaks: None
) -> None:
    # Once the kernel is full, the hub waits for room; each write that
    # tried a send itself anyway cost a failed system call, and a writer
    # faster than its reader made thousands of them.
    tries = writer_flushes
    a, b = socket.socketpair()
    count, size = 3000, 1000
    # The reader stops reading at 64 KiB unread, so the kernel fills up.
    with stockings.Stocking(a) as left, stockings.Stocking(b, read_high_water=65536) as right:
        for _ in range(count):
            left.write(b"m" * size)
        steps = count * size // _sender.WRITER_RETRY_STEP
        assert left.queued_bytes > 0, "the kernel took it all: nothing was tested"
        assert len(tries) <= steps + 2, f"{len(tries)} sends tried for {steps} steps"
        for _ in range(count):
            assert right.read(timeout=10) == b"m" * size


@pytest.mark.timeout(60)
def test_many_writer_threads_never_interleave_or_lose_messages(bursty: None) -> None:
    a, b = socket.socketpair()
    threads_n, per_thread = 8, 2000
    with stockings.Stocking(a) as left, stockings.Stocking(b) as right:

        def writer(t: int) -> None:
            for i in range(per_thread):
                left.write(b"%d:%d:" % (t, i) + b"p" * (i % 200))

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(threads_n)]
        for thread in threads:
            thread.start()
        last = [-1] * threads_n
        for _ in range(threads_n * per_thread):
            message = right.read(timeout=10)
            assert message is not None
            t, i, padding = message.split(b":")
            assert int(i) == last[int(t)] + 1
            assert padding == b"p" * (int(i) % 200)
            last[int(t)] = int(i)
        for thread in threads:
            thread.join(10)
        assert last == [per_thread - 1] * threads_n


def test_unread_bytes_counts_exactly(no_leaks: None) -> None:
    a, b = socket.socketpair()
    with stockings.Stocking(a) as left, stockings.Stocking(b) as right:
        left.write(b"12345")
        left.write("abc")
        left.write(b"")
        wait_until(lambda: right.unread_bytes == 8)
        assert right.read(timeout=5) == b"12345"
        assert right.unread_bytes == 3
        assert right.read(timeout=5) == "abc"
        assert right.read(timeout=5) == b""
        assert right.unread_bytes == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("readers", [1, 4])
def test_racing_readers_drain_a_paused_stocking(readers: int, no_leaks: None) -> None:
    # A small inbound mark makes reading pause and resume over and over, the
    # resume decided by lock-free reads racing each other.
    a, b = socket.socketpair()
    total, size = 4000, 1000
    got: list[int] = []
    lock = threading.Lock()
    with stockings.Stocking(a) as left, stockings.Stocking(b, read_high_water=16 * 1024) as right:

        def reader() -> None:
            mine = 0
            while True:
                message = right.read(timeout=10)
                if message is None or message == b"end":
                    break
                assert len(message) == size
                mine += 1
            with lock:
                got.append(mine)

        threads = [threading.Thread(target=reader) for _ in range(readers)]
        for thread in threads:
            thread.start()
        for _ in range(total):
            left.write(b"r" * size)
        for _ in range(readers):
            left.write(b"end")
        for thread in threads:
            thread.join(30)
            assert not thread.is_alive(), "a reader hung: reading never resumed"
    assert sum(got) == total


def test_fileno_readiness_follows_the_inbox_after_reads(no_leaks: None) -> None:
    a, b = socket.socketpair()
    with stockings.Stocking(a) as left, stockings.Stocking(b) as right:
        fd = right.fileno()
        left.write(b"one")
        left.write(b"two")
        assert select.select([fd], [], [], 10)[0] == [fd]
        assert right.read(timeout=5) == b"one"
        wait_until(lambda: right.unread_bytes == 3)
        assert select.select([fd], [], [], 0)[0] == [fd]
        assert right.read(timeout=5) == b"two"
        assert select.select([fd], [], [], 0)[0] == []


def test_overridden_hooks_are_still_called(no_leaks: None) -> None:
    class Framed(stockings.Stocking):
        def preWrite(self, user: str, status: str = "OK") -> str:
            return f"{user}:{status}"

        def post_read(self, message: Any) -> Any:
            return tuple(message.split(":"))

    a, b = socket.socketpair()
    with Framed(a) as left, Framed(b) as right:
        left.write("ann", status="ERROR")
        assert right.read(timeout=5) == ("ann", "ERROR")


# ------------------------------------------------- large payloads, assembled


def _pattern(size: int, seed: int) -> bytes:
    return bytes((seed + i) % 251 for i in range(256)) * (size // 256) + bytes(size % 256)


@pytest.mark.timeout(60)
def test_large_payloads_arrive_intact_each_in_a_buffer_of_its_own(
    make_pair: Callable[[], Pair], no_leaks: None
) -> None:
    a, b = make_pair()
    sizes = [2**20, 200_000, 2**20, 70_000, 65_536, 2**20 + 1, 300_000, "text"]
    with stockings.Stocking(a) as left, stockings.Stocking(b) as right:
        sent: list[Any] = []
        for round_ in range(3):
            for seed, size in enumerate(sizes):
                if size == "text":
                    message: Any = "\u00e9t\u00e9" * 40_000  # a large str: decoded, not assembled
                else:
                    assert isinstance(size, int)
                    message = _pattern(size, seed + round_)
                sent.append(message)

        # More than both high-water marks: the writes must run beside the reads.
        def write_all() -> None:
            for message in sent:
                left.write(message)

        writer = threading.Thread(target=write_all)
        writer.start()
        got = [right.read(timeout=10) for _ in sent]
        writer.join(10)
        # Compared only now: an early message must not change as later ones
        # are received.
        for message, received in zip(sent, got, strict=True):
            assert type(received) is type(message)
            assert received == message
        # And none is left half assembled (what stays behind once they are
        # read: the next test).
        assert right._channel.receiver.assembly is None


@pytest.mark.timeout(60)
def test_a_connection_keeps_no_memory_for_large_payloads_once_they_are_read(
    no_leaks: None,
) -> None:
    # A Unix socket pair: every large payload is assembled (none is received
    # whole), so a buffer kept for the next one would show here.
    size = 3 * 1024 * 1024
    ours, theirs = socket.socketpair()
    with stockings.Stocking(ours) as left, stockings.Stocking(theirs) as right:
        left.write(b"warm-up")
        assert right.read(timeout=10) == b"warm-up"
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            for seed in range(3):
                left.write(_pattern(size, seed))
                payload = right.read(timeout=10)
                assert payload == _pattern(size, seed)
                del payload
            gc.collect()
            after, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # The payloads did pass through (written, received, compared)...
        assert peak - before > 2 * size
        # ...and nothing of their size stayed behind.
        assert after - before < size // 2


@pytest.mark.parametrize("half_close", [False, True])
def test_a_stream_cut_inside_an_assembled_payload_is_incomplete(
    half_close: bool, no_leaks: None
) -> None:
    # Half-closed or not, the end of the stream inside a payload is a fault.
    ours, peer = socket.socketpair()
    stocking = stockings.Stocking(ours, half_close=half_close)
    with peer:
        peer.sendall(stockings.encode(b"before") + stockings.encode_header(2**20, False))
        peer.sendall(b"z" * 300_000)
        assert stocking.read(timeout=10) == b"before"
        wait_until(lambda: stocking._channel.receiver.assembly is not None)
    wait_until(lambda: stocking.ended)
    assert stocking.end_reason is stockings.EndReason.PROTOCOL_ERROR
    assert isinstance(stocking.end_exception, stockings.IncompleteMessage)
    assert stocking.read() is None
    stocking.close()


def test_the_decoder_hands_a_payload_over() -> None:
    decoder = stockings.Decoder()
    assert decoder.feed(stockings.encode(b"a") + stockings.encode_header(10, False) + b"0123") == [
        b"a"
    ]
    assert decoder.payload_missing == 6
    assert decoder.payload_received == 4
    assert not decoder.payload_is_text
    pieces, missing, is_text = decoder.detach_payload()
    assert (b"".join(pieces), missing, is_text) == (b"0123", 6, False)
    assert not decoder.in_progress
    assert decoder.payload_missing == decoder.payload_received == 0
    # The caller took the next six bytes; the decoder reads what follows.
    assert decoder.feed(stockings.encode("next")) == ["next"]
    with pytest.raises(RuntimeError):
        decoder.detach_payload()


# ------------------------------------------------------------- batch calls


@pytest.mark.timeout(30)
def test_write_many_and_read_all_keep_order_and_types(
    make_pair: Callable[[], Pair], no_leaks: None
) -> None:
    a, b = make_pair()
    with stockings.Stocking(a) as left, stockings.Stocking(b) as right:
        assert right.read_all() == []
        sent = _messages() * 20
        left.write_many(sent)
        left.write_many([])
        got: list[Any] = []
        while len(got) < len(sent):
            batch = right.read_all(timeout=10)
            assert batch, "read_all(timeout=10) returned nothing"
            got += batch
        assert got == [_expected(message) for message in sent]


def test_write_many_is_all_or_nothing(no_leaks: None) -> None:
    a, b = socket.socketpair()
    with stockings.Stocking(a, max_message_size=5) as left, stockings.Stocking(b) as right:
        with pytest.raises(TypeError):
            left.write_many([b"ok", 42])
        with pytest.raises(stockings.MessageTooLarge):
            left.write_many([b"ok", b"too long"])
        left.write(b"after")
        assert right.read(timeout=10) == b"after"
        assert right.read_all() == []


@pytest.mark.timeout(60)
def test_batches_from_many_threads_stay_whole(no_leaks: None) -> None:
    a, b = socket.socketpair()
    threads_n, batches, per_batch = 4, 200, 50
    with stockings.Stocking(a) as left, stockings.Stocking(b) as right:

        def writer(t: int) -> None:
            for n in range(batches):
                left.write_many([b"%d:%d:%d" % (t, n, i) for i in range(per_batch)])

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(threads_n)]
        for thread in threads:
            thread.start()
        got: list[bytes] = []
        while len(got) < threads_n * batches * per_batch:
            batch = right.read_all(timeout=10)
            assert batch
            got += batch
        for thread in threads:
            thread.join(10)
    # Each batch arrives as one run of consecutive messages.
    for start in range(0, len(got), per_batch):
        run = [message.split(b":") for message in got[start : start + per_batch]]
        assert {(t, n) for t, n, _ in run} == {(run[0][0], run[0][1])}
        assert [int(i) for _, _, i in run] == list(range(per_batch))


def test_batch_calls_go_through_the_hooks(no_leaks: None) -> None:
    class Tagged(stockings.Stocking):
        def pre_write(self, *args: Any, **kwargs: Any) -> Any:
            return "<" + args[0] + ">"

        def postRead(self, message: Any) -> Any:
            return message.strip("<>")

    a, b = socket.socketpair()
    with Tagged(a) as left, Tagged(b) as right:
        left.write_many(["a", "b"])
        wait_until(lambda: right.unread_bytes == 6)
        assert right.read_all() == ["a", "b"]
