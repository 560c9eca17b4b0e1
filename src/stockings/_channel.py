"""One connection's I/O: the parts it is made of, wired to its hub, and how it ends.

The path of a message, one module each, in order (``CONTRIBUTING.md``,
"Where the code is"): a write goes into the :class:`~stockings._outbox.Outbox`,
which hands it to the kernel under its transport's rules
(:mod:`~stockings._transport`, :mod:`~stockings._tls`); the hub thread, or
a waiting reader on its own (:class:`~stockings._direct.DirectReader`),
receives through the :class:`~stockings._receiver.Receiver`, whose
:class:`~stockings._framing.Decoder` cuts whole messages out; they land in
the :class:`~stockings._inbox.Inbox`, where a read takes them.

Each part is an object of its own that holds the channel weakly, or is
handed it per call, so that a closed channel is freed at once, not by the
cyclic collector, and asks it for a few things through an ``...Owner``
protocol. Locks: the outbox's guards the outbound queue and every use of
the socket for sending (every use of a TLS object); the receiver's every
receive and the decoder; the inbox's the end state and waiting for
messages; the :class:`~stockings._interest.Interest`'s what the selector
watches. Where two are held, the receiver's is taken first. User threads
never block the hub thread for longer than one receive.

This module keeps registration with the selector, what the hub thread does
for the transport (receiving through the receiver, the end of the stream,
flushing), closing, ending and what a forked child does with its copy. How
it ends (which reason wins, when a close has flushed, what a refused write
says) is decided by its :class:`~stockings._lifecycle.Lifecycle`, the same
rules the sans-IO protocol follows; the channel performs the I/O.
"""

from __future__ import annotations

import errno
import functools
import os
import select
import selectors
import socket
import time
from threading import Lock

from ._common import (
    _LIVE,
    _NOTHING,
    _RELEASED,
)
from ._direct import DirectReader
from ._ending import Closer
from ._errors import (
    ConnectionClosed,
    EndReason,
    StockingError,
    end_reason_for,
)
from ._hub import Hub, Timer
from ._inbox import Inbox
from ._interest import Interest
from ._lifecycle import Lifecycle
from ._live import LiveSet
from ._options import ChannelOptions
from ._outbox import BURST_GAP as BURST_GAP
from ._outbox import WRITER_FLUSH_SIZE as WRITER_FLUSH_SIZE
from ._outbox import Outbox
from ._receiver import Receiver
from ._transport import PLAIN, Transport

__all__ = ["Channel"]

_EVENT_READ = selectors.EVENT_READ
_EVENT_WRITE = selectors.EVENT_WRITE


#: How long, by default, messages still queued when the interpreter exits
#: may take to flush before the connection is reset (see ``_shutdown``).
DEFAULT_LINGER = 5.0

#: Every channel of this process, so that a forked child can disown them.
_live_channels: LiveSet[Channel] = LiveSet()


class Channel:
    """The I/O engine of one connection, served by a :class:`~stockings._hub.Hub`."""

    #: Seconds queued messages may take to flush at interpreter exit; ``None``: no bound.
    linger: float | None = DEFAULT_LINGER
    #: Who is at the other end, for log records; the stocking names it.
    peer = "?"

    def __init__(
        self,
        sock: socket.socket,
        hub: Hub,
        options: ChannelOptions,
        transport: Transport = PLAIN,
        *,
        gated: bool = False,
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.hub = hub
        self.options = options
        #: How bytes cross the socket: plain, or TLS (``_tls.transport_for``).
        self.transport = transport
        # What the transport makes of the events the channel wants; None
        # for the plain one, which watches for just those.
        self._adjust_events = None if transport is PLAIN else transport.wanted_events
        #: The outbound side: ``send`` and ``send_many``, bound once by the
        #: stocking, and the queue the hub flushes.
        self.outbox = Outbox(
            sock,
            hub,
            options,
            self,
            transport.send_rules,
        )
        #: What the selector watches the socket for, under its own lock.
        self.interest = Interest(sock, hub)
        self._reads_directly = (
            hub.interest_from_any_thread
            and transport.reads_directly
            and sock.type == socket.SOCK_STREAM
            and hasattr(select, "poll")
        )
        self._reading = True  # hub thread only
        #: The read side: the messages received, the readers waiting for
        #: them, read-side flow control and readiness. Its lock guards the
        #: channel's end state too.
        self.inbox = inbox = Inbox(hub, options, self, None)
        #: Receives and decodes, under its lock (also the count of bytes in).
        self.receiver = Receiver(sock, hub, options, inbox, self, transport.reads_directly)
        #: Receives for a waiting reader on its own thread (``direct.active``
        #: while it does: the hub then neither receives nor watches for it).
        self.direct = DirectReader(sock, self.interest, options.read_spin, self)
        if self._reads_directly:
            inbox.direct = self.direct
        inbox.before_wait = self.outbox.send_held
        self._started = False
        # How the channel ends is decided by its lifecycle; the channel
        # performs the I/O. ``close()`` records its requests there with plain
        # stores, in the stretch that sets the outbox's ``closing``.
        self._lifecycle = Lifecycle(gated=gated)
        if gated:
            # Quiet until the custom handshake succeeds (``open_gate``).
            inbox.set_signal_inbox(False)
        # Set, with the outbox's ``closing``, under its lock.
        self._close_requested = False
        #: Closes and ends the channel as the lifecycle decides; its entry
        #: points are bound here once.
        self.closer = closer = Closer(self)
        self.close = closer.close
        self.on_end = closer.on_end
        self.end = self._end = closer.end
        self.end_soon = closer.end_soon
        self.abort_from_any_thread = closer.abort_from_any_thread
        self.handshake_failed = closer.handshake_failed
        self._end_as_decided = closer.end_as_decided
        self._end_of_stream = closer.end_of_stream
        self._finish_close = closer.finish
        self._drain = closer.drain
        # Idle detection (hub thread only): the timer is set only with idle_timeout.
        self._idle_timer: Timer | None = None
        # The peer half-closed and the channel stays open, to flush the replies
        # still queued (then end) or, with ``half_close``, for more.
        self._peer_eof = False
        self._orphaned = False
        if transport.handshaking:
            # Messages wait until the transport's handshake is done.
            self.outbox.hold()
        _live_channels.add(self)

        self.ended = False
        self.end_reason: EndReason | None = None
        self.end_exception: BaseException | None = None

    # ------------------------------------------------------------------ setup

    def start(self) -> None:
        """Attach to the hub; I/O begins on its thread."""
        if not self._started:
            self._started = True
            self.hub.attach(self._register, self)

    def _register(self) -> None:
        if self.ended:
            return
        idle = self.options.idle_timeout
        if idle is not None:
            self.receiver.last_receive = time.monotonic()
            self._idle_timer = self.hub.call_later(idle, self._check_idle)
        self._set_interest()
        if self.outbox.pending:
            self._flush_from_hub()
        self.transport.start(self)

    def _wanted_events(self) -> int:
        """What the selector should watch for now (the interest's lock held)."""
        reading = self._reading and not self.direct.active and not self.receiver.end_pending
        writing = self.outbox.pending
        adjust = self._adjust_events
        if adjust is None:
            # The plain transport's own answer, without the call: a direct
            # reader asks twice per message.
            return (_EVENT_READ if reading else 0) | (_EVENT_WRITE if writing else 0)
        return adjust(self, reading, writing)

    def _set_interest(self) -> None:
        interest = self.interest
        with interest.lock:
            if interest.state == _RELEASED:
                return
            interest.state = _LIVE
            interest.apply(self._wanted_events(), self)

    # ------------------------------------------------------------- hub thread

    def handle_events(self, mask: int) -> None:
        """Act on the socket's readiness (hub thread); never raises."""
        try:
            self.transport.handle_events(self, mask)
        except Exception as exc:
            # Anything unforeseen ends this connection, reported, and spares the others.
            self._end(EndReason.ERROR, exc)

    def hub_failed(self, exc: BaseException) -> None:
        """The loop broke under us; record why, as a connection error."""
        self.interest.forget()
        self._end(EndReason.ERROR, exc)

    def _receive(self) -> bool:
        """Receive once (hub thread); return True if the socket may have more to give.

        That is, if the receive filled all the room it offered: a stream
        socket gives what it holds up to that, so one that gave less is
        (for now) empty, and asking again would only cost a failed call.
        """
        receiver = self.receiver
        with receiver.lock:
            if self.direct.active or receiver.end_pending:
                # A reader receives for itself now; this readiness is its.
                return False
            return receiver.receive(self.hub.recv_view, False) > _NOTHING and receiver.filled

    def _may_read_directly(self) -> bool:
        """Whether a direct reader may receive now (the receiver's lock held)."""
        return self._reading and not self._peer_eof and not self.ended and not self._close_requested

    def _may_take_over(self) -> bool:
        """As :meth:`_may_read_directly`, and between messages (the receiver's lock held)."""
        # Spelt out: one call, on the way of every direct read.
        receiver = self.receiver
        return (
            receiver.assembly is None
            and not receiver.decoder.in_progress
            and self._reading
            and not self._peer_eof
            and not self.ended
            and not self._close_requested
        )

    def _pause_reading(self, direct: bool) -> None:
        """The inbox is over its high-water mark: stop reading (the receiving thread)."""
        if not self._reading:
            return
        if direct:
            # ``_reading`` is the hub thread's to change.
            self.hub.call_soon(self._pause_reading_from_hub)
            return
        # Stop reading: the kernel buffer fills and TCP pushes back on the sender.
        self._reading = False
        self._set_interest()

    def _pause_reading_from_hub(self) -> None:
        inbox = self.inbox
        with inbox.lock:
            paused = inbox.paused
        if paused and self._reading and not self.ended:
            self._reading = False
            self._set_interest()

    def _resume_reading(self) -> None:
        if self.ended or self._reading:
            return
        inbox = self.inbox
        with inbox.lock:
            if inbox.paused:
                return
        self._reading = True
        if self._idle_timer is not None:
            # The pause was ours: the peer's silence is counted from now.
            self.receiver.last_receive = time.monotonic()
        self._set_interest()
        self.transport.resumed(self)

    def _flush_from_hub(self) -> None:
        if self.ended:
            return
        outbox = self.outbox
        with outbox.lock:
            error = outbox.flush()
            # Judged under the lock: a write may queue a message once it is
            # released, but not after close() has marked the queue closing,
            # so only "empty and closing" seen together means empty for good
            # (the lifecycle is closing only once the outbox is). An abort's
            # own call ends it as ABORTED; a flush it overtook must not close
            # it cleanly first.
            done = self._lifecycle.may_shut(outbox.pending)
        if error is not None:
            self._end(end_reason_for(error), error)
            return
        self._set_interest()
        if done:
            self._finish_close()

    def _check_idle(self) -> None:
        """The idle timer fired (hub thread): end the channel if the peer stayed silent."""
        idle = self.options.idle_timeout
        if self.ended or idle is None:
            return
        now = time.monotonic()
        if not self._reading:
            # We stopped reading ourselves (flow control, a final flush): the
            # silence is ours, not the peer's.
            self.receiver.last_receive = now
        lifecycle = self._lifecycle
        wait = lifecycle.check_idle(now, self.receiver.last_receive, idle)
        if wait is not None:
            self._idle_timer = self.hub.call_later(wait, self._check_idle)
        elif lifecycle.ended:
            self._end_as_decided()

    def _closed_error(self) -> ConnectionClosed:
        """What a write refused by a closing or ended channel raises (for the outbox)."""
        return self._lifecycle.closed_error()

    # ------------------------------------------------------ for other layers
    # What the stocking, its handshake thread and the interpreter-exit hooks
    # (``_shutdown``) may ask of a channel, so that none reaches into its state.
    # Writing, and what was written, they ask of ``outbox``.

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has attached the channel to its hub."""
        return self._started

    def open_gate(self) -> None:
        """The custom handshake succeeded: readiness follows the inbox; ends are not its failure."""
        self._lifecycle.open_gate()
        self.inbox.set_signal_inbox(True)

    @property
    def close_requested(self) -> bool:
        """Whether :meth:`close` was called; the end may still be on its way."""
        return self._close_requested

    @property
    def has_unsent(self) -> bool:
        """Whether anything written is still queued, not yet handed to the kernel."""
        return self.outbox.pending

    @property
    def peer_closed(self) -> bool:
        """Whether the peer closed its side cleanly; with ``half_close`` the channel stays open."""
        return self._peer_eof or self.end_reason is EndReason.PEER_CLOSED

    def check_orphaned(self) -> None:
        """End the channel if its socket was closed behind its back (the inbox's lock held)."""
        if self._started and not self.ended and self.sock.fileno() < 0 and not self._orphaned:
            self._orphaned = True
            error = OSError(errno.EBADF, "the socket was closed outside the stocking")
            self.hub.call_soon(functools.partial(self._end, EndReason.ERROR, error))

    def _disown_after_fork(self, parent: int) -> None:
        """In a forked child: end this copy without touching the parent's connection.

        The child has no hub thread, its locks may have been copied while
        held, and its socket and ``fileno()`` descriptors share their open
        files with the parent. So the copy gets fresh locks, drops its queues
        (reading the parent's messages twice would be worse than not at all),
        closes only its own descriptors (no shutdown, which would reach the
        peer) and reads as ended.
        """
        self.outbox.disown()
        inbox = self.inbox
        inbox.disown()
        inbox.no_more = True
        self.receiver.lock = Lock()
        self.interest.lock = Lock()
        self.direct.disown()
        self._close_requested = True
        self.closer.disown()
        self._idle_timer = None
        try:
            self.sock.close()
        except OSError:
            pass
        if not self.ended:
            lifecycle = self._lifecycle
            lifecycle.end(
                EndReason.ERROR,
                StockingError(
                    f"this stocking belongs to process {parent}; a forked child cannot use it"
                ),
            )
            self.end_reason, self.end_exception = lifecycle.released()
            self.ended = inbox.ended = True


def _disown_all_after_fork() -> None:
    parent = os.getppid()
    for channel in list(_live_channels):
        channel._disown_after_fork(parent)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_disown_all_after_fork)
