"""Inbound flow control never leaves a drained stocking paused.

Reads take no lock, so the count of unread bytes can overstate what is
really unread (readers racing each other may lose an addition). A reader
that empties the inbox and then waits with ``stockings.wait()`` (or on
``fileno()``) must still see the messages the pause held back.
"""

from __future__ import annotations

import socket

import pytest
from tests.conftest import wait_until

import stockings

MESSAGE = b"m" * 8192
COUNT = 40


@pytest.mark.timeout(20)
def test_draining_the_inbox_resumes_reading_even_when_counts_overstate() -> None:
    a, b = socket.socketpair()
    with (
        stockings.Stocking(a) as sender,
        stockings.Stocking(b, read_high_water=64 * 1024) as receiver,
    ):
        for _ in range(COUNT):
            sender.write(MESSAGE)
        channel = receiver._channel
        wait_until(lambda: channel._read_paused)
        # What a lost update by a racing reader looks like.
        channel._consumed -= 10**6
        received = 0
        while True:
            # Read exactly what is in the inbox: one more read() would resume
            # by another path and hide the bug.
            for _ in range(len(channel.inbox)):
                assert receiver.read() == MESSAGE
                received += 1
            if received == COUNT:
                break
            ready = stockings.wait([receiver], timeout=5)
            assert ready == [receiver], f"still paused after reading {received} messages"
        assert received == COUNT
