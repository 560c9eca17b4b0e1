"""Closing and ending one channel: the lifecycle's decisions, carried out.

How a connection ends (which reason wins, when a close has flushed, what a
refused write says) is decided by its sans-IO
:class:`~stockings._lifecycle.Lifecycle`. A :class:`Closer` carries that
out for a threaded channel:

- ``close()`` (any thread) records the request with plain stores, in the
  stretch that closes the outbox to new writes, wakes whoever waits, posts
  the close to the hub thread and waits for the end;
- the peer's end of the stream: flush the replies already written, then
  end, or stay half open (``half_close``);
- on the hub thread each step of a close is taken once: flush what is
  queued (bounded by the close timeout), shut the write side through the
  transport, take in what already arrived, end;
- the end itself releases the socket from the selector, closes it (with a
  reset when the stream was cut short), drops what is still queued,
  publishes the end under the inbox's lock, wakes every waiter, cancels
  the timers and calls the end callbacks.

The closer holds its channel weakly, so the two make no reference cycle.
What it posts to the hub thread holds the channel itself: a channel that
is being ended stays alive until it has ended.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._common import _report
from ._errors import EndReason, HandshakeFailed
from ._hub import Timer
from ._log import log_connection_end
from ._sockopts import reset_on_close
from ._timeouts import bounded
from ._transport import CLOSE_DRAIN_ROUNDS

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from ._channel import Channel

__all__ = ["Closer"]


class Closer:
    """Closes and ends one :class:`~stockings._channel.Channel`."""

    __slots__ = ("_begun", "_channel", "_finishing", "_on_end", "_timer", "posted")

    def __init__(self, channel: Channel) -> None:
        self._channel: weakref.ref[Channel] = weakref.ref(channel)
        #: Whether close() has asked the hub to end the channel; set once it
        #: has, so that a close() interrupted before that asks again.
        self.posted = False
        # Hub thread only: each step of a close is taken once.
        self._begun = False
        self._finishing = False
        self._timer: Timer | None = None
        # Called once the channel has ended (the inbox's lock guards the list).
        self._on_end: list[Callable[[], None]] = []

    # ------------------------------------------------------------ any thread

    def close(self, flush: bool = True, timeout: float | None = None) -> None:
        """End the channel; with ``flush``, send what is queued first.

        Waits for the end unless called on the hub thread. ``timeout`` bounds
        the flush; when it runs out the channel ends with ``EndReason.TIMEOUT``.
        """
        # Judged before anything changes: a close refused for its timeout
        # has done nothing.
        timeout = bounded(timeout)
        channel = self._channel()
        if channel is None or channel.ended:
            return
        outbox = channel.outbox
        inbox = channel.inbox
        lifecycle = channel._lifecycle
        with outbox.lock:
            # Requests only, recorded without a call: the hub decides on them.
            channel._close_requested = True
            # Read under the inbox's lock, woken below: no read waits now.
            inbox.no_more = True
            lifecycle.close_requested = True
            outbox.closing = True
            if not flush:
                # A write that gives up now says the stocking was aborted.
                lifecycle.abort_requested = True
            # A write blocked at the high-water mark gives up now: its
            # message was not written before close(), so it is not flushed.
            outbox.wake_writers()
        with inbox.lock:
            # So does a read waiting for a message: we are done reading.
            inbox.wake_readers()
        with channel.interest.lock:
            direct = channel.direct
            if direct.active and direct.wake is not None:
                direct.wake.set()
        hub = channel.hub
        aborting = functools.partial(self._end, channel, EndReason.ABORTED, None)
        if not self.posted and channel.started:
            # Posted, then marked: a close() interrupted in between posts
            # again when called again (the hub ends a channel only once).
            if flush:
                hub.call_soon(functools.partial(self._begin, channel, timeout))
            else:
                hub.call_soon(aborting)
            self.posted = True
        elif not channel.started:
            self._end_unstarted(channel, EndReason.CLOSED if flush else EndReason.ABORTED)
        elif not flush:
            hub.call_soon(aborting)
        if not hub.in_hub_thread():
            grace = None if timeout is None else timeout + 1.0
            inbox.wait_ended(grace)

    def on_end(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the hub thread) once the channel has ended."""
        channel = self._channel()
        if channel is not None:
            with channel.inbox.lock:
                if not channel.ended:
                    self._on_end.append(callback)
                    return
        callback()

    def end_soon(self, reason: EndReason, exc: BaseException | None = None) -> None:
        """Have the hub thread end the channel with ``reason`` and ``exc`` (any thread)."""
        channel = self._channel()
        if channel is not None:
            channel.hub.call_soon(functools.partial(self._end, channel, reason, exc))

    def abort_from_any_thread(self) -> None:
        """Abort the connection, from any thread, at any moment, taking no lock.

        For a garbage collector's callback, which may run while its thread
        holds any lock (the channel's, the hub's): the abort is left to the
        hub thread (``EndReason.ABORTED``).
        """
        channel = self._channel()
        if channel is None:  # pragma: no cover - the caller holds the channel
            return
        if channel.started:
            channel.hub.call_soon_unlocked(
                functools.partial(self._end, channel, EndReason.ABORTED, None)
            )
        else:  # pragma: no cover - made but never started: no hub involved yet
            self._end_unstarted(channel, EndReason.ABORTED)

    def handshake_failed(self, failure: HandshakeFailed) -> None:
        """The custom handshake failed (on its own thread): end, and say why; wait for the end.

        The lifecycle decides what the end says: ``HANDSHAKE_FAILED`` with
        ``failure``, or, when the connection ended under the handshake,
        ``failure`` explains that end; a close or an abort stays what it is.
        """
        channel = self._channel()
        if channel is None:  # pragma: no cover - the caller holds the channel
            return
        lifecycle = channel._lifecycle
        if not channel.ended:
            # A close asked for first is likely why the handshake failed:
            # it ends the channel, and says so.
            if not (lifecycle.close_requested or lifecycle.abort_requested):
                self.end_soon(EndReason.HANDSHAKE_FAILED, failure)
            channel.inbox.wait_ended(None)
        with channel.inbox.lock:
            lifecycle.handshake_failed(failure)
            channel.end_exception = lifecycle.exception

    # ------------------------------------------------------------ hub thread

    def end_of_stream(self) -> None:
        """The peer closed its side (hub thread): flush, then end or stay half open."""
        channel = self._channel()
        if channel is None:  # pragma: no cover - the hub holds its channel
            return
        # A half-closing peer may still read: hand it what the kernel takes now.
        outbox = channel.outbox
        inbox = channel.inbox
        with outbox.lock:
            error = outbox.send_now()
            pending = outbox.pending
            keep_open = channel.options.half_close
            if not keep_open:
                # Replies written before the peer's FIN still reach it; one
                # written from now on would be dropped by the end, so it is
                # refused instead: take no new writes, flush, end.
                outbox.closing = True
            if (pending or keep_open) and error is None:
                channel._peer_eof = True
                # Nothing more will arrive: a waiting read returns None now.
                inbox.no_more = True
                inbox.half_closed = keep_open
        failure = None
        try:
            channel.receiver.eof()
        except Exception as exc:
            failure = exc
        lifecycle = channel._lifecycle
        lifecycle.receive_eof(
            flushing=pending and error is None,
            half_close=keep_open and error is None,
            failure=failure,
        )
        if lifecycle.reason is not None:
            self.end_as_decided()
            return
        if not channel.ended:
            channel._reading = False
            channel._set_interest()
            with inbox.lock:
                if keep_open:
                    # Kept open for replies: a waiting loop must hear of the
                    # peer's close as it would of an end.
                    inbox.announce()
                else:
                    inbox.wake_readers()

    def _begin(self, channel: Channel, timeout: float | None) -> None:
        if channel.ended or self._begun:
            # A close() interrupted after posting this posts it again.
            return
        self._begun = True
        outbox = channel.outbox
        if channel.transport.handshaking and outbox.queued_bytes == 0:
            # Nothing was written: no need to wait for a handshake to end it.
            self._end(channel, EndReason.CLOSED)
            return
        channel._lifecycle.close()
        if not outbox.pending:
            self.finish()
            return
        if timeout is not None:
            self._timer = channel.hub.call_later(
                timeout, functools.partial(self._timed_out, channel)
            )
        channel._flush_from_hub()

    def _timed_out(self, channel: Channel) -> None:
        lifecycle = channel._lifecycle
        lifecycle.close_timed_out(channel.outbox.queued_bytes)
        if lifecycle.ended:
            self.end_as_decided()

    def finish(self) -> None:
        """Everything written is out: have the transport shut the write side and end."""
        channel = self._channel()
        if channel is None or self._finishing or channel.ended:
            # Both the flush that emptied the queue and the close step may get here.
            return
        self._finishing = True
        channel.transport.finish_close(channel)

    def drain(self, receive: Callable[[], bool]) -> None:
        """Take in what already arrived, our write side shut, before the socket is closed.

        So that closing with unread bytes in the kernel does not turn our FIN
        into a reset that the peer might see before our last messages.
        """
        channel = self._channel()
        if channel is None:  # pragma: no cover - the hub holds its channel
            return
        for _ in range(CLOSE_DRAIN_ROUNDS):
            if channel.ended or channel._peer_eof or not receive():
                break

    def end_as_decided(self) -> None:
        """End the channel as its lifecycle decided, if it has."""
        channel = self._channel()
        if channel is not None:
            lifecycle = channel._lifecycle
            if lifecycle.reason is not None:
                # Through the channel, where a test may hold the hub just before.
                channel._end(lifecycle.reason, lifecycle.exception)

    def end(self, reason: EndReason, exc: BaseException | None = None) -> None:
        """End the channel now (hub thread): release the socket, wake every waiter.

        With ``reason`` and ``exc``, unless the lifecycle decided the end already.
        """
        channel = self._channel()
        if channel is not None:
            self._end(channel, reason, exc)

    def _end(self, channel: Channel, reason: EndReason, exc: BaseException | None = None) -> None:
        if channel.ended:
            return
        lifecycle = channel._lifecycle
        lifecycle.end(reason, exc)
        reason, exc = lifecycle.released()
        interest = channel.interest
        with interest.lock:
            interest.release()
            channel.direct.stop()
        outbox = channel.outbox
        sock = channel.sock
        with outbox.lock:
            outbox.closing = True
            if lifecycle.should_reset(outbox.pending):
                reset_on_close(sock)
            sock.close()
            outbox.discard()
        inbox = channel.inbox
        with inbox.lock:
            channel.ended = inbox.ended = True
            channel.end_reason = reason
            channel.end_exception = exc
            callbacks, self._on_end = self._on_end, []
            inbox.announce()
        if self._timer is not None:
            self._timer.cancel()
        if channel._idle_timer is not None:
            channel._idle_timer.cancel()
            channel._idle_timer = None
        channel.hub.detach(channel)
        log_connection_end(
            channel.peer,
            reason,
            exc,
            (inbox.messages_received, channel.receiver.bytes_received),
            (outbox.messages_sent, outbox.bytes_sent),
        )
        for callback in callbacks:
            try:
                callback()
            except Exception as cb_exc:  # pragma: no cover - our own callbacks
                _report(cb_exc)

    def _end_unstarted(self, channel: Channel, reason: EndReason) -> None:
        # Decided before the stretch below: a close() interrupted in between
        # ends it again, as decided.
        lifecycle = channel._lifecycle
        lifecycle.end(reason)
        reason, _ = lifecycle.released()
        channel.sock.close()
        inbox = channel.inbox
        with inbox.lock:
            channel.ended = inbox.ended = True
            channel.end_reason = reason
            inbox.wake_readers()

    def disown(self) -> None:
        """In a forked child: no end callbacks, no timer."""
        self._on_end = []
        self._timer = None
