"""The hub takes what the kernel has in a few receives per readiness event, no more."""

from __future__ import annotations

import selectors
import socket
from itertools import islice, repeat

import stockings
from stockings._channel import Channel
from stockings._hub import Hub
from stockings._options import ChannelOptions
from stockings._transport import RECEIVES_PER_WAKE

MESSAGE = b"x" * 90
FRAMED = stockings.encode(MESSAGE)


class ScriptedSocket:
    """Stands in for a socket; each receive gives what the script says.

    ``None`` fills all the room offered, a number gives that many bytes, and
    past the end of the script the socket would block. The bytes are an
    endless stream of one framed message.
    """

    family = socket.AF_INET
    type = socket.SOCK_STREAM

    def __init__(self, script: list[int | None]) -> None:
        self.script = list(script)
        self.sent = 0
        self.calls = 0

    def setblocking(self, flag: bool) -> None:
        pass

    def fileno(self) -> int:
        return -1

    def recv_into(self, buffer: memoryview) -> int:
        self.calls += 1
        if not self.script:
            raise BlockingIOError
        step = self.script.pop(0)
        size = len(buffer) if step is None else step
        start = self.sent % len(FRAMED)
        stream = b"".join(islice(repeat(FRAMED), (start + size) // len(FRAMED) + 1))
        buffer[:size] = stream[start : start + size]
        self.sent += size
        return size


def receive_one_event(script: list[int | None]) -> tuple[ScriptedSocket, Channel]:
    sock = ScriptedSocket(script)
    # A hub that is never started: the test calls handle_events itself.
    options = ChannelOptions(None, 1 << 20, None, 1 << 30, None)
    channel = Channel(sock, Hub(), options)  # type: ignore[arg-type]
    channel.handle_events(selectors.EVENT_READ)
    return sock, channel


def test_one_event_takes_a_bounded_number_of_receives() -> None:
    sock, channel = receive_one_event([None] * 100)
    assert sock.calls == RECEIVES_PER_WAKE > 1
    assert len(channel.inbox.messages) == sock.sent // len(FRAMED)


def test_a_receive_that_fills_less_than_it_offered_is_the_last() -> None:
    # A stream socket gives what it holds: less than asked means empty.
    sock, channel = receive_one_event([None, None, 1000, None])
    assert sock.calls == 3
    assert list(channel.inbox.messages) == [MESSAGE] * (sock.sent // len(FRAMED))


def test_one_that_would_block_ends_the_event_too() -> None:
    sock, channel = receive_one_event([None])
    assert sock.calls == 2
    assert list(channel.inbox.messages) == [MESSAGE] * (sock.sent // len(FRAMED))
