"""Receiving a stream of large payloads each whole, once it has all arrived (``SO_RCVLOWAT``).

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

:class:`WholePayloads` is the receiver's part that does it, from the
moment a stream stands on a message boundary after a large payload until
a message of another kind comes; it is given the receiver on each call
(:class:`WholeTarget`), as the sender is given its outbox. Only Linux TCP
sockets use it. Elsewhere (and for Unix sockets, whose readiness ignores
the mark) :func:`whole_payloads_for` gives ``None`` and the receiver
assembles large payloads in a buffer of its own.
"""

from __future__ import annotations

import socket
import sys
from typing import Protocol

from ._buffers import ASSEMBLE_AHEAD
from ._common import _DELIVERED, _NOTHING, _PARTIAL, _STOPPED
from ._errors import EndReason, end_reason_for
from ._framing import BytesLike, Decoder
from ._hub import RECV_BUFFER_SIZE

__all__ = [
    "WHOLE_PAYLOAD",
    "LowWater",
    "WholePayloads",
    "WholeTarget",
    "header_size",
    "whole_payloads_for",
]

#: Payloads this large, in a stream of them, are received whole. Up to the
#: size of the hub's buffer they come several to a receive, and the calls
#: and wake-ups saved are worth more than the copy out of the buffer
#: (measured: half the rate at 64 and 128 KiB received whole, twice the
#: rate at 512 KiB).
WHOLE_PAYLOAD = RECV_BUFFER_SIZE + 1
#: :attr:`WholePayloads.stage` while a large payload is owed.
OWED = -1

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


class WholeTarget(Protocol):
    """What :class:`WholePayloads` uses of its receiver (the receiver's lock held)."""

    sock: socket.socket
    decoder: Decoder
    bytes_received: int
    #: Whether the last receive filled all the room it offered.
    filled: bool

    def take_in(self, data: BytesLike, direct: bool = False) -> int:
        """Decode and deliver; ``_DELIVERED``, ``_PARTIAL`` or ``_STOPPED``."""

    def end_from(self, direct: bool, reason: EndReason, exc: BaseException) -> None:
        """End the channel for a receive that failed."""

    def stream_ended(self, direct: bool) -> int:
        """The peer's end of the stream came; ``_STOPPED``."""


class WholePayloads:
    """One receiver's way through a stream of large payloads.

    Args:
        sock: the receiver's socket (a Linux TCP one).
    """

    __slots__ = ("low_water", "stage")

    def __init__(self, sock: socket.socket) -> None:
        self.low_water = LowWater(sock)
        #: Where the stream stands (read without the lock as a hint): 0, not
        #: in such a stream; above 0, on a message boundary, the size of the
        #: header expected next, read alone so that its payload can come
        #: whole; :data:`OWED`, such a payload is on its way.
        self.stage = 0

    def after_assembly(self, size: int) -> None:
        """A payload of ``size`` was assembled whole: the stream stands on a message boundary."""
        if size >= WHOLE_PAYLOAD:
            self.stage = header_size(size)

    def owe_rest(self, receiver: WholeTarget) -> None:
        """Have the rest of a large ``bytes`` payload received whole, should one be in progress.

        The payload is then a join of two pieces, but the stream stands on
        a message boundary after it, for the next to come whole.
        """
        decoder = receiver.decoder
        missing = decoder.payload_missing
        length = missing + decoder.payload_received
        if WHOLE_PAYLOAD <= length <= ASSEMBLE_AHEAD and not decoder.payload_is_text:
            self.stage = OWED
            # Wait for it rather than take a piece of it now.
            receiver.filled = False
            self.low_water.expect(missing)

    def receive(self, receiver: WholeTarget, view: memoryview, direct: bool) -> int:
        """Receive once for ``receiver``, as its ``receive`` does (its lock held).

        On a message boundary, the next header is read alone; a large
        ``bytes`` payload after it is then owed, and the low-water mark
        wakes the receiver once it has all arrived, for one ``recv`` of
        exactly its size (a piece, should the kernel give less, is kept
        and the mark lowered to the rest). Anything else ends the stream's
        special handling, as does a header of another size than expected.

        Returns:
            As ``Receiver.receive``.
        """
        decoder = receiver.decoder
        low_water = self.low_water
        sock = receiver.sock
        outcome = _PARTIAL
        receiver.filled = False
        if self.stage == OWED:
            missing = decoder.payload_missing
            length = missing + decoder.payload_received
            try:
                data = sock.recv(missing)
            except (BlockingIOError, InterruptedError):
                return _NOTHING
            except OSError as exc:
                receiver.end_from(direct, end_reason_for(exc), exc)
                return _STOPPED
            received = len(data)
            if not received:
                return receiver.stream_ended(direct)
            receiver.bytes_received += received
            outcome = receiver.take_in(data, direct)
            if outcome != _DELIVERED:
                if outcome == _PARTIAL:
                    low_water.expect(decoder.payload_missing)
                return outcome
            # On a boundary again: read the next header now, whatever
            # follows, so that the mark never waits for more than is owed.
            self.stage = header_size(length)
        want = self.stage
        try:
            received = sock.recv_into(view, want)
        except (BlockingIOError, InterruptedError):
            low_water.reset()
            return outcome
        except OSError as exc:
            low_water.reset()
            receiver.end_from(direct, end_reason_for(exc), exc)
            return _STOPPED
        if not received:
            low_water.reset()
            self.stage = 0
            return receiver.stream_ended(direct)
        receiver.bytes_received += received
        header_outcome = receiver.take_in(view[:received], direct)
        missing = decoder.payload_missing
        if (
            WHOLE_PAYLOAD <= missing <= ASSEMBLE_AHEAD
            and decoder.payload_received == 0
            and not decoder.payload_is_text
        ):
            self.stage = OWED
            low_water.expect(missing)
        else:
            # Not a large payload on its own: back to receiving in bulk.
            self.stage = 0
            low_water.reset()
            receiver.filled = received == want
        if header_outcome == _STOPPED:
            return _STOPPED
        return max(outcome, header_outcome)


def whole_payloads_for(sock: socket.socket) -> WholePayloads | None:
    """A :class:`WholePayloads` for ``sock`` if its readiness follows the mark, else ``None``."""
    if not _SO_RCVLOWAT or not sys.platform.startswith("linux"):
        return None
    if sock.family not in _TCP_FAMILIES:
        return None
    return WholePayloads(sock)
