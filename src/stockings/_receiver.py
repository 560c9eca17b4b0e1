"""Receiving and decoding for one channel, on whichever thread receives.

The hub thread receives into its shared buffer, a direct reader into its
thread's own (see ``_direct``); either way :meth:`Receiver.receive` takes
what the kernel gives, the :class:`~stockings._framing.Decoder` cuts whole
messages out and :meth:`Receiver.take_in` hands them to the inbox. A large
``bytes`` payload is received into a reused buffer of its own instead
(:class:`~stockings._buffers.Assembly`), which the reader turns into bytes;
in a stream of them, on Linux TCP, each whole payload is received straight
into the ``bytes`` that ``read`` returns, once it has all arrived
(:mod:`~stockings._low_water`).

The :class:`Receiver` is one part of a :class:`~stockings._channel.Channel`.
Its :attr:`Receiver.lock` is held around every receive and every use of the
decoder; where it is held with the channel's interest lock, it is taken
first. It asks the channel for three things only (:class:`ReceiverOwner`):
its end, the peer's end of the stream (hub thread), and a pause in reading
when the inbox is over its high-water mark; it holds the channel weakly, so
that the two make no reference cycle. On a reader's thread (``direct``) it
leaves ending the channel, and meeting the end of the stream, to the hub.
"""

from __future__ import annotations

import functools
import socket
import time
import weakref
from collections import deque
from threading import Lock
from typing import Protocol

from ._buffers import ASSEMBLE_AHEAD, Assembly
from ._common import _DELIVERED, _NOTHING, _PARTIAL, _STOPPED, LARGE_PAYLOAD
from ._errors import EndReason, IncompleteMessage, end_reason_for
from ._framing import BytesLike, Decoder
from ._hub import RECV_BUFFER_SIZE, Hub
from ._inbox import Inbox
from ._lifecycle import failure_reason
from ._low_water import LowWater, header_size, low_water_for
from ._options import ChannelOptions

__all__ = ["MAX_RECV_CHUNK", "Receiver", "ReceiverOwner"]

#: The most one ``recv`` of a large payload asks for.
MAX_RECV_CHUNK = 4 * 1024 * 1024
#: Payloads this large, in a stream of them, are received whole, each in
#: one ``recv`` once it has all arrived. Up to the size of the hub's buffer
#: they come several to a receive, and the calls and wake-ups saved are
#: worth more than the copy out of the buffer (measured: half the rate at
#: 64 and 128 KiB received whole, twice the rate at 512 KiB).
WHOLE_PAYLOAD = RECV_BUFFER_SIZE + 1
# ``Receiver.whole`` while a large payload is owed in a stream of them.
_OWED = -1


class ReceiverOwner(Protocol):
    """What a :class:`Receiver` asks of its channel."""

    def _end(self, reason: EndReason, exc: BaseException | None = None) -> None:
        """End the channel (hub thread; posted there from a reader's)."""

    def _end_of_stream(self) -> None:
        """The peer closed its side (hub thread): flush, then end or stay half open."""

    def _pause_reading(self, direct: bool) -> None:
        """The inbox is over its high-water mark: stop reading (the receiving thread)."""


class Receiver:
    """Receives and decodes for one channel.

    Args:
        sock: the channel's socket.
        hub: the channel's hub (a reader posts the channel's end to it).
        options: the channel's options (``max_message_size``, ``idle_timeout``).
        inbox: where whole messages go.
        owner: the channel, held weakly.
    """

    __slots__ = (
        "_low_water",
        "_owner",
        "_spare_buffers",
        "_track_idle",
        "assembly",
        "bytes_received",
        "decoder",
        "end_pending",
        "filled",
        "hub",
        "inbox",
        "last_receive",
        "lock",
        "sock",
        "whole",
    )

    def __init__(
        self,
        sock: socket.socket,
        hub: Hub,
        options: ChannelOptions,
        inbox: Inbox,
        owner: ReceiverOwner,
    ) -> None:
        self.sock = sock
        self.hub = hub
        self.inbox = inbox
        #: Held by whoever receives and decodes: the hub thread, or a reader
        #: receiving for itself (see ``_direct``).
        self.lock = Lock()
        self.decoder = Decoder(options.max_message_size)
        #: A large payload being received into a buffer of its own (``lock``).
        self.assembly: Assembly | None = None
        self._spare_buffers: deque[bytearray] = deque()
        #: Whether the last receive filled all the room it offered (``lock``).
        self.filled = False
        #: A reader met a fault and asked the hub to end the channel: nobody
        #: receives meanwhile, lest the hub meet it again as something else.
        self.end_pending = False
        #: Bytes of the message stream (headers included, TLS excluded) the
        #: kernel gave, for anyone to read at any time; changed under ``lock``.
        self.bytes_received = 0
        #: When something last arrived (``time.monotonic()``), kept only with
        #: an ``idle_timeout``; the channel's idle check reads and resets it.
        self.last_receive = 0.0
        self._track_idle = options.idle_timeout is not None
        # For a stream of large payloads (``_receive_whole``): the socket's
        # low-water mark; an idle timeout must see bytes as they come, so
        # it keeps the old way.
        self._low_water: LowWater | None = None if self._track_idle else low_water_for(sock)
        #: Where a stream of large payloads stands (``lock``; read without it
        #: as a hint): 0, not in one; above 0, on a message boundary, the
        #: size of the header expected next, read alone so that its payload
        #: can be received whole; ``_OWED``, such a payload is on its way.
        self.whole = 0
        self._owner: weakref.ref[ReceiverOwner] = weakref.ref(owner)

    def receive(self, view: memoryview, direct: bool) -> int:
        """Receive once into ``view`` or a large payload's own buffer (``lock`` held).

        Args:
            view: where small messages are received; the hub's shared
                buffer on its thread, a reader's own buffer on the reader's.
            direct: on a reader's thread, which must leave ending the
                channel, and meeting the end of the stream, to the hub.

        Returns:
            ``_DELIVERED``, ``_PARTIAL`` (bytes but no whole message yet),
            ``_NOTHING`` (the socket had nothing) or ``_STOPPED``.
        """
        if self.whole:
            return self._receive_whole(view, direct)
        sock = self.sock
        decoder = self.decoder
        missing = decoder.payload_missing
        assembly = self.assembly
        if (
            assembly is None
            and missing >= LARGE_PAYLOAD
            and not decoder.payload_is_text
            and (missing <= ASSEMBLE_AHEAD or missing <= 3 * decoder.payload_received)
        ):
            assembly = self._begin_assembly()
        data: BytesLike
        try:
            if assembly is not None:
                room = assembly.size - assembly.have
                received = sock.recv_into(assembly.view[assembly.have : assembly.size])
            elif missing >= LARGE_PAYLOAD:
                room = min(missing, MAX_RECV_CHUNK)
                data = sock.recv(room)
                received = len(data)
            else:
                room = len(view)
                received = sock.recv_into(view)
                data = view[:received]
        except (BlockingIOError, InterruptedError):
            return _NOTHING
        except OSError as exc:
            self._end_from(direct, end_reason_for(exc), exc)
            return _STOPPED
        self.filled = received == room
        self.bytes_received += received
        if not received:
            if assembly is not None and not direct:
                owner = self._owner()
                if owner is not None:
                    left = assembly.size - assembly.have
                    owner._end(
                        EndReason.PROTOCOL_ERROR,
                        IncompleteMessage(f"stream ended inside a message ({left} bytes missing)"),
                    )
                return _STOPPED
            return self._stream_ended(direct)
        if self._track_idle:
            self.last_receive = time.monotonic()
        if assembly is not None:
            assembly.have += received
            if assembly.have < assembly.size:
                return _PARTIAL
            self.assembly = None
            if self.inbox.deliver([assembly]):
                self._pause(direct)
            if self._low_water is not None and assembly.size >= WHOLE_PAYLOAD:
                # A message boundary on a recv boundary: perhaps a stream of
                # large payloads, which the next receive checks.
                self.whole = header_size(assembly.size)
            return _DELIVERED
        outcome = self.take_in(data, direct)
        if self._low_water is not None and self.decoder.payload_missing:
            self._owe_whole()
        return outcome

    def _owe_whole(self) -> None:
        """Have the rest of a large ``bytes`` payload received whole, should one be in progress.

        The payload is then a join of two pieces, but the stream stands on
        a message boundary after it, for the next to come whole.
        """
        decoder = self.decoder
        missing = decoder.payload_missing
        length = missing + decoder.payload_received
        if WHOLE_PAYLOAD <= length <= ASSEMBLE_AHEAD and not decoder.payload_is_text:
            self.whole = _OWED
            # Wait for it rather than take a piece of it now.
            self.filled = False
            assert self._low_water is not None  # checked by the caller, in line
            self._low_water.expect(missing)

    def _receive_whole(self, view: memoryview, direct: bool) -> int:
        """Receive in a stream of large payloads, each whole into its ``bytes`` (``lock`` held).

        On a message boundary, the next header is read alone; a large
        ``bytes`` payload after it is then owed, and the low-water mark
        wakes the receiver once it has all arrived, for one ``recv`` of
        exactly its size (a piece, should the kernel give less, is kept
        and the mark lowered to the rest). Anything else ends the stream's
        special handling, as does a header of another size than expected.

        Returns:
            As :meth:`receive`.
        """
        decoder = self.decoder
        low_water = self._low_water
        assert low_water is not None  # set with ``whole``
        outcome = _PARTIAL
        self.filled = False
        if self.whole == _OWED:
            missing = decoder.payload_missing
            length = missing + decoder.payload_received
            try:
                data = self.sock.recv(missing)
            except (BlockingIOError, InterruptedError):
                return _NOTHING
            except OSError as exc:
                self._end_from(direct, end_reason_for(exc), exc)
                return _STOPPED
            received = len(data)
            if not received:
                return self._stream_ended(direct)
            self.bytes_received += received
            outcome = self.take_in(data, direct)
            if outcome != _DELIVERED:
                if outcome == _PARTIAL:
                    low_water.expect(decoder.payload_missing)
                return outcome
            # On a boundary again: read the next header now, whatever
            # follows, so that the mark never waits for more than is owed.
            self.whole = header_size(length)
        want = self.whole
        try:
            received = self.sock.recv_into(view, want)
        except (BlockingIOError, InterruptedError):
            low_water.reset()
            return outcome
        except OSError as exc:
            low_water.reset()
            self._end_from(direct, end_reason_for(exc), exc)
            return _STOPPED
        if not received:
            low_water.reset()
            self.whole = 0
            return self._stream_ended(direct)
        self.bytes_received += received
        header_outcome = self.take_in(view[:received], direct)
        missing = decoder.payload_missing
        if (
            WHOLE_PAYLOAD <= missing <= ASSEMBLE_AHEAD
            and decoder.payload_received == 0
            and not decoder.payload_is_text
        ):
            self.whole = _OWED
            low_water.expect(missing)
        else:
            # Not a large payload on its own: back to receiving in bulk.
            self.whole = 0
            low_water.reset()
            self.filled = received == want
        if header_outcome == _STOPPED:
            return _STOPPED
        return max(outcome, header_outcome)

    def _stream_ended(self, direct: bool) -> int:
        """The peer's end of the stream came (``lock`` held): tell the channel, from the hub."""
        if not direct:
            owner = self._owner()
            if owner is not None:  # pragma: no branch - the hub holds its channel
                owner._end_of_stream()
        # On a reader's thread the end of the stream stays readable: the hub meets it next.
        return _STOPPED

    def receive_on_main(self, view: memoryview) -> int:
        """One receive on the main thread, safe from signal handlers (``lock`` held).

        For a direct reader there (see ``_direct``). Only with the decoder
        between messages; otherwise the hub carries on. The count of what
        ``recv_into`` took is recorded inside the same C call
        (``list.extend`` over ``map``), so an exception raised by a signal
        handler once it returns cannot lose it; and if the exception comes
        before the messages reached the inbox (its ``deliveries`` tells),
        the bytes, still in this thread's buffer, are decoded afresh by a
        new decoder (the old one was between messages before them).

        Returns:
            As :meth:`receive`.
        """
        if self.assembly is not None or self.decoder.in_progress:
            return _STOPPED
        # Bytes taken here may end a stream of large payloads (the mark is
        # 1 between messages).
        self.whole = 0
        got: list[int] = []
        inbox = self.inbox
        deliveries = inbox.deliveries
        try:
            try:
                got.extend(map(self.sock.recv_into, (view,)))
            except (BlockingIOError, InterruptedError):
                return _NOTHING
            except OSError as exc:
                self._end_from(True, end_reason_for(exc), exc)
                return _STOPPED
            received = got[0]
            self.bytes_received += received
            self.filled = received == len(view)
            if not received:
                # The end of the stream stays readable: the hub meets it next.
                return _STOPPED
            return self.take_in(view[:received], True)
        except BaseException:
            if got and got[0] and inbox.deliveries == deliveries:
                self.decoder = Decoder(self.decoder.max_message_size)
                self.take_in(view[: got[0]], True)
            raise

    def take_in(self, data: BytesLike, direct: bool = False) -> int:
        """Decode received bytes and deliver their messages, on the thread that received them.

        Returns:
            ``_DELIVERED`` or ``_PARTIAL``; ``_STOPPED`` if the bytes broke
            the wire format: the channel then ends (see ``_end_from``), after
            delivering every message that came before the fault.
        """
        decoder = self.decoder
        messages = decoder.feed(data)
        if messages and self.inbox.deliver(messages):
            self._pause(direct)
        failure = decoder.failure
        if failure is not None:
            self._end_from(direct, failure_reason(failure), failure)
            return _STOPPED
        return _DELIVERED if messages else _PARTIAL

    def _pause(self, direct: bool) -> None:
        owner = self._owner()
        if owner is not None:
            owner._pause_reading(direct)

    def _end_from(self, direct: bool, reason: EndReason, exc: BaseException) -> None:
        owner = self._owner()
        if owner is None:  # pragma: no cover - a receiving thread holds its channel
            return
        if direct:
            # Posted first: the flag stops the hub receiving, so it must
            # never be set without the end on its way.
            self.hub.call_soon(functools.partial(owner._end, reason, exc))
            self.end_pending = True
        else:
            owner._end(reason, exc)

    def _begin_assembly(self) -> Assembly:
        """Take a large bytes payload over from the decoder.

        The rest of it is received straight into a buffer that is reused from
        message to message; the reader makes the ``bytes`` (see ``Assembly``).
        """
        pieces, missing, _ = self.decoder.detach_payload()
        have = sum(map(len, pieces))
        size = have + missing
        buffer = None
        try:
            buffer = self._spare_buffers.popleft()
        except IndexError:
            pass
        if buffer is None or len(buffer) < size:
            buffer = bytearray(size)
        assembly = Assembly(buffer, size, self._spare_buffers)
        at = 0
        for piece in pieces:
            assembly.view[at : at + len(piece)] = piece
            at += len(piece)
        assembly.have = have
        self.assembly = assembly
        return assembly
