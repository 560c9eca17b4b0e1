"""One connection's I/O: its socket, decoder, outbound queue and inbox.

The path of a message: ``send`` (any thread) encodes it and either hands it
straight to the socket, when nothing is queued ahead of it and the last send
was not a moment ago, or appends it to the outbound queue (small messages
into one batch buffer at its tail), which the writer sends itself every
``WRITER_FLUSH_SIZE`` bytes and the hub thread flushes in as few ``sendmsg``
calls as the kernel allows. The hub thread receives into its shared buffer,
the :class:`~stockings._framing.Decoder` cuts whole messages out (a large
``bytes`` payload is received into a reused buffer of its own instead), and
they land in the inbox, where ``receive`` (any thread) takes them. A
reader that finds the inbox empty and the socket idle receives for itself
instead (``_read_directly``): the message then costs one thread wake-up,
not two.

Locks: ``_out_lock`` guards the outbound queue and every use of the socket
for sending; ``_recv_lock`` every receive and the decoder; ``_in_lock`` the
end state and waiting for the inbox, which a reader with a message waiting
pops without it; ``_interest_lock`` what the selector watches the socket
for. Only the hub thread touches the selector, but for a direct reader
changing its own socket's interest on an epoll hub. Where two are held,
``_recv_lock`` is taken first. User threads never block the hub thread for
longer than one receive.
"""

from __future__ import annotations

import errno
import functools
import os
import select
import selectors
import socket
import ssl
import struct
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from threading import Lock, local

from ._buffers import ASSEMBLE_AHEAD, Assembly, Batch
from ._epoll import EpollSelector
from ._errors import (
    ConnectionClosed,
    EndReason,
    IncompleteMessage,
    MessageTooLarge,
    StockingError,
    WriteTimeout,
    end_reason_for,
)
from ._framing import (
    _SHORT_HEADERS_BYTES,
    BytesLike,
    Decoder,
    Message,
    encode_header,
    payload_of,
)
from ._hub import Hub, Timer
from ._options import ChannelOptions
from ._signal import ReadySignal
from ._sync import LazyCondition

__all__ = ["Channel"]

#: Payloads this large are sent without copying them into the header's buffer
#: and received into a buffer of their own.
LARGE_PAYLOAD = 64 * 1024
#: The most one ``recv`` of a large payload asks for.
MAX_RECV_CHUNK = 4 * 1024 * 1024
#: The most buffers one ``sendmsg`` call is given.
MAX_IOVECS = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)
#: Without ``sendmsg`` small buffers are joined into one send of about this size.
JOIN_SIZE = 256 * 1024
#: A write this soon (seconds) after the last send is part of a burst: it is
#: queued rather than sent, so that a burst costs one ``sendmsg`` per batch
#: instead of one ``send`` per message. A request/response exchange writes
#: far less often than this and keeps its direct, lowest-latency send.
BURST_GAP = 5e-6
#: Once a burst has queued this many bytes, the writer sends them itself.
WRITER_FLUSH_SIZE = 64 * 1024
_clock = time.perf_counter

_EVENT_READ = selectors.EVENT_READ
_EVENT_WRITE = selectors.EVENT_WRITE
#: How often a reader blocked without a deadline checks that nobody closed
#: the socket behind the stocking's back (an epoll hub is not told).
ORPHAN_CHECK_INTERVAL = 1.0
#: What one receive on a reader's own thread asks for (see ``_read_directly``).
DIRECT_RECV_SIZE = 64 * 1024
#: After a spin that found nothing, a reader skips spinning for this many
#: waits, doubling up to the second number: a peer slower than the spin
#: costs a spin now and then, not one per message.
SPIN_BACKOFF_FIRST, SPIN_BACKOFF_MAX = 1, 64


def _cpus_for_us() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


#: Spinning only helps while another CPU can run the peer meanwhile.
_MAY_SPIN = _cpus_for_us() > 1
#: ``SO_LINGER`` on, zero seconds: ``close()`` sends RST.
_LINGER_RESET = struct.pack("ii", 1, 0)
_TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)
# Where the selector's interest in a socket stands (``_interest_lock``).
_UNREGISTERED, _LIVE, _RELEASED = 0, 1, 2
# What one receive achieved (see ``Channel._receive_locked``).
_STOPPED, _NOTHING, _PARTIAL, _DELIVERED = -1, 0, 1, 2
# Each reading thread's own receive buffer, for direct reads.
_thread_buffers = local()


def _thread_view() -> memoryview:
    try:
        view: memoryview = _thread_buffers.view
    except AttributeError:
        view = _thread_buffers.view = memoryview(bytearray(DIRECT_RECV_SIZE))
    return view


#: Every channel of this process, so that a forked child can disown them.
_live_channels: weakref.WeakSet[Channel] = weakref.WeakSet()


# Ready-made headers for the commonest writes: small bytes payloads.
_BYTES_HEADERS = [encode_header(length, False) for length in range(1024)]


class Channel:
    """The I/O engine of one connection, served by a :class:`~stockings._hub.Hub`."""

    #: Whether a reader waiting for a message may receive it on its own
    #: thread (see ``_read_directly``); subclasses with their own receive
    #: path turn it off.
    _reads_directly = True

    def __init__(self, sock: socket.socket, hub: Hub, options: ChannelOptions) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.hub = hub
        self.options = options
        self.decoder = Decoder(options.max_message_size)
        self._use_sendmsg = hasattr(sock, "sendmsg") and not isinstance(sock, ssl.SSLSocket)
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

        self._out_lock = Lock()
        self._drained = LazyCondition(self._out_lock)
        self._out: deque[BytesLike] = deque()
        self._out_bytes = 0
        self._drain_waiters = 0
        self._flush_scheduled = False
        limit = options.max_message_size
        # Payloads shorter than this may take send's fast path.
        cached = len(_BYTES_HEADERS)
        self._small_limit = cached if limit is None else min(cached, limit + 1)
        self._write_high_water = options.write_high_water
        # When this channel last handed bytes to the kernel from a writer's
        # thread (``_out_lock``); see BURST_GAP.
        self._last_send = float("-inf")
        # A large payload being received into a buffer of its own (hub thread).
        self._assembly: Assembly | None = None
        self._spare_buffers: deque[bytearray] = deque()
        self._closing = False
        self._close_requested = False
        self._close_timer: Timer | None = None
        # Idle detection (hub thread only): the timer is set only with idle_timeout.
        self._idle_timer: Timer | None = None
        self._last_receive = 0.0
        # The peer half-closed while replies were still queued: flush them, then end.
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
            self.hub.attach(self._register)

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
        if self._out:
            self._flush_from_hub()

    def _wanted_events(self) -> int:
        """What the selector should watch for now (``_interest_lock`` held)."""
        reading = self._reading and not self._direct_reader and not self._end_pending
        return (_EVENT_READ if reading else 0) | (_EVENT_WRITE if self._out else 0)

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
        if isinstance(selector, EpollSelector):
            # Registered once; from then on one epoll_ctl per change.
            if self._watched_fd >= 0:
                selector.watch(self._watched_fd, events)
            elif events:
                self._watched_fd = selector.register(self.sock, events, self).fd
        elif not self._events:
            selector.register(self.sock, events, self)
        elif not events:
            selector.unregister(self.sock)
        else:
            selector.modify(self.sock, events, self)
        self._events = events

    # ------------------------------------------------------------- hub thread

    def handle_events(self, mask: int) -> None:
        """Act on the socket's readiness (hub thread); never raises."""
        try:
            if mask & _EVENT_READ:
                self._receive()
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
        """Receive once (hub thread); return True if the socket may have more to give."""
        with self._recv_lock:
            if self._direct_reader or self._end_pending:
                # A reader receives for itself now; this readiness is its.
                return False
            return self._receive_locked(self.hub.recv_view, False) > _NOTHING

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
                received = sock.recv_into(assembly.view[assembly.have : assembly.size])
            elif missing >= LARGE_PAYLOAD:
                data = sock.recv(min(missing, MAX_RECV_CHUNK))
                received = len(data)
            else:
                received = sock.recv_into(view)
                data = view[:received]
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return _NOTHING
        except OSError as exc:
            self._end_from(direct, end_reason_for(exc), exc)
            return _STOPPED
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
        messages = decoder.feed(data)
        if messages:
            self._deliver(messages, direct)
        failure = decoder.failure
        if failure is not None:
            self._end_from(direct, _failure_reason(failure), failure)
            return _STOPPED
        return _DELIVERED if messages else _PARTIAL

    def _end_from(self, direct: bool, reason: EndReason, exc: BaseException) -> None:
        if direct:
            self._end_pending = True
            self.hub.call_soon(functools.partial(self._end, reason, exc))
        else:
            self._end(reason, exc)

    def _take_in(self, data: BytesLike) -> bool:
        """Decode received bytes and deliver their messages (hub thread).

        Returns:
            False if the bytes broke the wire format; the channel has then
            ended, after delivering every message that came before the fault.
        """
        messages = self.decoder.feed(data)
        if messages:
            self._deliver(messages)
        failure = self.decoder.failure
        if failure is None:
            return True
        self._end(_failure_reason(failure), failure)
        return False

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
        error: OSError | None = None
        with self._out_lock:
            try:
                self._send_queued()
            except OSError as exc:
                error = exc
            pending = bool(self._out)
            if pending and error is None:
                # Replies written before the peer's FIN still reach it: take
                # no new writes, flush the queue, then end as PEER_CLOSED.
                self._closing = True
                self._peer_eof = True
        try:
            self.decoder.eof()
        except Exception as exc:
            self._end(EndReason.PROTOCOL_ERROR, exc)
            return
        if self._peer_eof and not self.ended:
            self._reading = False
            self._set_interest()
            with self._in_lock:
                # Nothing more can arrive: a waiting read returns None now.
                self._arrived.notify_all()
            return
        self._end(EndReason.CLOSED if self._close_requested else EndReason.PEER_CLOSED)

    def _deliver(self, messages: Sequence[Message | Assembly], direct: bool = False) -> None:
        size = sum(map(len, messages))
        with self._in_lock:
            self.inbox.extend(messages)
            self._delivered += size
            if self._readers_waiting:
                self._arrived.notify_all()
            if self._signal is not None and self._signal_inbox:
                self._signal.set()
            if self._watchers and self._signal_inbox:
                self._notify_watchers()
            pause = False
            if self._delivered - self._consumed > self.options.read_high_water:
                # ``copy`` is one step for other threads, unlike iterating.
                unread = sum(map(len, self.inbox.copy()))
                self._delivered = self._consumed + unread
                pause = unread > self.options.read_high_water
                if pause:
                    self._read_paused = True
                    # A lock-free reader pops first and checks the flag after;
                    # we set the flag first and check the inbox after. One of
                    # the two sees the other, so a pause never outlives the
                    # messages it was waiting on.
                    if not self.inbox:
                        self._read_paused = pause = False
        if pause and self._reading:
            if direct:
                # ``_reading`` is the hub thread's to change.
                self.hub.call_soon(self._pause_reading)
                return
            # Stop reading: the kernel buffer fills and TCP pushes back on the sender.
            self._reading = False
            self._set_interest()

    def _pause_reading(self) -> None:
        with self._in_lock:
            paused = self._read_paused
        if paused and self._reading and not self.ended:
            self._reading = False
            self._set_interest()

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
        error: OSError | None = None
        with self._out_lock:
            self._flush_scheduled = False
            try:
                self._send_queued()
            except OSError as exc:
                error = exc
            empty = not self._out
        if error is not None:
            self._end(end_reason_for(error), error)
            return
        self._set_interest()
        if empty and self._closing:
            self._finish_close()

    def _send_queued(self) -> None:
        """Send from the queue until it is empty or the kernel is full (``_out_lock`` held)."""
        out = self._out
        sock = self.sock
        while out:
            try:
                if len(out) == 1:
                    attempted = len(out[0])
                    sent = sock.send(out[0])
                elif self._use_sendmsg:
                    buffers = list(islice(out, MAX_IOVECS))
                    attempted = sum(map(len, buffers))
                    sent = sock.sendmsg(buffers)
                else:
                    joined = self._join_head()
                    attempted = len(joined)
                    sent = sock.send(joined)
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return
            self._consume(sent)
            if sent < attempted:
                return

    def _join_head(self) -> bytes:
        out = self._out
        parts: list[BytesLike] = []
        size = 0
        while out and size < JOIN_SIZE:
            part = out.popleft()
            parts.append(part)
            size += len(part)
        joined = b"".join(parts)
        out.appendleft(joined)
        return joined

    def _consume(self, sent: int) -> None:
        out = self._out
        self._out_bytes -= sent
        while sent:
            head = out[0]
            if sent >= len(head):
                out.popleft()
                sent -= len(head)
            else:
                out[0] = memoryview(head)[sent:]
                sent = 0
        if self._drain_waiters and self._out_bytes <= self.options.write_low_water:
            self._drained.notify_all()

    def _begin_close(self, timeout: float | None) -> None:
        if self.ended:
            return
        if not self._out:
            self._finish_close()
            return
        if timeout is not None:
            self._close_timer = self.hub.call_later(timeout, self._close_timed_out)
        self._flush_from_hub()

    def _close_timed_out(self) -> None:
        left = self._out_bytes
        self._end(
            EndReason.TIMEOUT,
            WriteTimeout(f"close() gave up flushing with {left} bytes still unsent"),
        )

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
        silent = now - self._last_receive
        if silent >= idle:
            self._end(
                EndReason.TIMEOUT,
                TimeoutError(f"nothing received from the peer for {silent:.3g} s"),
            )
            return
        self._idle_timer = self.hub.call_later(idle - silent, self._check_idle)

    def _finish_close(self) -> None:
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
        if self._peer_eof and not self._close_requested:
            self._end(EndReason.PEER_CLOSED)
        self._end(EndReason.CLOSED)

    def _end(self, reason: EndReason, exc: BaseException | None = None) -> None:
        """End the channel (hub thread): release the socket, wake every waiter."""
        if self.ended:
            return
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
        with self._out_lock:
            self._closing = True
            if reason is EndReason.ABORTED and self.sock.family in _TCP_FAMILIES:
                # Reset rather than FIN: the peer must not mistake a stream
                # cut short for a clean close.
                try:
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                except OSError:
                    pass
            self.sock.close()
            self._out.clear()
            self._out_bytes = 0
            self._drained.notify_all()
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
        self.hub.detach()
        for callback in callbacks:
            try:
                callback()
            except Exception as cb_exc:  # pragma: no cover - our own callbacks
                _report(cb_exc)

    # ------------------------------------------------------------ user threads

    def send(self, message: object, timeout: float | None = None) -> None:
        """Queue ``message`` whole, or send it at once if nothing is queued.

        Args:
            message: ``str`` or bytes-like.
            timeout: how long to wait for the outbound queue to drain below
                its low-water mark when it is above the high-water mark;
                ``None`` waits as long as it takes.

        Raises:
            TypeError: ``message`` is neither ``str`` nor bytes-like.
            MessageTooLarge: ``message`` is over ``max_message_size``.
            ConnectionClosed: the channel is closing or has ended.
            WriteTimeout: the queue did not drain within ``timeout``.
        """
        if type(message) is bytes and (size := len(message)) < self._small_limit:
            # The commonest write of a burst: small bytes joining the batch
            # at the queue's tail. All it needs is checked here; anything
            # else takes the general path below.
            header = _BYTES_HEADERS[size]
            with self._out_lock:
                out = self._out
                queued = self._out_bytes
                if (
                    out
                    and type(tail := out[-1]) is Batch
                    and queued <= self._write_high_water
                    and not self._closing
                ):
                    tail += header
                    tail += message
                    queued += len(header) + size
                    self._out_bytes = queued
                    if queued >= WRITER_FLUSH_SIZE and self._use_sendmsg:
                        self._flush_by_writer()
                    return
        if type(message) is bytes:
            # The commonest case, without the calls of the general one.
            payload: BytesLike = message
            length = len(message)
            header = _SHORT_HEADERS_BYTES[length] if length < 64 else encode_header(length, False)
        else:
            payload, is_text = payload_of(message)
            length = len(payload)
            header = encode_header(length, is_text)
        limit = self.options.max_message_size
        if limit is not None and length > limit:
            raise MessageTooLarge(length, limit)
        small = length < LARGE_PAYLOAD
        if small:
            parts: list[BytesLike] = []
        else:
            if not isinstance(payload, bytes):
                # The caller may change a mutable buffer once write returns.
                payload = bytes(payload)
            parts = [header, payload]
        total = len(header) + length
        with self._out_lock:
            if self._closing:
                raise self._closed_error()
            if self._out_bytes > self.options.write_high_water and not self.hub.in_hub_thread():
                self._wait_for_drain(timeout)
            out = self._out
            # Keep this test on the queue itself: a TLS channel parks an
            # empty marker in it to hold writes back during its handshake.
            if out:
                if not small:
                    out.extend(parts)
                elif type(tail := out[-1]) is Batch:
                    # Small messages join the batch at the tail: no object
                    # per message, and one buffer for the kernel.
                    tail += header
                    tail += payload
                else:
                    out.append(Batch(header + payload))
                self._out_bytes += total
                if self._out_bytes >= WRITER_FLUSH_SIZE and self._use_sendmsg:
                    self._flush_by_writer()
                return
            if self._use_sendmsg and _clock() - self._last_send < BURST_GAP:
                # A burst: let the batch build up. The hub sends it as soon
                # as it runs (at once if this thread blocks, at worst after
                # one GIL switch interval), or this thread does at
                # WRITER_FLUSH_SIZE.
                if small:
                    out.append(Batch(header + payload))
                else:
                    out.extend(parts)
                self._out_bytes += total
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    self.hub.call_soon(self._flush_from_hub)
                return
            if small:
                parts = [header + payload]
            try:
                if len(parts) == 1:
                    sent = self.sock.send(parts[0])
                elif self._use_sendmsg:
                    sent = self.sock.sendmsg(parts)
                else:
                    sent = self.sock.send(header)
                    if sent == len(header):
                        try:
                            sent += self.sock.send(parts[1])
                        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
                            # The header went out: count it, or it would be sent twice.
                            pass
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                sent = 0
            except OSError as exc:
                raise self._lost_while_writing(exc) from exc
            self._last_send = _clock()
            if sent == total:
                return
            self._out.extend(parts)
            self._out_bytes += total
            self._consume(sent)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self.hub.call_soon(self._flush_from_hub)

    def _lost_while_writing(self, exc: OSError) -> ConnectionClosed:
        """A send from a writer's thread failed (``_out_lock`` held).

        The channel ends on the hub thread, which owns the selector; the
        writer gets the error to raise.
        """
        self._closing = True
        reason = end_reason_for(exc)
        self.hub.call_soon(functools.partial(self._end, reason, exc))
        return ConnectionClosed(f"connection lost while writing: {exc}", reason)

    def _flush_by_writer(self) -> None:
        """Send a burst's batch from the writer's thread (``_out_lock`` held)."""
        try:
            self._send_queued()
        except OSError as exc:
            raise self._lost_while_writing(exc) from exc
        self._last_send = _clock()
        if self._out and not self._flush_scheduled:
            # The kernel is full: the hub sends the rest when it can.
            self._flush_scheduled = True
            self.hub.call_soon(self._flush_from_hub)

    def send_many(self, messages: Iterable[object], timeout: float | None = None) -> None:
        """Queue several messages as one batch, in order, and send it at once.

        The batch is all or nothing: every message is encoded and checked
        before any is queued, and no other writer's message lands inside it.

        Args:
            messages: ``str`` or bytes-like objects.
            timeout: as for :meth:`send`.

        Raises:
            TypeError: a message is neither ``str`` nor bytes-like.
            MessageTooLarge: a message is over ``max_message_size``.
            ConnectionClosed: the channel is closing or has ended.
            WriteTimeout: the queue did not drain within ``timeout``.
        """
        limit = self.options.max_message_size
        small_limit = self._small_limit
        items: list[BytesLike] = []
        total = 0
        batch = Batch()
        for message in messages:
            if type(message) is bytes and len(message) < small_limit:
                batch += _BYTES_HEADERS[len(message)]
                batch += message
                continue
            payload, is_text = payload_of(message)
            length = len(payload)
            if limit is not None and length > limit:
                raise MessageTooLarge(length, limit)
            header = encode_header(length, is_text)
            if length < LARGE_PAYLOAD or not self._use_sendmsg:
                batch += header
                batch += payload
                continue
            # Large payloads go to sendmsg beside their header, uncopied
            # unless the caller could still change them.
            if batch:
                items.append(batch)
                total += len(batch)
                batch = Batch()
            items += (header, payload if isinstance(payload, bytes) else bytes(payload))
            total += len(header) + length
        if batch:
            items.append(batch)
            total += len(batch)
        if not items:
            return
        with self._out_lock:
            if self._closing:
                raise self._closed_error()
            if self._out_bytes > self.options.write_high_water and not self.hub.in_hub_thread():
                self._wait_for_drain(timeout)
            self._out.extend(items)
            self._out_bytes += total
            if self._use_sendmsg:
                self._flush_by_writer()
            elif not self._flush_scheduled:
                self._flush_scheduled = True
                self.hub.call_soon(self._flush_from_hub)

    def receive_all(self, timeout: float | None = 0.0) -> list[Message]:
        """Take every message waiting in the inbox, waiting for the first as ``receive`` does.

        Returns:
            The messages, oldest first; empty if none came in time.
        """
        first = self.receive(timeout)
        if first is None:
            return []
        messages = [first]
        receive = self.receive
        while (message := receive(0)) is not None:
            messages.append(message)
        return messages

    def _wait_for_drain(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        self._drain_waiters += 1
        try:
            while self._out_bytes > self.options.write_low_water and not self._closing:
                if deadline is None:
                    self._drained.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise WriteTimeout(
                            f"outbound queue still held {self._out_bytes} bytes after {timeout} s"
                        )
                    self._drained.wait(remaining)
        finally:
            self._drain_waiters -= 1
        if self._closing:
            raise self._closed_error()

    def _closed_error(self) -> ConnectionClosed:
        reason = self.end_reason
        if reason is None:
            if self._peer_eof and not self._close_requested:
                return ConnectionClosed(
                    "the peer closed its side; flushing the last replies", EndReason.PEER_CLOSED
                )
            return ConnectionClosed("the stocking is closing", EndReason.CLOSED)
        error = ConnectionClosed(f"the stocking has ended: {reason.value}", reason)
        error.__cause__ = self.end_exception
        return error

    def receive(self, timeout: float | None = 0.0) -> Message | None:
        """Take the next message from the inbox.

        Args:
            timeout: 0 returns at once; a positive number waits up to that many
                seconds; ``None`` waits until a message arrives or the channel ends.

        Returns:
            The message, or ``None`` if none came in time or the channel has
            ended and its inbox is empty.
        """
        inbox = self.inbox
        if self._signal is None:
            # The fast path, without the lock: popleft is atomic, and with no
            # fileno() there is no readiness to keep in step with the inbox.
            try:
                message = inbox.popleft()
            except IndexError:
                if timeout == 0 and not self._read_paused:
                    return None
            else:
                self._consumed += len(message)
                if self._read_paused:
                    self._resume_if_drained()
                if isinstance(message, Assembly):
                    return message.finish()
                return message
        elif not inbox and timeout == 0:
            return None
        resume = False
        with self._in_lock:
            if not inbox and self._read_paused:
                # All read, so nothing can be over the mark (the counts may
                # say otherwise after racing readers): read again before waiting.
                self._read_paused = False
                self.hub.call_soon(self._resume_reading)
            if not inbox:
                if self.ended or timeout == 0:
                    return None
                self._wait_for_message(timeout)
                if not inbox:
                    return None
            message = inbox.popleft()
            self._consumed += len(message)
            unread = self._delivered - self._consumed
            if self._read_paused and unread <= self.options.read_low_water:
                self._read_paused = False
                resume = True
            if not inbox and self._signal is not None and not self.ended:
                self._signal.clear()
        if resume:
            self.hub.call_soon(self._resume_reading)
        if isinstance(message, Assembly):
            return message.finish()
        return message

    def _resume_if_drained(self) -> None:
        with self._in_lock:
            if not self._read_paused:
                return
            # The counts may overstate what is unread (racing readers), but an
            # empty inbox never does: without this a reader that drained it
            # and then waits on wait() or fileno() would wait forever.
            if self.inbox and self._delivered - self._consumed > self.options.read_low_water:
                return
            self._read_paused = False
        self.hub.call_soon(self._resume_reading)

    def _wait_for_message(self, timeout: float | None) -> None:
        """Wait until the inbox has a message or the channel is done (``_in_lock`` held)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        direct = self._reads_directly
        self._readers_waiting += 1
        try:
            while not (self.inbox or self.ended or self._close_requested or self._peer_eof):
                wait = ORPHAN_CHECK_INTERVAL
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    wait = min(wait, remaining)
                if direct and not self._direct_reader:
                    self._in_lock.release()
                    try:
                        direct = self._read_directly(deadline)
                    finally:
                        self._in_lock.acquire()
                    continue
                if not self._arrived.wait(wait):
                    self._check_orphaned()
        finally:
            self._readers_waiting -= 1

    def _read_directly(self, deadline: float | None) -> bool:
        """Receive on this reader's thread until a message arrives (no lock held).

        A reader waiting on the hub costs two thread wake-ups per message:
        the hub's, then the reader's. So a waiting reader takes the socket
        over instead: the hub stops watching it for reading, and the reader
        polls and receives it itself until a message is in the inbox, then
        hands it back. Only the happy path is the reader's: an end of stream,
        an error or a large payload send it back to waiting on the hub, which
        sees the same state of the socket when it reads again.

        Returns:
            Whether to receive directly again if the inbox is still empty.
        """
        with self._recv_lock:
            if (
                self.inbox
                or self._direct_reader
                or not self._may_read_directly()
                # Mid-message the hub is already at work on a stream, and
                # one more message, not its first byte, is what keeps us.
                or self._assembly is not None
                or self.decoder.in_progress
            ):
                return False
            with self._interest_lock:
                if self._interest_state != _LIVE:
                    return False
                poller = self._direct_poller
                if poller is None:
                    poller = self._direct_poller = select.poll()
                    poller.register(self.sock.fileno(), select.POLLIN)
            if poller.poll(0):
                # Bytes are waiting, so the hub is awake for them or soon
                # will be: let it receive while this thread gets on with
                # the messages. Taking over pays when there is nothing yet.
                return False
            with self._interest_lock:
                if self._interest_state != _LIVE:
                    return False
                self._direct_reader = True
                # From now on the hub neither receives nor even wakes for it.
                if not self._apply_interest_for_reader():
                    self._direct_reader = False
                    return False
        blocking = False
        try:
            while True:
                # The probe above found nothing, so wait before receiving.
                if not blocking:
                    with self._interest_lock:
                        if self._interest_state != _LIVE or self._close_requested:
                            return False
                        if self._direct_wake is None:
                            # close() and _end set it to stop the poll below.
                            self._direct_wake = ReadySignal()
                            poller.register(self._direct_wake.fileno(), select.POLLIN)
                    blocking = True
                    ready = self._spin > 0 and self._spin_until_ready(poller, deadline)
                else:
                    ready = False
                if not ready:
                    wait = ORPHAN_CHECK_INTERVAL
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                        if wait <= 0:
                            return True
                    poller.poll(wait * 1000.0)
                with self._recv_lock:
                    if self.ended or self._close_requested or not self._may_read_directly():
                        return False
                    outcome = self._receive_locked(_thread_view(), True)
                if outcome == _DELIVERED:
                    return True
                if outcome == _STOPPED:
                    return False
        finally:
            with self._interest_lock:
                self._direct_reader = False
                wake = self._direct_wake
                if self._interest_state == _RELEASED:
                    if wake is not None:
                        wake.close()
                        self._direct_wake = None
                else:
                    if wake is not None:
                        wake.clear()
                    self._apply_interest_for_reader()

    def _spin_until_ready(self, poller: select.poll, deadline: float | None) -> bool:
        """Check the socket without sleeping for up to ``read_spin`` seconds.

        A thread put to sleep takes tens of microseconds to wake, more than
        a nearby peer takes to answer; so a reader expecting a reply keeps
        checking for a moment first. Each check releases the GIL.

        Returns:
            Whether the socket (or the wake-up) turned readable in time.
        """
        if self._spin_skip:
            self._spin_skip -= 1
            return False
        clock = time.monotonic
        until = clock() + self._spin
        if deadline is not None and deadline < until:
            until = deadline
        check = poller.poll
        while not check(0):
            if clock() >= until:
                self._spin_skip = self._spin_backoff
                self._spin_backoff = min(self._spin_backoff * 2, SPIN_BACKOFF_MAX)
                return False
        self._spin_backoff = SPIN_BACKOFF_FIRST
        return True

    def _apply_interest_for_reader(self) -> bool:
        """:meth:`_apply_interest` on a reader's thread, which must not raise.

        It fails only for a socket closed behind the stocking's back, which
        the hub ends (the reader's receive, or its orphan check, tells it).
        """
        try:
            self._apply_interest()
        except (KeyError, ValueError, OSError):
            return False
        return True

    def _may_read_directly(self) -> bool:
        return self._reading and not self._peer_eof

    def _check_orphaned(self) -> None:
        """End the channel if its socket was closed behind its back (``_in_lock`` held)."""
        if self._started and not self.ended and self.sock.fileno() < 0 and not self._orphaned:
            self._orphaned = True
            error = OSError(errno.EBADF, "the socket was closed outside the stocking")
            self.hub.call_soon(functools.partial(self._end, EndReason.ERROR, error))

    def wait_ended(self, timeout: float | None) -> bool:
        """Wait until the channel has ended; return whether it has."""
        with self._in_lock:
            return self._arrived.wait_for(lambda: self.ended, timeout)

    @property
    def queued_bytes(self) -> int:
        """Bytes written but not yet handed to the kernel."""
        return self._out_bytes

    @property
    def unread_bytes(self) -> int:
        """Payload size of the messages received but not yet read (characters for text)."""
        return sum(map(len, self.inbox.copy()))

    @property
    def closing(self) -> bool:
        """True once no more messages may be written."""
        return self._closing

    def readiness_fd(self) -> int:
        """A descriptor readable while a message waits or the channel has ended."""
        with self._in_lock:
            if self._signal is None:
                self._signal = ReadySignal()
                if self.ended or (self.inbox and self._signal_inbox):
                    self._signal.set()
            return self._signal.fileno()

    def set_signal_inbox(self, enabled: bool) -> None:
        """Let ``fileno()`` readiness follow the inbox (off during a handshake)."""
        with self._in_lock:
            self._signal_inbox = enabled
            if self._signal is not None and enabled and self.inbox:
                self._signal.set()
            if self._watchers and enabled and self.inbox:
                self._notify_watchers()

    @property
    def ready(self) -> bool:
        """True while a message waits to be read (handshake done) or the channel has ended."""
        return self.ended or bool(self.inbox and self._signal_inbox)

    def watch(self, callback: Callable[[], None]) -> bool:
        """Call ``callback`` whenever the channel may have become :attr:`ready`.

        The callback runs on whichever thread made the change, with the
        channel's lock held: it must be quick, must not block and must not
        call back into the channel. It may be called when nothing changed.

        Returns:
            Whether the channel is ready now; checked atomically with the
            registration, so no change between the two goes unnoticed.
        """
        with self._in_lock:
            if self._watchers is None:
                self._watchers = [callback]
            else:
                self._watchers.append(callback)
            return self.ready

    def unwatch(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback``; a no-op if it is not watching."""
        with self._in_lock:
            watchers = self._watchers
            if watchers is None:
                return
            try:
                watchers.remove(callback)
            except ValueError:
                return
            if not watchers:
                self._watchers = None

    def _notify_watchers(self) -> None:
        assert self._watchers is not None
        for callback in tuple(self._watchers):
            try:
                callback()
            except Exception as exc:  # pragma: no cover - our own callbacks
                _report(exc)

    def close(self, flush: bool = True, timeout: float | None = None) -> None:
        """End the channel; with ``flush``, send what is queued first.

        Waits for the end unless called on the hub thread. ``timeout`` bounds
        the flush; when it runs out the channel ends with ``EndReason.TIMEOUT``.
        """
        if self.ended:
            return
        with self._out_lock:
            first = not self._close_requested
            self._close_requested = True
            self._closing = True
            # A write blocked at the high-water mark gives up now: its
            # message was not written before close(), so it is not flushed.
            self._drained.notify_all()
        with self._in_lock:
            # So does a read waiting for a message: we are done reading.
            self._arrived.notify_all()
        with self._interest_lock:
            if self._direct_reader and self._direct_wake is not None:
                self._direct_wake.set()
        if first and self._started:
            if flush:
                self.hub.call_soon(lambda: self._begin_close(timeout))
            else:
                self.hub.call_soon(lambda: self._end(EndReason.ABORTED))
        elif first:
            self._end_unstarted(EndReason.CLOSED if flush else EndReason.ABORTED)
        elif not flush:
            self.hub.call_soon(lambda: self._end(EndReason.ABORTED))
        if not self.hub.in_hub_thread():
            grace = None if timeout is None else timeout + 1.0
            self.wait_ended(grace)

    def _end_unstarted(self, reason: EndReason) -> None:
        self.sock.close()
        with self._in_lock:
            self.ended = True
            self.end_reason = reason
            self._arrived.notify_all()

    def release_signal(self) -> None:
        """Close the ``fileno()`` descriptor, if one was made."""
        with self._in_lock:
            if self._signal is not None:
                self._signal.close()

    def _disown_after_fork(self, parent: int) -> None:
        """In a forked child: end this copy without touching the parent's connection.

        The child has no hub thread, its locks may have been copied while
        held, and its socket and ``fileno()`` descriptors share their open
        files with the parent. So the copy gets fresh locks, drops its queues
        (reading the parent's messages twice would be worse than not at all),
        closes only its own descriptors (no shutdown, which would reach the
        peer) and reads as ended.
        """
        self._out_lock = Lock()
        self._drained = LazyCondition(self._out_lock)
        self._in_lock = Lock()
        self._arrived = LazyCondition(self._in_lock)
        self._recv_lock = Lock()
        self._interest_lock = Lock()
        self._direct_reader = False
        self._direct_poller = None
        if self._direct_wake is not None:
            self._direct_wake.close()
            self._direct_wake = None
        self._out.clear()
        self._out_bytes = 0
        self._drain_waiters = 0
        self._readers_waiting = 0
        self._closing = True
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
            self.end_reason = EndReason.ERROR
            self.end_exception = StockingError(
                f"this stocking belongs to process {parent}; a forked child cannot use it"
            )
            self.ended = True


def _failure_reason(failure: BaseException) -> EndReason:
    if isinstance(failure, MessageTooLarge):
        return EndReason.MESSAGE_TOO_LARGE
    return EndReason.PROTOCOL_ERROR


def _disown_all_after_fork() -> None:
    parent = os.getppid()
    for channel in list(_live_channels):
        channel._disown_after_fork(parent)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_disown_all_after_fork)


def _report(exc: BaseException) -> None:  # pragma: no cover - our own callbacks
    import sys

    sys.excepthook(type(exc), exc, exc.__traceback__)
