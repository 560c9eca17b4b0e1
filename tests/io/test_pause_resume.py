"""Inbound flow control never leaves a drained stocking paused.

Readers take messages without a lock and count nothing; the inbox bounds
what is unread from its deliveries (``_unread``). The bound may overstate:
a delivery whose mark an interrupt kept from being made, a message that a
racing reader took just as the pause began. A reader that empties the inbox
and then waits with ``stockings.wait()`` (or on ``fileno()``) must still see
the messages the pause held back.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

import stockings
from conftest import wait_until
from stockings import encode
from stockings._inbox import Inbox
from stockings._received import MESSAGE_OVERHEAD
from stockings._unread import UnreadCount

MESSAGE = b"m" * 8192
COUNT = 40


def _read_exactly_the_inbox_then_wait(receiver: stockings.Stocking) -> int:
    """Read what the inbox holds, wait for more, again; return how many were read."""
    channel = receiver._channel
    received = 0
    while True:
        # Read exactly what is in the inbox: one more read() would resume
        # by another path and hide the bug.
        for _ in range(len(channel.inbox.messages)):
            assert receiver.read() == MESSAGE
            received += 1
        if received == COUNT:
            return received
        ready = stockings.wait([receiver], timeout=5)
        assert ready == [receiver], f"still paused after reading {received} messages"


@pytest.mark.timeout(20)
def test_draining_the_inbox_resumes_reading_when_the_count_overstates_what_is_unread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The worst the count can be: no delivery marked, no read while paused
    # counted. Only an empty inbox then says that nothing is unread.
    monkeypatch.setattr(UnreadCount, "mark", lambda self, messages, total: None)
    monkeypatch.setattr(UnreadCount, "settled", property(lambda self: 0, lambda self, value: None))
    a, b = socket.socketpair()
    with (
        stockings.Stocking(a) as sender,
        stockings.Stocking(b, read_high_water=64 * 1024) as receiver,
    ):
        for _ in range(COUNT):
            sender.write(MESSAGE)
        inbox = receiver._channel.inbox
        wait_until(lambda: inbox.paused)
        assert _read_exactly_the_inbox_then_wait(receiver) == COUNT


@pytest.mark.timeout(20)
def test_racing_readers_of_a_paused_stocking_read_everything_once() -> None:
    a, b = socket.socketpair()
    with (
        stockings.Stocking(a) as sender,
        stockings.Stocking(b, read_high_water=64 * 1024, read_low_water=16 * 1024) as receiver,
    ):
        for index in range(COUNT * 10):
            sender.write(index.to_bytes(4, "big") * 2048)
        inbox = receiver._channel.inbox
        wait_until(lambda: inbox.paused)
        got: list[list[int]] = [[] for _ in range(4)]
        done = threading.Event()

        def read_all(into: list[int]) -> None:
            while not done.is_set():
                message = receiver.read(timeout=0.05)
                if message is None:
                    continue
                into.append(int.from_bytes(message[:4], "big"))
                if sum(map(len, got)) == COUNT * 10:
                    done.set()

        threads = [
            threading.Thread(target=read_all, args=(into,), name=f"reader-{n}", daemon=True)
            for n, into in enumerate(got)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(15)
        assert sorted(index for into in got for index in into) == list(range(COUNT * 10))
        for into in got:
            assert into == sorted(into)


LOW_WATER = 32 * 1024


@contextlib.contextmanager
def paused_receiver() -> Iterator[stockings.Stocking]:
    """A stocking paused at a 64 KiB mark (low mark 32 KiB), ``COUNT`` messages sent to it."""
    a, b = socket.socketpair()
    with (
        stockings.Stocking(a) as sender,
        stockings.Stocking(b, read_high_water=64 * 1024, read_low_water=LOW_WATER) as receiver,
    ):
        for _ in range(COUNT):
            sender.write(MESSAGE)
        inbox = receiver._channel.inbox
        wait_until(lambda: inbox.paused)
        yield receiver


@pytest.mark.timeout(20)
def test_a_paused_stocking_resumes_at_the_first_read_below_the_low_water_mark() -> None:
    low_water = LOW_WATER
    with paused_receiver() as receiver:
        inbox = receiver._channel.inbox
        while inbox.paused:
            # Nothing arrives while paused: the inbox is as the pause left it.
            # Each message weighs its payload and the overhead.
            unread = inbox.unread_bytes + MESSAGE_OVERHEAD * len(inbox.messages)
            assert unread > low_water, "paused below the low-water mark"
            assert receiver.read() == MESSAGE
        assert unread - len(MESSAGE) - MESSAGE_OVERHEAD <= low_water


@pytest.mark.timeout(20)
def test_paused_reads_count_nothing_until_few_enough_are_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A stream its reader cannot keep up with is read mostly while paused:
    # those reads compare the inbox's length with a number, no lock taken.
    looks: list[int] = []
    resume_if_drained = Inbox._resume_if_drained

    def counting(self: Inbox) -> None:
        looks.append(len(self.messages))
        resume_if_drained(self)

    monkeypatch.setattr(Inbox, "_resume_if_drained", counting)
    low_water = LOW_WATER
    with paused_receiver() as receiver:
        inbox = receiver._channel.inbox
        paused_with = len(inbox.messages)
        reads = 0
        while inbox.paused:
            assert receiver.read() == MESSAGE
            reads += 1
        assert reads > 1, "nothing was read while paused: nothing was tested"
        # Exactly the read that left the unread messages under the low mark looked.
        left = low_water // (len(MESSAGE) + MESSAGE_OVERHEAD)
        assert looks == [left]
        assert paused_with - reads == left


@pytest.mark.timeout(30)
@pytest.mark.parametrize("size", [0, 1])
def test_a_flood_of_empty_messages_pauses_reading_as_any_other(size: int) -> None:
    # Empty (and one-byte) payloads are shared objects in Python, so each
    # costs the inbox little more than its place in it; counted by their
    # payloads alone they never reached the mark, and a peer sending them
    # grew the process without bound (64 MiB of them: 550 MiB).
    high_water = 64 * 1024
    framed = encode(b"x" * size)
    a, b = socket.socketpair()
    a.setblocking(False)
    with stockings.Stocking(b, read_high_water=high_water) as receiver:
        inbox = receiver._channel.inbox
        flood = framed * (1 << 16)

        def flooded_until_paused() -> bool:
            try:
                a.send(flood)
            except BlockingIOError:
                return inbox.paused
            return False

        wait_until(flooded_until_paused, timeout=20)
        # The mark, and at most what one receive (256 KiB) held besides.
        most = high_water // (MESSAGE_OVERHEAD + size) + 256 * 1024 // len(framed) + 1
        assert len(inbox.messages) <= most
        assert receiver.read() == b"x" * size
    a.close()
