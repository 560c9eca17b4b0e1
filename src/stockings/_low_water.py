"""Waking the receiver only once a large payload has arrived whole (``SO_RCVLOWAT``).

A stream of large messages is received fastest as the raw loop does it:
one ``recv`` of exactly the payload's size, straight into the ``bytes``
that ``read`` returns, with no buffer in between to copy out of. That pays
only if the bytes are all there when the ``recv`` runs; otherwise it takes
a piece and the pieces must be joined, a copy after all. So while a large
payload is owed, the socket's receive low-water mark is raised to its
size: the kernel then reports the socket readable (to the hub's selector
and to a reader's ``poll``) only once that much is waiting, or at the end
of the stream or an error, which it always reports.

The mark must never exceed what is owed: a selector waiting for bytes the
peer will never send would wait for ever. :class:`LowWater` keeps it at 1
between messages and at most the missing part of a payload during one. A
Linux kernel caps the mark to what its receive buffer can hold, and grows
the buffer to fit (4.18 and later); on an older one the mark is kept under
half the buffer here, so that the peer's window can always fill it.

Only Linux TCP sockets use it. Elsewhere (and for Unix sockets, whose
readiness ignores the mark) :func:`low_water_for` gives ``None`` and the
receiver assembles large payloads in a buffer of its own, as before.
"""

from __future__ import annotations

import socket
import sys

__all__ = ["LowWater", "header_size", "low_water_for"]

_SO_RCVLOWAT: int = getattr(socket, "SO_RCVLOWAT", 0)
#: How many large payloads the receive buffer is grown to hold at once.
_PAYLOADS_IN_FLIGHT = 4
_TCP_FAMILIES = (socket.AF_INET, getattr(socket, "AF_INET6", socket.AF_INET))


def header_size(length: int) -> int:
    """How many bytes the header of a ``length``-byte payload takes on the wire."""
    if length < 64:
        return 1
    if length < 8192:
        return 2
    # Six bits in the first byte, seven in each one after it.
    return 1 + ((length >> 6).bit_length() + 6) // 7


class LowWater:
    """A socket's receive low-water mark, set only when it changes.

    Args:
        sock: a connected Linux TCP socket.
    """

    __slots__ = ("mark", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        #: The mark as last set; 1 (the kernel's default) until raised.
        self.mark = 1

    def expect(self, size: int) -> None:
        """Report the socket readable once ``size`` bytes are waiting (at most what is owed)."""
        if size == self.mark:
            return
        sock = self.sock
        try:
            if size > self.mark:
                # The kernel grows the receive buffer to hold the mark, and
                # never shrinks it: room for several payloads, so that the
                # peer sends the next ones while this one is taken.
                sock.setsockopt(socket.SOL_SOCKET, _SO_RCVLOWAT, size * _PAYLOADS_IN_FLIGHT)
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVLOWAT, size)
            if size > 1:
                room = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
                if size > room // 2:
                    # A kernel that does not grow the buffer for the mark:
                    # stay well within what the window lets the peer send.
                    size = max(1, room // 4)
                    sock.setsockopt(socket.SOL_SOCKET, _SO_RCVLOWAT, size)
        except OSError:
            # The socket is closing: nobody waits on it any more.
            return
        self.mark = size

    def reset(self) -> None:
        """Report the socket readable as soon as anything arrives (between messages)."""
        if self.mark != 1:
            self.expect(1)


def low_water_for(sock: socket.socket) -> LowWater | None:
    """A :class:`LowWater` for ``sock`` if its readiness follows the mark, else ``None``."""
    if not _SO_RCVLOWAT or not sys.platform.startswith("linux"):
        return None
    if sock.family not in _TCP_FAMILIES:
        return None
    return LowWater(sock)
