"""How a connection ends, sans I/O: its states, which end reason wins, and why writes are refused.

:class:`Lifecycle` knows no sockets, threads, clocks or queues. Both I/O
engines keep one per connection and ask it every lifecycle question: the
sans-IO :class:`~stockings._protocol.Protocol` (behind the asyncio binding)
and the threaded :class:`~stockings._channel.Channel`. They tell it what
happened (a close or an abort asked for, the peer's end of stream, a
transport error, a broken wire format, a timer running out, our side shut),
with the facts it cannot know (whether anything is still unsent), and act
on what it decided.

The states are ``OPEN -> CLOSING -> WRITE_SHUT -> ENDED``; any state may
jump to ``ENDED``. ``CLOSING`` takes no new writes: a close was asked for
here, or the peer ended its side while replies were still queued (they are
flushed, then the end is ``PEER_CLOSED``). At ``WRITE_SHUT`` everything was
flushed and our side shut: the clean reason is decided, and what happens
after (the peer's reset, a timer) cannot change it. The first reason decided
is the one the connection ends with.
"""

from __future__ import annotations

import enum

from ._errors import (
    ConnectionClosed,
    EndReason,
    HandshakeFailed,
    MessageTooLarge,
    WriteTimeout,
    end_reason_for,
)

__all__ = ["Lifecycle", "State", "failure_reason"]

# Ends that are nobody's handshake failure, even before the gate opened.
_NOT_HANDSHAKE_ENDS = (EndReason.CLOSED, EndReason.ABORTED, EndReason.HANDSHAKE_FAILED)


class State(enum.Enum):
    """Where a connection is in its life."""

    #: Messages flow both ways.
    OPEN = "open"
    #: No new writes; what is queued is being flushed.
    CLOSING = "closing"
    #: Everything was flushed and our side of the stream shut; the end is decided.
    WRITE_SHUT = "write-shut"
    #: Over; ``reason`` says why.
    ENDED = "ended"


def failure_reason(failure: BaseException) -> EndReason:
    """The end reason for a break of the wire format found while decoding."""
    if isinstance(failure, MessageTooLarge):
        return EndReason.MESSAGE_TOO_LARGE
    return EndReason.PROTOCOL_ERROR


class Lifecycle:
    """The lifecycle rules of one connection.

    Args:
        gated: true when a handshake must succeed first: an end before
            :meth:`open_gate` (but a close or an abort) is the handshake's
            failure, ``HANDSHAKE_FAILED``.

    The facts it keeps are plain attributes, so that an engine may record a
    request (``close_requested``, ``abort_requested``) in a stretch of code
    that must make no call, and have it decided on later.
    """

    def __init__(self, *, gated: bool = False) -> None:
        self.state = State.OPEN
        #: The end reason, once decided (at ``WRITE_SHUT`` or ``ENDED``).
        self.reason: EndReason | None = None
        #: The exception behind the end, if any, once decided.
        self.exception: BaseException | None = None
        #: True once a flushing close was asked for here.
        self.close_requested = False
        #: True once an abort (a close without flushing) was asked for here.
        self.abort_requested = False
        #: True once the peer has ended its side of the stream.
        self.peer_eof = False
        #: False while the handshake gate is shut.
        self.gate_open = not gated
        # The end that cut a handshake short, until the handshake says how.
        self._relabelled = False

    # ------------------------------------------------------------ questions

    @property
    def ended(self) -> bool:
        """True once the connection is over."""
        return self.state is State.ENDED

    @property
    def clean_reason(self) -> EndReason:
        """The reason of a clean end now: ours if we asked to close, else the peer's."""
        return EndReason.CLOSED if self.close_requested else EndReason.PEER_CLOSED

    def may_shut(self, unsent: bool) -> bool:
        """Whether a close has flushed, so that our side may be shut now.

        Args:
            unsent: whether anything written is still queued, anywhere.
        """
        return (
            self.state is State.CLOSING
            and not unsent
            and not self.abort_requested
            and self.reason is None
        )

    def should_reset(self, unsent: bool = False) -> bool:
        """Whether the transport should be closed with a reset rather than a FIN.

        So it is after an abort, and when an end leaves bytes unsent: the
        peer must not mistake a stream cut short (perhaps inside a message)
        for a clean close.
        """
        return self.reason is EndReason.ABORTED or (unsent and self.state is State.ENDED)

    def closed_error(self) -> ConnectionClosed:
        """What a write refused by a closing or ended connection raises."""
        reason = self.reason
        if self.state is State.ENDED and reason is not None:
            error = ConnectionClosed(f"the stocking has ended: {reason.value}", reason)
            error.__cause__ = self.exception
            return error
        if self.abort_requested:
            return ConnectionClosed("the stocking was aborted", EndReason.ABORTED)
        if self.peer_eof and not self.close_requested:
            return ConnectionClosed(
                "the peer closed its side; flushing the last replies", EndReason.PEER_CLOSED
            )
        return ConnectionClosed("the stocking is closing", EndReason.CLOSED)

    # ------------------------------------------------------------ events

    def close(self) -> None:
        """A clean end was asked for: no new writes; flush, then shut."""
        if self.reason is not None:
            return
        self.close_requested = True
        if self.state is State.OPEN:
            self.state = State.CLOSING

    def abort(self) -> None:
        """End now, dropping what is queued (``ABORTED``); the peer sees a reset."""
        if self.reason is None:
            self.abort_requested = True
            self.end(EndReason.ABORTED)

    def receive_eof(
        self, *, flushing: bool, half_close: bool = False, failure: BaseException | None = None
    ) -> None:
        """The peer ended its side of the stream.

        Args:
            flushing: whether our side still has writes to flush or shut
                before it can end; those go on (the peer may still read),
                and the end is decided when they are done.
            half_close: whether the connection stays open for writing when
                the peer has ended its side.
            failure: what the decoder found wrong with an end inside a
                message: a ``PROTOCOL_ERROR``.
        """
        if self.peer_eof:
            return
        self.peer_eof = True
        if self.reason is not None:
            return
        if failure is not None:
            self.end(EndReason.PROTOCOL_ERROR, failure)
        elif half_close:
            pass
        elif flushing:
            if self.state is State.OPEN:
                self.state = State.CLOSING
        else:
            self.end(self.clean_reason)

    def write_shut(self) -> None:
        """A close flushed and our side is shut: decide its clean reason.

        Raises:
            RuntimeError: no close was under way (the state is not ``CLOSING``).
        """
        if self.reason is not None:
            return
        if self.state is not State.CLOSING:
            raise RuntimeError("write_shut() without a close under way")
        # A peer that half-closed first, whose replies we flushed, closed it.
        self._decide(self.clean_reason, None, State.WRITE_SHUT)

    def decode_failed(self, failure: BaseException) -> None:
        """The peer broke the wire format: ``PROTOCOL_ERROR`` or ``MESSAGE_TOO_LARGE``."""
        self.end(failure_reason(failure), failure)

    def fail(self, exc: BaseException) -> None:
        """The transport failed with ``exc``: end with the reason it stands for."""
        self.end(end_reason_for(exc), exc)

    def close_timed_out(self, unsent: int) -> None:
        """The close ran out of time, with ``unsent`` bytes still queued.

        While still flushing, the connection ends with ``TIMEOUT`` and a
        :class:`~stockings.WriteTimeout`; once flushed and shut
        (``WRITE_SHUT``) it keeps its clean reason and only stops waiting for
        the peer's end.
        """
        if self.state is State.WRITE_SHUT:
            self.state = State.ENDED
        elif self.reason is None:
            self.end(
                EndReason.TIMEOUT,
                WriteTimeout(f"close() gave up flushing with {unsent} bytes still unsent"),
            )

    def check_idle(self, now: float, last_heard: float, idle: float) -> float | None:
        """Apply the idle rule: silent since ``last_heard`` for ``idle`` seconds ends it.

        Returns:
            Seconds until the next check, or ``None`` when there is none to
            make: the end is decided (possibly by this call, with ``TIMEOUT``).
        """
        if self.reason is not None:
            return None
        silent = now - last_heard
        if silent >= idle:
            self.end(
                EndReason.TIMEOUT,
                TimeoutError(f"nothing received from the peer for {silent:.3g} s"),
            )
            return None
        return idle - silent

    def end(self, reason: EndReason, exc: BaseException | None = None) -> None:
        """End with ``reason`` and ``exc``, unless a reason was decided already."""
        if self.reason is None:
            self._decide(reason, exc, State.ENDED)

    def released(self) -> tuple[EndReason, BaseException | None]:
        """The transport is gone: the connection has ended; return its reason and exception.

        An end nobody decided is a clean one (see :attr:`clean_reason`).
        """
        if self.reason is None:
            self._decide(self.clean_reason, None, State.ENDED)
        self.state = State.ENDED
        reason = self.reason
        assert reason is not None
        return reason, self.exception

    # ------------------------------------------------------------ handshake gate

    def open_gate(self) -> None:
        """The handshake succeeded: application messages may flow."""
        self.gate_open = True

    def handshake_failed(self, failure: HandshakeFailed) -> None:
        """The handshake failed: end with ``HANDSHAKE_FAILED`` (or relabel the end)."""
        if self.reason is None:
            self.end(EndReason.HANDSHAKE_FAILED, failure)
        elif self._relabelled:
            # The handshake says precisely what the end during it broke.
            if failure.__cause__ is None and failure.__context__ is None:
                failure.__context__ = self.exception
            self._relabelled = False
            self.exception = failure

    # ------------------------------------------------------------ internals

    def _decide(self, reason: EndReason, exc: BaseException | None, state: State) -> None:
        if not self.gate_open and reason not in _NOT_HANDSHAKE_ENDS:
            # The connection never became usable: the handshake is what failed.
            failure = HandshakeFailed(f"the connection ended during the handshake ({reason.value})")
            failure.__cause__ = exc
            self._relabelled = True
            reason, exc = EndReason.HANDSHAKE_FAILED, failure
        self.reason = reason
        self.exception = exc
        self.state = state
