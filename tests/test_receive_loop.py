"""The hub takes what the kernel has in a few receives per readiness event, no more."""

from __future__ import annotations

import selectors
import socket

import stockings
from stockings._channel import RECEIVES_PER_WAKE, Channel
from stockings._hub import Hub
from stockings._options import ChannelOptions


class EndlessSocket:
    """Stands in for a socket whose kernel buffer always holds more messages."""

    family = socket.AF_INET
    type = socket.SOCK_STREAM

    def __init__(self, chunks: int | None = None) -> None:
        self.chunk = stockings.encode(b"x" * 90) * 10  # 10 messages a receive
        self.left = chunks  # receives that find data; None: endless
        self.calls = 0

    def setblocking(self, flag: bool) -> None:
        pass

    def fileno(self) -> int:
        return -1

    def recv_into(self, buffer: memoryview) -> int:
        self.calls += 1
        if self.left is not None:
            if self.left == 0:
                raise BlockingIOError
            self.left -= 1
        buffer[: len(self.chunk)] = self.chunk
        return len(self.chunk)


def channel_over(sock: EndlessSocket) -> Channel:
    # A hub that is never started: the test calls handle_events itself.
    options = ChannelOptions(None, 1 << 20, None, 1 << 30, None)
    return Channel(sock, Hub(), options)  # type: ignore[arg-type]


def test_one_event_takes_a_bounded_number_of_receives() -> None:
    sock = EndlessSocket()
    channel = channel_over(sock)
    channel.handle_events(selectors.EVENT_READ)
    assert sock.calls == RECEIVES_PER_WAKE > 1
    assert len(channel.inbox) == 10 * RECEIVES_PER_WAKE


def test_one_event_receives_until_the_kernel_has_nothing() -> None:
    sock = EndlessSocket(chunks=3)
    channel = channel_over(sock)
    channel.handle_events(selectors.EVENT_READ)
    assert sock.calls == 4  # three with data, then the one that would block
    assert list(channel.inbox) == [b"x" * 90] * 30
