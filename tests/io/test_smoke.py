"""The shortest path through the library: one message each way."""

from __future__ import annotations

import socket

import stockings


def test_one_message_each_way() -> None:
    a, b = socket.socketpair()
    with stockings.Stocking(a) as left, stockings.Stocking(b) as right:
        left.write("hello")
        assert right.read(timeout=5) == "hello"
        right.write(b"bytes back")
        assert left.read(timeout=5) == b"bytes back"


def test_handshake_complete_is_assignable_as_in_1_2_3() -> None:
    a, b = socket.socketpair()
    with stockings.Stocking(a) as left, stockings.Stocking(b):
        left.handshakeComplete = False
        assert not left.handshake_complete
        left.handshake_complete = True
        assert left.handshakeComplete is True
