"""One connection's rules, sans I/O: lifecycle, end reasons, flow marks, idle rule, gate.

:class:`Protocol` knows no sockets, threads or clocks. An I/O binding feeds
it what arrived (``receive_data``, ``receive_eof``, ``connection_lost``),
takes whole messages out (``next_message``), hands it messages to send
(``send``) and writes what ``data_to_send`` returns. After each call it acts
on the protocol's decisions: ``reading_wanted`` (pause or resume reading),
``writers_blocked`` (writers wait between the write marks),
``should_shut_write`` (a close has flushed: half-close, then
``write_shut``) and ``should_release`` (close the transport, with a reset
when ``should_reset``, then ``connection_lost``).

The lifecycle is ``OPEN -> CLOSING -> WRITE_SHUT -> ENDED``; any state may
jump to ``ENDED``. Its rules are a :class:`~stockings._lifecycle.Lifecycle`'s
(``lifecycle``), shared with the threaded channel. ``CLOSING`` takes no new
writes: ``close()`` was called here, or the peer half-closed with replies
still queued (they are flushed, then the end is ``PEER_CLOSED``). The first
reason decided is the one the connection ends with, whatever happens after.
Time is the binding's: it calls ``check_idle(now)`` and is told when to call
again. The outgoing side (``send``, ``send_now``, ``data_to_send``,
``set_backlog``) is a :class:`~stockings._sending.Sending`'s, whose methods
the protocol offers as its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ._errors import (
    EndReason,
    HandshakeFailed,
    IncompleteMessage,
    NotReady,
)
from ._framing import Decoder, Message
from ._lifecycle import Lifecycle, State
from ._options import ChannelOptions
from ._received import MESSAGE_OVERHEAD, Received
from ._sending import Sending

__all__ = ["Protocol", "State"]

_T = TypeVar("_T")


class Protocol:
    """The rules of one stockings connection, driven by an I/O binding.

    Args:
        options: the limits in force (validated by
            :class:`~stockings._options.ChannelOptions`).
        gated: true when a handshake must succeed before any application
            message is read or written (see :meth:`open_gate`).
    """

    def __init__(self, options: ChannelOptions, *, gated: bool = False) -> None:
        self.options = options
        #: The lifecycle rules: state, end reason, requests (see ``_lifecycle``).
        self.lifecycle = Lifecycle(gated=gated)
        self.received = Received(options.read_high_water, options.read_low_water)
        #: The received messages not yet taken by :meth:`next_message`.
        self.inbox = self.received.messages
        self._decoder = Decoder(options.max_message_size)
        #: The outgoing side: the send queue and the write marks.
        self.sending = sending = Sending(options, self.lifecycle)
        # Its methods, bound once: the binding calls them for every message.
        self.send = sending.send
        self.send_now = sending.send_now
        self.data_to_send = sending.data_to_send
        self.set_backlog = sending.set_backlog
        self._heard = False
        self._last_heard: float | None = None

    # ------------------------------------------------------------ state

    @property
    def state(self) -> State:
        """Where the connection is in its life."""
        return self.lifecycle.state

    @property
    def gate_open(self) -> bool:
        """False while the handshake gate is shut."""
        return self.lifecycle.gate_open

    @property
    def peer_eof(self) -> bool:
        """True once the peer has ended its side of the stream."""
        return self.lifecycle.peer_eof

    @property
    def close_requested(self) -> bool:
        """True once ``close()`` (flushing) was asked for here."""
        return self.lifecycle.close_requested

    @property
    def ended(self) -> bool:
        """True once the connection is over (messages may still be unread)."""
        return self.state is State.ENDED

    @property
    def end_reason(self) -> EndReason | None:
        """Why the connection ended; ``None`` until it has."""
        lifecycle = self.lifecycle
        return lifecycle.reason if lifecycle.state is State.ENDED else None

    @property
    def decided_reason(self) -> EndReason | None:
        """The reason the connection ends with, as soon as it is decided.

        Decided at ``WRITE_SHUT`` already, before :attr:`end_reason` reports
        it at ``ENDED``; never changed once decided.
        """
        return self.lifecycle.reason

    @property
    def end_exception(self) -> BaseException | None:
        """The exception behind the end, if any; ``None`` until it ended."""
        lifecycle = self.lifecycle
        return lifecycle.exception if lifecycle.state is State.ENDED else None

    @property
    def finished(self) -> bool:
        """True once the connection ended and every received message was taken."""
        return self.state is State.ENDED and not self.inbox

    @property
    def unread(self) -> int:
        """Sum of ``len()`` of the messages in :attr:`inbox`."""
        return self.received.unread

    @property
    def pending_bytes(self) -> int:
        """Bytes queued here that :meth:`data_to_send` has not handed out yet."""
        return self.sending.out_bytes

    @property
    def queued_bytes(self) -> int:
        """Bytes written but not yet handed on: here, plus the binding's backlog."""
        sending = self.sending
        return sending.out_bytes + sending.backlog

    # ------------------------------------------------------------ decisions

    @property
    def reading_wanted(self) -> bool:
        """Whether the binding should be reading from the transport now."""
        return not (self.received.paused or self.peer_eof or self.state is State.ENDED)

    @property
    def writers_blocked(self) -> bool:
        """Whether writers should wait for the queue to drain (never once ended or closing)."""
        return self.sending.blocked and self.lifecycle.state is State.OPEN

    @property
    def should_shut_write(self) -> bool:
        """Whether the binding should now half-close and call :meth:`write_shut`."""
        sending = self.sending
        return self.lifecycle.state is State.CLOSING and not sending.out and not sending.backlog

    @property
    def should_release(self) -> bool:
        """Whether the binding should close the transport and call :meth:`connection_lost`.

        After our clean close (``WRITE_SHUT``) it waits for the peer's FIN, so
        that closing with bytes unread does not turn our FIN into a reset;
        :meth:`close_timed_out` ends the wait.
        """
        if self.lifecycle.reason is None:
            return False
        # Nor is it worth waiting for a FIN that our own read pause holds back.
        return self.state is State.ENDED or self.peer_eof or self.received.paused

    @property
    def should_reset(self) -> bool:
        """Whether the transport should be closed with a reset rather than a FIN."""
        return self.lifecycle.should_reset()

    # ------------------------------------------------------------ bytes in

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Take in bytes from the peer; whole messages land in :attr:`inbox`.

        A break of the wire format ends the connection (``PROTOCOL_ERROR``
        or ``MESSAGE_TOO_LARGE``) after every message before it was kept.
        """
        lifecycle = self.lifecycle
        if lifecycle.reason is not None and lifecycle.state is not State.WRITE_SHUT:
            return
        self._heard = True
        decoder = self._decoder
        if decoder.failure is not None:
            return
        messages = decoder.feed(data)
        if messages:
            self.received.add(messages)
        failure = decoder.failure
        if failure is not None:
            self._end_with(lifecycle.decode_failed, failure)

    def receive_small(self, data: bytes | bytearray | memoryview, size: int) -> bool:
        """Take in ``data[:size]`` if it is one whole small ``bytes`` message; else do nothing.

        The commonest receive, a lone request or reply, at a fraction of the
        cost of :meth:`receive_data`. Returns false, having changed nothing,
        for anything else (the caller then passes the bytes to
        :meth:`receive_data`).
        """
        if self.lifecycle.reason is not None:
            return False
        message = self._decoder.feed_small(data, size)
        if message is None:
            return False
        self._heard = True
        # Received.add for one message, without its calls.
        received = self.received
        messages = received.messages
        messages.append(message)
        received.unread += len(message)
        if (
            received.unread + MESSAGE_OVERHEAD * len(messages) > received.high
            and not received.paused
        ):
            received.paused = received.paused_since_check = True
        return True

    def receive_eof(self) -> None:
        """The peer shut its side of the stream.

        Between messages this is a clean end (``PEER_CLOSED``), unless
        replies are still queued: those are flushed first (the peer may still
        read). Inside a message it is a ``PROTOCOL_ERROR``.
        """
        lifecycle = self.lifecycle
        if lifecycle.peer_eof:
            return
        failure = None
        if lifecycle.reason is None:
            try:
                self._decoder.eof()
            except IncompleteMessage as exc:
                failure = exc
        # CLOSING: the flush goes on; write_shut() picks the reason.
        sending = self.sending
        flushing = bool(sending.out or sending.backlog) or lifecycle.state is State.CLOSING
        lifecycle.receive_eof(flushing=flushing, failure=failure)
        self._after_decision()

    def connection_lost(self, exc: BaseException | None = None) -> None:
        """The transport is gone: after :attr:`should_release`, or from under us.

        Args:
            exc: the error that broke it, or ``None`` for a plain end of stream.
        """
        lifecycle = self.lifecycle
        if lifecycle.reason is None:
            if exc is not None:
                lifecycle.fail(exc)
            elif self.sending.out:
                left = self.sending.out_bytes
                lifecycle.end(
                    EndReason.RESET,
                    ConnectionResetError(f"the connection was lost with {left} bytes unsent"),
                )
            elif not lifecycle.peer_eof:
                self.receive_eof()
        lifecycle.released()
        self.sending.drop()
        self.sending.backlog = 0

    # ------------------------------------------------------------ messages out

    def next_message(self, *, handshake: bool = False) -> Message | None:
        """Take the oldest received message, or ``None`` if there is none.

        Args:
            handshake: true for the handshake's own reads, which pass the gate.

        Raises:
            NotReady: the handshake gate is still shut.
        """
        if not (self.gate_open or handshake):
            raise NotReady("the handshake has not completed")
        return self.received.take()

    # ------------------------------------------------------------ bytes out

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Ask for a clean end: no new writes; flush, then shut the stream."""
        self.lifecycle.close()

    def write_shut(self) -> None:
        """The binding shut our side of the stream after :attr:`should_shut_write`.

        It is asked to only once everything it took from
        :meth:`data_to_send` has been handed on (:meth:`set_backlog` of 0).

        Raises:
            RuntimeError: :attr:`should_shut_write` is false.
        """
        if self.lifecycle.reason is not None:
            return
        if not self.should_shut_write:
            raise RuntimeError("write_shut() before the close has flushed")
        self.lifecycle.write_shut()
        self.sending.blocked = False

    def abort(self) -> None:
        """End now, dropping what is queued; the peer sees a reset."""
        self.lifecycle.abort()
        self._after_decision()

    def close_timed_out(self) -> None:
        """The close ran out of time: end with ``TIMEOUT``, or stop waiting for the peer.

        While still flushing, the connection ends with ``TIMEOUT`` and a
        :class:`~stockings.WriteTimeout`; once flushed and shut (``WRITE_SHUT``)
        it keeps its clean reason and only stops waiting for the peer's end.
        """
        self._end_with(self.lifecycle.close_timed_out, self.queued_bytes)

    def fail(self, exc: BaseException) -> None:
        """The transport failed with ``exc``: end with the reason it stands for."""
        self._end_with(self.lifecycle.fail, exc)

    def check_idle(self, now: float) -> float | None:
        """Apply the idle rule at time ``now``; return seconds until the next check.

        Silence is counted from the last check that saw data arrive, or that
        found reading paused by our own flow control (that silence is ours,
        not the peer's). Returns ``None`` when there is nothing to check:
        no ``idle_timeout``, or the connection ended (possibly by this call,
        with ``TIMEOUT``).
        """
        idle = self.options.idle_timeout
        if idle is None or self.lifecycle.reason is not None:
            return None
        received = self.received
        if self._heard or received.paused_since_check or self._last_heard is None:
            self._heard = False
            received.paused_since_check = received.paused
            self._last_heard = now
        wait = self.lifecycle.check_idle(now, self._last_heard, idle)
        self._after_decision()
        return wait

    def open_gate(self) -> None:
        """The handshake succeeded: application messages may flow."""
        self.lifecycle.open_gate()

    def handshake_failed(self, failure: HandshakeFailed) -> None:
        """The handshake failed: end with ``HANDSHAKE_FAILED`` (or relabel the end)."""
        self._end_with(self.lifecycle.handshake_failed, failure)

    # ------------------------------------------------------------ internals

    def _end_with(self, decide: Callable[[_T], None], arg: _T) -> None:
        decide(arg)
        self._after_decision()

    def _after_decision(self) -> None:
        """Act on what the lifecycle decided: an end drops the queue and frees writers."""
        lifecycle = self.lifecycle
        if lifecycle.reason is None:
            return
        if lifecycle.state is State.ENDED:
            self.sending.drop()
        self.sending.blocked = False
