"""One connection's I/O: its socket, decoder, outbound queue and inbox.

The path of a message: ``outbox.send`` (any thread) encodes it and either
hands it straight to the socket, when nothing is queued ahead of it and the
last send was not a moment ago, or appends it to the outbound queue (small
messages into one batch buffer at its tail), which the writer sends itself
every ``WRITER_FLUSH_SIZE`` bytes and the hub thread flushes in as few
``sendmsg`` calls as the kernel allows. The hub thread receives into its
shared buffer, the :class:`~stockings._framing.Decoder` cuts whole messages
out (a large ``bytes`` payload is received into a reused buffer of its own
instead), and they land in the inbox, where ``receive`` (any thread) takes
them. A reader that finds the inbox empty and the socket idle receives for
itself instead (``_read_directly``): the message then costs one thread
wake-up, not two.

Locks: the outbox's ``lock`` guards the outbound queue and every use of
the socket for sending; ``_recv_lock`` every receive and the decoder;
``_in_lock`` the end state and waiting for the inbox, which a reader with a
message waiting pops without it; ``_interest_lock`` what the selector
watches the socket for. Only the hub thread touches the selector, but for
a direct reader changing its own socket's interest on an epoll hub. Where
two are held, ``_recv_lock`` is taken first. User threads never block the
hub thread for longer than one receive.

:class:`Channel` is put together from parts. The outbound side is an object
of its own, :class:`~stockings._outbox.Outbox` (the outbound queue, its lock,
write-side flow control, sending from writers' threads and for the hub),
which the channel makes and drives through a few methods, and which calls
back through three (``OutboxOwner``). The read side is still two mixins sharing the
channel's state (set up, and its locks explained, in ``Channel.__init__``):
``_inbox`` (the inbox and its readers, read-side flow control, readiness)
and ``_direct`` (a waiting reader receiving on its own thread). This module
keeps registration with the selector, everything the hub thread does
(receiving, assembling large payloads, the end of the stream, flushing),
closing, ending and what a forked child does with its copy. How it ends
(which reason wins, when a close has flushed, what a refused write says) is
not decided here but by its :class:`~stockings._lifecycle.Lifecycle`, the
same rules the sans-IO protocol follows; the channel performs the I/O.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import select
import selectors
import socket
import ssl
import struct
import time
import weakref
from collections import deque
from collections.abc import Callable
from threading import Lock

from ._buffers import ASSEMBLE_AHEAD, Assembly
from ._common import (
    _DELIVERED,
    _LIVE,
    _NOTHING,
    _PARTIAL,
    _RELEASED,
    _STOPPED,
    _UNREGISTERED,
    LARGE_PAYLOAD,
    _report,
)
from ._direct import _MAY_SPIN, SPIN_BACKOFF_FIRST, DirectReadMixin
from ._epoll import EpollSelector
from ._errors import (
    ConnectionClosed,
    EndReason,
    IncompleteMessage,
    StockingError,
    end_reason_for,
)
from ._framing import BytesLike, Decoder, Message
from ._hub import Hub, Timer
from ._inbox import InboxMixin
from ._lifecycle import Lifecycle
from ._lifecycle import failure_reason as _failure_reason
from ._log import connection_log
from ._options import ChannelOptions
from ._outbox import BURST_GAP as BURST_GAP
from ._outbox import PLAIN_RULES, Outbox, SendRules
from ._outbox import WRITER_FLUSH_SIZE as WRITER_FLUSH_SIZE
from ._signal import ReadySignal
from ._sync import LazyCondition

__all__ = ["Channel"]

#: The most one ``recv`` of a large payload asks for.
MAX_RECV_CHUNK = 4 * 1024 * 1024

#: The most receives one readiness event of the socket leads to.
RECEIVES_PER_WAKE = 8
_EVENT_READ = selectors.EVENT_READ
_EVENT_WRITE = selectors.EVENT_WRITE
#: ``SO_LINGER`` on, zero seconds: ``close()`` sends RST.
_LINGER_RESET = struct.pack("ii", 1, 0)
_TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)
# Ends the peer caused by breaking the wire format: worth an operator's notice.
_PEERS_FAULTS = frozenset({EndReason.PROTOCOL_ERROR, EndReason.MESSAGE_TOO_LARGE})

#: How long, by default, messages still queued when the interpreter exits
#: may take to flush before the connection is reset (see ``_shutdown``).
DEFAULT_LINGER = 5.0

#: Every channel of this process, so that a forked child can disown them.
_live_channels: weakref.WeakSet[Channel] = weakref.WeakSet()


class Channel(InboxMixin, DirectReadMixin):
    """The I/O engine of one connection, served by a :class:`~stockings._hub.Hub`."""

    #: Whether a reader waiting for a message may receive it on its own
    #: thread (see ``_read_directly``); subclasses with their own receive
    #: path turn it off.
    _reads_directly = True
    #: Seconds queued messages may take to flush at interpreter exit; ``None``: no bound.
    linger: float | None = DEFAULT_LINGER
    #: Who is at the other end, for log records; the stocking names it.
    peer = "?"
    #: How the outbox may use the socket; a TLS channel has its own.
    _send_rules: SendRules = PLAIN_RULES

    def __init__(self, sock: socket.socket, hub: Hub, options: ChannelOptions) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.hub = hub
        self.options = options
        self.decoder = Decoder(options.max_message_size)
        #: The outbound side: ``send`` and ``send_many``, bound once by the
        #: stocking, and the queue the hub flushes.
        self.outbox = Outbox(
            sock,
            hub,
            options,
            self,
            self._send_rules,
        )
        self._events = 0  # what the selector watches for (``_interest_lock``)
        # The descriptor registered with an EpollSelector, which keeps it
        # registered while it watches it for nothing; -1 when not.
        self._watched_fd = -1
        self._interest_state = _UNREGISTERED
        self._interest_lock = Lock()
        # Held by whoever receives and decodes: the hub thread, or a reader
        # receiving for itself (see ``_read_directly``).
        self._recv_lock = Lock()
        self._direct_reader = False  # ``_recv_lock`` and ``_interest_lock``
        # A reader met a fault and asked the hub to end the channel: nobody
        # receives meanwhile, lest the hub meet it again as something else.
        self._end_pending = False  # ``_recv_lock``
        # Whether the last receive filled all the room it offered (``_recv_lock``).
        self._filled = False
        self._direct_wake: ReadySignal | None = None
        # How long a direct reader checks the socket before it sleeps, and
        # its back-off (the direct reader's own: one at a time).
        self._spin = options.read_spin if _MAY_SPIN else 0.0
        self._spin_skip = 0
        self._spin_backoff = SPIN_BACKOFF_FIRST
        self._direct_poller: select.poll | None = None
        self._reads_directly = (
            hub.interest_from_any_thread
            and self._reads_directly
            and sock.type == socket.SOCK_STREAM
            and hasattr(select, "poll")
            and not isinstance(sock, ssl.SSLSocket)
        )
        self._reading = True  # hub thread only
        self._started = False

        # A large payload being received into a buffer of its own (hub thread).
        self._assembly: Assembly | None = None
        self._spare_buffers: deque[bytearray] = deque()
        # What came in, for anyone to read at any time: messages delivered
        # and bytes of the message stream (headers included, TLS excluded)
        # the kernel gave; the outbox counts what went out. Each is changed
        # by one thread at a time, in the same step as the state it counts.
        self.messages_received = 0
        self.bytes_received = 0
        # How the channel ends is decided by its lifecycle; the channel
        # performs the I/O. ``close()`` records its requests there with plain
        # stores, in the stretch that sets the outbox's ``closing``.
        self._lifecycle = Lifecycle()
        # Set, with the lifecycle's, under the outbox's lock: readers look at
        # it without a call.
        self._close_requested = False
        # Whether close() has asked the hub to end the channel; set once it
        # has, so a close() interrupted before that asks again.
        self._close_posted = False
        # Hub thread only: each step of a close is taken once.
        self._close_begun = False
        self._close_finishing = False
        self._close_timer: Timer | None = None
        # Idle detection (hub thread only): the timer is set only with idle_timeout.
        self._idle_timer: Timer | None = None
        self._last_receive = 0.0
        # The peer half-closed and the channel stays open, to flush the replies
        # still queued (then end) or, with ``half_close``, for more.
        self._peer_eof = False
        self._orphaned = False
        _live_channels.add(self)

        self._in_lock = Lock()
        self._arrived = LazyCondition(self._in_lock)
        # Messages, and large payloads the reader turns into bytes (Assembly).
        self.inbox: deque[Message | Assembly] = deque()
        # Unread bytes are delivered minus consumed: the hub thread adds to
        # the one, readers to the other, so a read takes no lock. Readers
        # racing each other may lose an addition, which can only overstate
        # what is unread; the hub counts exactly before it pauses reading.
        self._delivered = 0
        self._consumed = 0
        # How many times messages were put in the inbox: a reader that was
        # interrupted after receiving tells by it whether they got there.
        self._deliveries = 0
        # The hub must watch the socket for reading again, and a direct
        # reader interrupted while handing it back may not have made it so.
        self._interest_stale = False
        # The size of the last message delivered: the next is likely alike.
        self._last_size = 0
        self._read_paused = False
        self._readers_waiting = 0
        self._signal: ReadySignal | None = None
        #: Whether ``fileno()`` readiness reflects the inbox yet (not during a handshake).
        self._signal_inbox = True
        #: Called (under ``_in_lock``) whenever the channel may have become
        #: ready; see :meth:`watch`. ``None`` while nobody watches, to stay small.
        self._watchers: list[Callable[[], None]] | None = None
        self._on_end: list[Callable[[], None]] = []

        self.ended = False
        self.end_reason: EndReason | None = None
        self.end_exception: BaseException | None = None

    # ------------------------------------------------------------------ setup

    def start(self) -> None:
        """Attach to the hub; I/O begins on its thread."""
        if not self._started:
            self._started = True
            self.hub.attach(self._register, self)

    def on_end(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the hub thread) once the channel has ended."""
        with self._in_lock:
            if not self.ended:
                self._on_end.append(callback)
                return
        callback()

    def _register(self) -> None:
        if self.ended:
            return
        idle = self.options.idle_timeout
        if idle is not None:
            self._last_receive = time.monotonic()
            self._idle_timer = self.hub.call_later(idle, self._check_idle)
        self._set_interest()
        if self.outbox.pending:
            self._flush_from_hub()

    def _wanted_events(self) -> int:
        """What the selector should watch for now (``_interest_lock`` held)."""
        reading = self._reading and not self._direct_reader and not self._end_pending
        return (_EVENT_READ if reading else 0) | (_EVENT_WRITE if self.outbox.pending else 0)

    def _set_interest(self) -> None:
        with self._interest_lock:
            if self._interest_state == _RELEASED:
                return
            self._interest_state = _LIVE
            self._apply_interest()

    def _apply_interest(self) -> None:
        """Bring the selector in line with :meth:`_wanted_events` (``_interest_lock`` held)."""
        events = self._wanted_events()
        if events == self._events:
            return
        selector = self.hub.selector
        try:
            if isinstance(selector, EpollSelector):
                # Registered once; from then on one epoll_ctl per change.
                if self._watched_fd >= 0:
                    # Unknown until watch() returns: a change interrupted by a
                    # signal handler (a direct reader on the main thread) is
                    # then made again by the next call, not taken as done.
                    self._events = -1
                    selector.watch(self._watched_fd, events)
                elif events:
                    self._watched_fd = selector.register(self.sock, events, self).fd
            elif not self._events:
                selector.register(self.sock, events, self)
            elif not events:
                selector.unregister(self.sock)
            else:
                selector.modify(self.sock, events, self)
        except ValueError as exc:
            # The selectors' word for a socket closed behind the stocking's
            # back (its fileno() is -1): a connection error like any other,
            # so the stocking ends with an OSError whichever path met it first.
            if self.sock.fileno() >= 0:
                raise
            raise OSError(errno.EBADF, "the socket was closed behind the stocking") from exc
        self._events = events

    # ------------------------------------------------------------- hub thread

    def handle_events(self, mask: int) -> None:
        """Act on the socket's readiness (hub thread); never raises."""
        try:
            if mask & _EVENT_READ:
                # While the kernel has more, take it now: a turn of the loop
                # costs more than a receive. Bounded, so other connections
                # on this hub wait for at most a few receives.
                for _ in range(RECEIVES_PER_WAKE):
                    if not self._receive() or not self._reading:
                        break
            if mask & _EVENT_WRITE and not self.ended:
                self._flush_from_hub()
        except Exception as exc:
            # Anything unforeseen ends this connection, reported, and spares the others.
            self._end(EndReason.ERROR, exc)

    def hub_failed(self, exc: BaseException) -> None:
        """The loop broke under us; record why, as a connection error."""
        self._events = 0
        self._watched_fd = -1
        self._end(EndReason.ERROR, exc)

    def _receive(self) -> bool:
        """Receive once (hub thread); return True if the socket may have more to give.

        That is, if the receive filled all the room it offered: a stream
        socket gives what it holds up to that, so one that gave less is
        (for now) empty, and asking again would only cost a failed call.
        """
        with self._recv_lock:
            if self._direct_reader or self._end_pending:
                # A reader receives for itself now; this readiness is its.
                return False
            return self._receive_locked(self.hub.recv_view, False) > _NOTHING and self._filled

    def _receive_locked(self, view: memoryview, direct: bool) -> int:
        """Receive once into ``view`` or a large payload's own buffer (``_recv_lock`` held).

        Args:
            view: where small messages are received; the hub's shared
                buffer on its thread, a reader's own buffer on the reader's.
            direct: on a reader's thread, which must leave ending the
                channel, and meeting the end of the stream, to the hub.

        Returns:
            ``_DELIVERED``, ``_PARTIAL`` (bytes but no whole message yet),
            ``_NOTHING`` (the socket had nothing) or ``_STOPPED``.
        """
        sock = self.sock
        decoder = self.decoder
        missing = decoder.payload_missing
        assembly = self._assembly
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
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return _NOTHING
        except OSError as exc:
            self._end_from(direct, end_reason_for(exc), exc)
            return _STOPPED
        self._filled = received == room
        self.bytes_received += received
        if not received:
            if direct:
                # The end of the stream stays readable: the hub meets it next.
                return _STOPPED
            if assembly is not None:
                left = assembly.size - assembly.have
                self._end(
                    EndReason.PROTOCOL_ERROR,
                    IncompleteMessage(f"stream ended inside a message ({left} bytes missing)"),
                )
                return _STOPPED
            self._end_of_stream()
            return _STOPPED
        if self._idle_timer is not None:
            self._last_receive = time.monotonic()
        if assembly is not None:
            assembly.have += received
            if assembly.have < assembly.size:
                return _PARTIAL
            self._assembly = None
            self._deliver([assembly], direct)
            return _DELIVERED
        return self._take_in(data, direct)

    def _end_from(self, direct: bool, reason: EndReason, exc: BaseException) -> None:
        if direct:
            # Posted first: the flag stops the hub receiving, so it must
            # never be set without the end on its way.
            self.hub.call_soon(functools.partial(self._end, reason, exc))
            self._end_pending = True
        else:
            self._end(reason, exc)

    def _take_in(self, data: BytesLike, direct: bool = False) -> int:
        """Decode received bytes and deliver their messages, on the thread that received them.

        Returns:
            ``_DELIVERED`` or ``_PARTIAL``; ``_STOPPED`` if the bytes broke
            the wire format: the channel then ends (see ``_end_from``), after
            delivering every message that came before the fault.
        """
        decoder = self.decoder
        messages = decoder.feed(data)
        if messages:
            self._deliver(messages, direct)
        failure = decoder.failure
        if failure is not None:
            self._end_from(direct, _failure_reason(failure), failure)
            return _STOPPED
        return _DELIVERED if messages else _PARTIAL

    def _begin_assembly(self) -> Assembly:
        """Take a large bytes payload over from the decoder (hub thread).

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
        self._assembly = assembly
        return assembly

    def _end_of_stream(self) -> None:
        # A half-closing peer may still read: hand it what the kernel takes now.
        outbox = self.outbox
        with outbox.lock:
            error = outbox.send_now()
            pending = outbox.pending
            keep_open = self.options.half_close
            if not keep_open:
                # Replies written before the peer's FIN still reach it; one
                # written from now on would be dropped by the end, so it is
                # refused instead: take no new writes, flush, end.
                outbox.closing = True
            if (pending or keep_open) and error is None:
                self._peer_eof = True
        failure = None
        try:
            self.decoder.eof()
        except Exception as exc:
            failure = exc
        lifecycle = self._lifecycle
        lifecycle.receive_eof(
            flushing=pending and error is None,
            half_close=keep_open and error is None,
            failure=failure,
        )
        if lifecycle.reason is not None:
            self._end_as_decided()
            return
        if not self.ended:
            self._reading = False
            self._set_interest()
            with self._in_lock:
                # Nothing more can arrive: a waiting read returns None now.
                self._arrived.notify_all()
                if keep_open:
                    # Kept open for replies: a waiting loop must hear of the
                    # peer's close as it would of an end.
                    if self._signal is not None:
                        self._signal.set()
                    if self._watchers:
                        self._notify_watchers()

    def _resume_reading(self) -> None:
        if self.ended or self._reading:
            return
        with self._in_lock:
            if self._read_paused:
                return
        self._reading = True
        if self._idle_timer is not None:
            # The pause was ours: the peer's silence is counted from now.
            self._last_receive = time.monotonic()
        self._set_interest()

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

    def _begin_close(self, timeout: float | None) -> None:
        if self.ended or self._close_begun:
            # A close() interrupted after posting this posts it again.
            return
        self._close_begun = True
        self._lifecycle.close()
        if not self.outbox.pending:
            self._finish_close()
            return
        if timeout is not None:
            self._close_timer = self.hub.call_later(timeout, self._close_timed_out)
        self._flush_from_hub()

    def _close_timed_out(self) -> None:
        lifecycle = self._lifecycle
        lifecycle.close_timed_out(self.outbox.queued_bytes)
        if lifecycle.ended:
            self._end_as_decided()

    def _check_idle(self) -> None:
        """The idle timer fired (hub thread): end the channel if the peer stayed silent."""
        idle = self.options.idle_timeout
        if self.ended or idle is None:
            return
        now = time.monotonic()
        if not self._reading:
            # We stopped reading ourselves (flow control, a final flush): the
            # silence is ours, not the peer's.
            self._last_receive = now
        lifecycle = self._lifecycle
        wait = lifecycle.check_idle(now, self._last_receive, idle)
        if wait is not None:
            self._idle_timer = self.hub.call_later(wait, self._check_idle)
        elif lifecycle.ended:
            self._end_as_decided()

    def _finish_close(self) -> None:
        if self._close_finishing:
            # Both the flush that emptied the queue and _begin_close may get here.
            return
        self._close_finishing = True
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        else:
            # Take in what already arrived, so closing with unread bytes in the
            # kernel does not turn our FIN into a reset that the peer might see
            # before our last messages.
            for _ in range(64):
                if self.ended or self._peer_eof or not self._receive():
                    break
        # Drained: until here a reset or a broken message would still have won.
        self._lifecycle.write_shut()
        self._end_as_decided()

    def _end_as_decided(self) -> None:
        lifecycle = self._lifecycle
        if lifecycle.reason is not None:
            self._end(lifecycle.reason, lifecycle.exception)

    def _end(self, reason: EndReason, exc: BaseException | None = None) -> None:
        """End the channel (hub thread): release the socket, wake every waiter.

        With ``reason`` and ``exc``, unless the lifecycle decided the end already.
        """
        if self.ended:
            return
        lifecycle = self._lifecycle
        lifecycle.end(reason, exc)
        reason, exc = lifecycle.released()
        with self._interest_lock:
            self._interest_state = _RELEASED
            if self._events or self._watched_fd >= 0:
                try:
                    self.hub.selector.unregister(self.sock)
                except (KeyError, ValueError, OSError):
                    pass
                self._events = 0
                self._watched_fd = -1
            if self._direct_wake is not None:
                if self._direct_reader:
                    # It closes the descriptor once it has stopped polling it.
                    self._direct_wake.set()
                else:
                    self._direct_wake.close()
                    self._direct_wake = None
        outbox = self.outbox
        with outbox.lock:
            outbox.closing = True
            if lifecycle.should_reset(outbox.pending) and self.sock.family in _TCP_FAMILIES:
                # Reset rather than FIN: the peer must not mistake a stream
                # cut short (perhaps inside a message) for a clean close.
                try:
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                except OSError:
                    pass
            self.sock.close()
            outbox.discard()
        with self._in_lock:
            self.ended = True
            self.end_reason = reason
            self.end_exception = exc
            self._arrived.notify_all()
            if self._signal is not None:
                self._signal.set()
            if self._watchers:
                self._notify_watchers()
            callbacks, self._on_end = self._on_end, []
        if self._close_timer is not None:
            self._close_timer.cancel()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self.hub.detach(self)
        if reason in _PEERS_FAULTS:
            connection_log.warning(
                "%s: the peer broke the protocol: %s", self.peer, exc, extra={"peer": self.peer}
            )
        if connection_log.isEnabledFor(logging.DEBUG):
            detail = f" ({exc!r})" if exc is not None else ""
            connection_log.debug(
                "%s: ended: %s%s; in: %d messages, %d bytes; out: %d messages, %d bytes",
                self.peer,
                reason.value,
                detail,
                self.messages_received,
                self.bytes_received,
                outbox.messages_sent,
                outbox.bytes_sent,
                extra={"peer": self.peer},
            )
        for callback in callbacks:
            try:
                callback()
            except Exception as cb_exc:  # pragma: no cover - our own callbacks
                _report(cb_exc)

    # ------------------------------------------------------------ user threads

    def close(self, flush: bool = True, timeout: float | None = None) -> None:
        """End the channel; with ``flush``, send what is queued first.

        Waits for the end unless called on the hub thread. ``timeout`` bounds
        the flush; when it runs out the channel ends with ``EndReason.TIMEOUT``.
        """
        if self.ended:
            return
        outbox = self.outbox
        lifecycle = self._lifecycle
        with outbox.lock:
            # Requests only, recorded without a call: the hub decides on them.
            self._close_requested = True
            lifecycle.close_requested = True
            outbox.closing = True
            if not flush:
                # A write that gives up now says the stocking was aborted.
                lifecycle.abort_requested = True
            # A write blocked at the high-water mark gives up now: its
            # message was not written before close(), so it is not flushed.
            outbox.wake_writers()
        with self._in_lock:
            # So does a read waiting for a message: we are done reading.
            self._arrived.notify_all()
        with self._interest_lock:
            if self._direct_reader and self._direct_wake is not None:
                self._direct_wake.set()
        if not self._close_posted and self._started:
            # Posted, then marked: a close() interrupted in between posts
            # again when called again (the hub ends a channel only once).
            if flush:
                self.hub.call_soon(lambda: self._begin_close(timeout))
            else:
                self.hub.call_soon(lambda: self._end(EndReason.ABORTED))
            self._close_posted = True
        elif not self._started:
            self._end_unstarted(EndReason.CLOSED if flush else EndReason.ABORTED)
        elif not flush:
            self.hub.call_soon(lambda: self._end(EndReason.ABORTED))
        if not self.hub.in_hub_thread():
            grace = None if timeout is None else timeout + 1.0
            self.wait_ended(grace)

    def _closed_error(self) -> ConnectionClosed:
        """What a write refused by a closing or ended channel raises (for the outbox)."""
        return self._lifecycle.closed_error()

    def _end_unstarted(self, reason: EndReason) -> None:
        # Decided before the stretch below: a close() interrupted in between
        # ends it again, as decided.
        lifecycle = self._lifecycle
        lifecycle.end(reason)
        reason, _ = lifecycle.released()
        self.sock.close()
        with self._in_lock:
            self.ended = True
            self.end_reason = reason
            self._arrived.notify_all()

    # ------------------------------------------------------ for other layers
    # What the stocking, its handshake thread and the interpreter-exit hooks
    # (``_shutdown``) may ask of a channel, so that none reaches into its state.
    # Writing, and what was written, they ask of ``outbox``.

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has attached the channel to its hub."""
        return self._started

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

    def end(self, reason: EndReason, exc: BaseException | None = None) -> None:
        """End the channel now with ``reason`` and ``exc`` (hub thread only)."""
        self._end(reason, exc)

    def end_soon(self, reason: EndReason, exc: BaseException | None = None) -> None:
        """Have the hub thread end the channel with ``reason`` and ``exc`` (any thread)."""
        self.hub.call_soon(functools.partial(self._end, reason, exc))

    def abort_from_any_thread(self) -> None:
        """Abort the connection, from any thread, at any moment, taking no lock.

        For a garbage collector's callback, which may run while its thread
        holds any lock (the channel's, the hub's): the abort is left to the
        hub thread (``EndReason.ABORTED``).
        """
        if self._started:
            self.hub.call_soon_unlocked(functools.partial(self._end, EndReason.ABORTED, None))
        else:  # pragma: no cover - made but never started: no hub involved yet
            self._end_unstarted(EndReason.ABORTED)

    def relabel_end(self, reason: EndReason, exc: BaseException) -> bool:
        """Once the channel has ended, record ``reason`` and ``exc`` as why; return whether it had.

        For a layer that learns later what an end meant (a handshake that
        failed because the connection ended under it). The end's own
        exception becomes ``exc``'s context unless ``exc`` has a cause or
        context already; an end with ``reason`` already is left as it is.
        """
        with self._in_lock:
            if not self.ended:
                return False
            if self.end_reason is not reason:
                if exc.__cause__ is None and exc.__context__ is None:
                    exc.__context__ = self.end_exception
                self.end_reason = reason
                self.end_exception = exc
                # The lifecycle keeps the same account (for ``_closed_error``).
                lifecycle = self._lifecycle
                lifecycle.reason = reason
                lifecycle.exception = exc
            return True

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
        self._in_lock = Lock()
        self._arrived = LazyCondition(self._in_lock)
        self._recv_lock = Lock()
        self._interest_lock = Lock()
        self._direct_reader = False
        self._direct_poller = None
        if self._direct_wake is not None:
            self._direct_wake.close()
            self._direct_wake = None
        self._readers_waiting = 0
        self._close_requested = True
        self.inbox.clear()
        self._delivered = self._consumed = 0
        self._watchers = None
        self._on_end = []
        self._idle_timer = self._close_timer = None
        signal, self._signal = self._signal, None
        if signal is not None:
            signal.close()
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
            self.ended = True


def _disown_all_after_fork() -> None:
    parent = os.getppid()
    for channel in list(_live_channels):
        channel._disown_after_fork(parent)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_disown_all_after_fork)
