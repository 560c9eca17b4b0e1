"""Receiving and decoding for one channel, on whichever thread receives.

The hub thread receives into its shared buffer, a direct reader into its
thread's own (see ``_direct``); either way :meth:`Receiver.receive` takes
what the kernel gives, the :class:`~stockings._framing.Decoder` cuts whole
messages out and :meth:`Receiver.take_in` hands them to the inbox. A large
``bytes`` payload is received into a buffer of its own instead
(:class:`~stockings._buffers.Assembly`), which the reader turns into bytes;
in a stream of them, on Linux TCP, each whole payload is received straight
into the ``bytes`` that ``read`` returns, once it has all arrived
(:mod:`~stockings._whole`).

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
from threading import Lock
from typing import Protocol

from ._buffers import ASSEMBLE_AHEAD, Assembly
from ._common import _DELIVERED, _NOTHING, _PARTIAL, _STOPPED, LARGE_PAYLOAD
from ._errors import EndReason, IncompleteMessage, end_reason_for
from ._framing import BytesLike, Decoder
from ._hub import Hub
from ._inbox import Inbox
from ._lifecycle import failure_reason
from ._options import ChannelOptions
from ._whole import WholePayloads, whole_payloads_for

__all__ = ["MAX_RECV_CHUNK", "Receiver", "ReceiverOwner"]

#: The most one ``recv`` of a large payload asks for.
MAX_RECV_CHUNK = 4 * 1024 * 1024


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
        uses_socket: whether :meth:`receive` may use the socket (not under TLS).
    """

    __slots__ = (
        "_owner",
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
        uses_socket: bool = True,
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
        #: Receives a stream of large payloads each whole (``lock``), where
        #: :meth:`receive` uses the socket (not TLS); an idle timeout must
        #: see bytes as they come, so it keeps the old way.
        self.whole: WholePayloads | None = None
        if uses_socket and not self._track_idle:
            self.whole = whole_payloads_for(sock)
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
        whole = self.whole
        if whole is not None and whole.stage:
            return whole.receive(self, view, direct)
        sock = self.sock
        decoder = self.decoder
        missing = decoder.payload_missing
        assembly = self.assembly
        if assembly is None and missing >= LARGE_PAYLOAD and self._assembly_due():
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
            self.end_from(direct, end_reason_for(exc), exc)
            return _STOPPED
        self.filled = received == room
        self.bytes_received += received
        if not received:
            # Inside a payload too: ``eof`` tells the channel's end what was owed.
            return self.stream_ended(direct)
        if self._track_idle:
            self.last_receive = time.monotonic()
        if assembly is not None:
            return self._fill_assembly(assembly, received, direct)
        outcome = self.take_in(data, direct)
        if whole is not None and self.decoder.payload_missing:
            whole.owe_rest(self)
        return outcome

    def payload_room(self) -> memoryview | None:
        """Where the rest of a large ``bytes`` payload in progress goes, if one is (hub thread).

        For a transport that cannot use :meth:`receive` (TLS decrypts into
        the view given): it receives there, then reports with
        :meth:`payload_arrived`, so the payload is copied once, by the
        reader, rather than stored in pieces and joined.
        """
        assembly = self.assembly
        if assembly is None:
            if not self._assembly_due():
                return None
            assembly = self._begin_assembly()
        return assembly.view[assembly.have : assembly.size]

    def payload_arrived(self, received: int) -> int:
        """``received`` more bytes came into :meth:`payload_room` (hub thread).

        Returns:
            ``_DELIVERED`` once the payload is whole, else ``_PARTIAL``.
        """
        assembly = self.assembly
        assert assembly is not None  # made by payload_room
        return self._fill_assembly(assembly, received, False)

    def _assembly_due(self) -> bool:
        """Whether a large ``bytes`` payload in progress goes to a buffer of its own now.

        Only once at most ``ASSEMBLE_AHEAD``, or three times what came, is
        still to come: nothing is allocated much ahead of the data.
        """
        decoder = self.decoder
        missing = decoder.payload_missing
        return (
            missing >= LARGE_PAYLOAD
            and not decoder.payload_is_text
            and (missing <= ASSEMBLE_AHEAD or missing <= 3 * decoder.payload_received)
        )

    def _fill_assembly(self, assembly: Assembly, received: int, direct: bool) -> int:
        """Count ``received`` more bytes of ``assembly``; deliver it once whole."""
        assembly.have += received
        if assembly.have < assembly.size:
            return _PARTIAL
        self.assembly = None
        if self.inbox.deliver([assembly]):
            self._pause(direct)
        if self.whole is not None:
            self.whole.after_assembly(assembly.size)
        return _DELIVERED

    def eof(self) -> None:
        """The stream ended (hub thread).

        Raises:
            IncompleteMessage: it ended inside a message, which is dropped.
        """
        assembly = self.assembly
        if assembly is not None:
            self.assembly = None
            left = assembly.size - assembly.have
            raise IncompleteMessage(f"stream ended inside a message ({left} bytes missing)")
        self.decoder.eof()

    def stream_ended(self, direct: bool) -> int:
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
        if self.whole is not None:
            # Bytes taken here end a stream of large payloads (the mark is 1
            # between messages).
            self.whole.stage = 0
        got: list[int] = []
        inbox = self.inbox
        deliveries = inbox.deliveries
        try:
            try:
                got.extend(map(self.sock.recv_into, (view,)))
            except (BlockingIOError, InterruptedError):
                return _NOTHING
            except OSError as exc:
                self.end_from(True, end_reason_for(exc), exc)
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
            the wire format: the channel then ends (see ``end_from``), after
            delivering every message that came before the fault.
        """
        decoder = self.decoder
        messages = decoder.feed(data)
        if messages and self.inbox.deliver(messages):
            self._pause(direct)
        failure = decoder.failure
        if failure is not None:
            self.end_from(direct, failure_reason(failure), failure)
            return _STOPPED
        return _DELIVERED if messages else _PARTIAL

    def _pause(self, direct: bool) -> None:
        owner = self._owner()
        if owner is not None:
            owner._pause_reading(direct)

    def end_from(self, direct: bool, reason: EndReason, exc: BaseException) -> None:
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

        The rest of it is received straight into a buffer of the payload's
        size; the reader makes the ``bytes`` (see ``Assembly``).
        """
        pieces, missing, _ = self.decoder.detach_payload()
        have = sum(map(len, pieces))
        assembly = Assembly(have + missing)
        at = 0
        for piece in pieces:
            assembly.view[at : at + len(piece)] = piece
            at += len(piece)
        assembly.have = have
        self.assembly = assembly
        return assembly
