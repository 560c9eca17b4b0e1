"""A channel's outbound side: its queue, and the writers that add to it.

``send`` hands a message straight to the socket when nothing is queued
ahead of it and the last send was not a moment ago; else it queues it
(small ones into the batch at the tail), for the writer to send every
``WRITER_FLUSH_SIZE`` bytes and the hub otherwise, through the outbox's
:class:`~stockings._sender.Sender`. A writer over the high-water mark waits
in a :class:`~stockings._write_flow.WriteFlow`. :attr:`Outbox.lock` guards
all of it and every use of the socket for sending. The channel makes and
drives it, held weakly (:class:`~stockings._sender.OutboxOwner`).
"""

from __future__ import annotations

import socket
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from threading import Lock
from time import perf_counter
from typing import Any

from ._buffers import Batch, batch_parts, queued_parts
from ._common import LARGE_PAYLOAD
from ._encoding import BYTES_FRAMED, BYTES_HEADERS, NO_MESSAGE, BytesLike, WriteFraming, no_message
from ._errors import ConnectionClosed, EndReason
from ._hub import Hub
from ._options import ChannelOptions
from ._sender import BURST_GAP, WRITER_FLUSH_SIZE, OutboxOwner, Sender
from ._switching import stretches_run_whole, thread_trace
from ._transport import PLAIN_RULES, SendRules
from ._typing import variadic_signature
from ._write_flow import WriteFlow

__all__ = ["BURST_GAP", "WRITER_FLUSH_SIZE", "Outbox", "OutboxOwner"]


class Outbox:
    """The outbound queue of one channel, and the writers' side of it.

    Args:
        sock: the channel's non-blocking socket.
        hub: the channel's hub.
        options: the channel's options (``max_message_size``, high and low water).
        owner: the channel, held weakly.
        rules: how the socket may be used.
    """

    __slots__ = (
        "_busy",
        "_busy_at_rest",
        "_flow",
        "_flush_owed",
        "_framing",
        "_last_send",
        "_out",
        "_out_bytes",
        "_owner",
        "_sender",
        "_small_limit",
        "_use_sendmsg",
        "_write_high_water",
        "_writer_flush_at",
        "bytes_sent",
        "closing",
        "hub",
        "lock",
        "messages_sent",
        "options",
        "write_timeout",
    )

    def __init__(
        self,
        sock: socket.socket,
        hub: Hub,
        options: ChannelOptions,
        owner: OutboxOwner,
        rules: SendRules = PLAIN_RULES,
    ) -> None:
        self.hub = hub
        self.options = options
        #: Guards the queue, its counts and every use of the socket for
        #: sending (a TLS channel takes it for every use of its TLS object).
        self.lock = Lock()
        #: The writers waiting for the queue to drain.
        self._flow = WriteFlow(self.lock, options.write_low_water)
        self._out: deque[BytesLike] = deque()
        self._out_bytes = 0
        # True while a thread holding ``lock`` changes the queue in several
        # steps or sends from it, so that lock-free joins keep off even if
        # it is switched out midway (traced, see ``_switching``); then back
        # to ``_busy_at_rest``, True while monitoring tools (or a build
        # without its GIL) keep every join locked, asked whenever a batch
        # is left for later writes: the fast path tests one flag for both.
        self._busy_at_rest = not stretches_run_whole()
        self._busy = self._busy_at_rest
        # True from queueing a message a writer sends itself until that
        # send, or a request for the hub's flush, is made; left so by an
        # interrupt, it has the next write ask the hub (see ``Sender``).
        self._flush_owed = False
        self._framing = WriteFraming(options.max_message_size)
        # Bytes payloads shorter than this may take send's fast path.
        self._small_limit = self._framing.small_limit
        self._write_high_water = options.write_high_water
        # A writer's thread's last send to the kernel (``lock``); see BURST_GAP.
        self._last_send = float("-inf")
        # Where a writer sends the batch itself (see ``Sender._settle``).
        self._writer_flush_at = WRITER_FLUSH_SIZE
        #: Hands the head of the queue to the kernel (``lock``).
        self._sender = Sender(sock, hub, self._out, rules, self._flow, owner)
        self._use_sendmsg = self._sender.use_sendmsg
        #: Messages accepted and bytes of the message stream (headers
        #: included) the kernel took, for anyone to read at any time; each
        #: changed in the same step as the queue.
        self.messages_sent = 0
        self.bytes_sent = 0
        #: True once no more messages are taken: set by the channel (with
        #: ``lock`` held) when it closes or ends, or here when a send fails.
        self.closing = False
        self._owner: weakref.ref[OutboxOwner] = weakref.ref(owner)
        #: How long a write may wait, over the high-water mark, for the
        #: queue to drain below the low one; ``None``: as long as it takes.
        #: The stocking's ``write_timeout``.
        self.write_timeout: float | None = None

    # ------------------------------------------------------------ writers

    @variadic_signature
    def send(self, message: object = NO_MESSAGE, /, *args: object, **kwargs: object) -> None:
        """Queue ``message`` whole, or send it at once if nothing is queued.

        This is the ``write`` of a stocking whose class changes neither
        ``write`` nor ``pre_write`` (a Python call less per message), hence
        its shape: ``args`` and ``kwargs`` are for the default ``pre_write``,
        which ignores them. A write over the high-water mark waits up to
        :attr:`write_timeout`.

        A signal handler's exception (``KeyboardInterrupt``) may come out of
        this call at any point: the message is then either queued whole, to
        be sent like any other, or not at all (see ``docs/topics/interrupts.md``).

        Args:
            message: ``str`` or bytes-like.

        Raises:
            TypeError: ``message`` is missing, or neither ``str`` nor bytes-like.
            MessageTooLarge: ``message`` is over ``max_message_size``.
            ConnectionClosed: the channel is closing or has ended.
            WriteTimeout: the queue did not drain within :attr:`write_timeout`.
        """
        if type(message) is bytes and (size := len(message)) < self._small_limit:
            # The commonest write of a burst: small bytes joining the batch
            # at the queue's tail without the lock, as in ``_join_tail``
            # (whose call would be a tenth of this path's cost).
            out = self._out
            if (
                # Tested before the call too: a write with nothing queued,
                # sent alone (below), asks for no trace. Again after it, in
                # which another thread may run.
                out
                and thread_trace() is None
                and not self._busy
                and out
                and (tail := out[-1]).__class__ is Batch
                and self._out_bytes <= self._write_high_water
                and not self.closing
                and not self._flush_owed
            ):
                tail += BYTES_HEADERS[size]
                tail += message
                queued = self._out_bytes + BYTES_FRAMED[size]
                self._out_bytes = queued
                self.messages_sent += 1
                if queued >= self._writer_flush_at and self._use_sendmsg:
                    self._send_full_batch()
                return
            header: bytes = BYTES_HEADERS[size]
            payload: BytesLike = message
        else:
            if message is NO_MESSAGE:
                raise no_message(kwargs)
            header, payload, framed = self._framing.frame(message)
            if framed and self._join_tail(header, payload, framed):
                return
        # The first step of ``_queue``, for the commonest case, without its
        # call and packed arguments (a thirteenth of a write sent alone);
        # it handles everything else: the closed error, the hub, the wait.
        with self.lock:
            if not self.closing and self._out_bytes <= self._write_high_water:
                self._enqueue(header, payload)
                return
        self._queue(self._enqueue, (header, payload), self.write_timeout)

    def _queue(
        self, enqueue: Callable[..., None], args: tuple[Any, ...], timeout: float | None
    ) -> None:
        """Call ``enqueue(*args)`` with the lock held, the queue at most at its high-water mark."""
        with self.lock:
            if self.closing:
                raise self._closed_error()
            if self._out_bytes <= self._write_high_water or self.hub.in_hub_thread():
                enqueue(*args)
                return
        # Over the high-water mark: wait until below the low one.
        self._flow.wait_to_queue(self, enqueue, args, timeout)

    def _join_tail(self, header: bytes, message: BytesLike, framed: int) -> bool:
        """Add a message of ``framed`` bytes on the wire to the tail batch, without the lock.

        From the test of ``_busy`` to the new byte count there is no call,
        so no other thread and no signal handler runs in between (CPython
        switches only at calls, function starts and loop jumps, unless the
        thread is traced, tested first: see ``_switching``); nor does it
        meet a send or another writer's append half done (each sets ``_busy``).

        Returns:
            Whether the message joined the batch; if not, nothing changed.
        """
        out = self._out
        if (
            thread_trace() is None
            and not self._busy
            and out
            and (tail := out[-1]).__class__ is Batch
            and self._out_bytes <= self._write_high_water
            and not self.closing
            and not self._flush_owed
        ):
            tail += header
            tail += message
            queued = self._out_bytes + framed
            self._out_bytes = queued
            self.messages_sent += 1
            if queued >= self._writer_flush_at and self._use_sendmsg:
                self._send_full_batch()
            return True
        return False

    def _send_full_batch(self) -> None:
        """Send the batch a lock-free write filled, unless the hub sent it meanwhile."""
        with self.lock:
            if self._out_bytes >= self._writer_flush_at:
                self._flush_by_writer()

    def _enqueue(self, header: bytes, payload: BytesLike) -> None:
        """Queue a message's parts, or send them at once (``lock`` held).

        Every change to the queue goes with its byte count in one stretch
        of bytecode without a call (``+=`` on the deque, not ``append``),
        so a signal handler's exception lands before or after it, never
        between the two. ``_busy`` keeps lock-free joins out meanwhile,
        should this thread be switched out inside a stretch (traced).
        """
        out = self._out
        length = len(payload)
        total = len(header) + length
        small = length < LARGE_PAYLOAD
        self._busy = True
        try:
            # Keep this test on the queue itself: ``hold`` parks an empty
            # marker in it to hold writes back (a TLS handshake).
            if out:
                if small and type(tail := out[-1]) is Batch:
                    # Small messages join the batch at the tail: no object
                    # per message, one copy, and one buffer for the kernel.
                    # No call between the two appends: no interrupt lands
                    # between them.
                    tail += header
                    tail += payload
                else:
                    out += queued_parts(header, payload, small)
                    if small:
                        self._busy_at_rest = not stretches_run_whole()
                self._out_bytes += total
                self.messages_sent += 1
                if self._out_bytes >= self._writer_flush_at and self._use_sendmsg:
                    self._flush_by_writer()
                elif self._flush_owed:
                    # An interrupted writer's send left the queue to nobody.
                    self._sender.schedule_flush()
                return
            batches = self._use_sendmsg or total < self._small_limit
            if batches and small and perf_counter() - self._last_send < BURST_GAP:
                self._busy_at_rest = not stretches_run_whole()
                # A burst of small messages: let the batch build up, for
                # this thread to send at WRITER_FLUSH_SIZE or before it
                # waits to read (``send_held``), the hub after BURST_HOLD.
                # (A large payload is sent below, by this thread: cheaper
                # than waking the hub, a GIL switch each way.) Without
                # sendmsg (TLS) the hub sends as soon as it runs. Asked
                # before the message is queued: an interrupt in between
                # costs a useless flush, never a stuck one.
                if self._use_sendmsg:
                    self._sender.flush_after_hold()
                else:
                    self._sender.schedule_flush()
                out += queued_parts(header, payload, small)
                self._out_bytes += total
                self.messages_sent += 1
                return
            # Owed before the message is queued: an interrupt from here to
            # the send leaves the flag for the next write to act on.
            self._flush_owed = True
            # A small one goes as one buffer, which the kernel mostly takes
            # whole; later writes start a batch of their own behind any rest.
            out += (header + payload,) if small else (header, payload)
            self._out_bytes += total
            self.messages_sent += 1
            self._sender.from_writer(self)
            if small and out:
                # Left for later writes to join; a message sent whole (a
                # request and its reply) spares itself the question.
                self._busy_at_rest = not stretches_run_whole()
        finally:
            self._busy = self._busy_at_rest

    def _flush_by_writer(self) -> None:
        """Send a burst's batch from the writer's thread (``lock`` held)."""
        self._sender.from_writer(self)

    def _closed_error(self) -> ConnectionClosed:
        owner = self._owner()
        if owner is None:  # pragma: no cover - whoever writes holds the channel
            return ConnectionClosed("the stocking has ended", EndReason.CLOSED)
        return owner._closed_error()

    def send_many(self, messages: Iterable[object]) -> None:
        """Queue several messages as one batch, in order, and send it at once.

        The batch is all or nothing: every message is encoded and checked
        before any is queued, and no other writer's message lands inside it.
        It waits over the high-water mark as :meth:`send` does.

        Args:
            messages: ``str`` or bytes-like objects.

        Raises:
            As :meth:`send` does, for any of the messages.
        """
        items, total, count = batch_parts(messages, self._framing, self._use_sendmsg)
        if items:
            self._queue(self._enqueue_many, (items, total, count), self.write_timeout)

    def _enqueue_many(self, items: list[BytesLike], total: int, count: int) -> None:
        """Queue a batch of ``count`` messages, and send it at once (``lock`` held)."""
        if not self._use_sendmsg:
            self._sender.schedule_flush()
        # The whole batch and its count in one step (see ``_enqueue``).
        self._busy = True
        try:
            self._flush_owed = True
            self._out += items
            self._out_bytes += total
            self.messages_sent += count
            if self._use_sendmsg:
                self._flush_by_writer()
            if self._out:
                self._busy_at_rest = not stretches_run_whole()
        finally:
            self._busy = self._busy_at_rest

    # --------------------------------------------------- for the channel

    def send_held(self) -> None:
        """Send a burst's batch now, not after ``BURST_HOLD``: a thread is about to wait to read.

        A request written in a burst must not wait for the hold while its
        writer waits for the answer. A failed send ends the channel, which
        the waiting read then reports.
        """
        if self._out and self._sender.batch_held:
            with self.lock:
                if self._out and not self.closing:
                    try:
                        self._sender.from_writer(self)
                    except ConnectionClosed:
                        pass

    def flush(self) -> OSError | None:
        """The hub's flush (``lock`` held): send what the kernel takes; the error, if any."""
        return self._sender.flush(self)

    def send_now(self) -> OSError | None:
        """Send what the kernel takes now (hub thread, ``lock`` held); the error, if any."""
        return self._sender.send_now(self)

    def wake_writers(self) -> None:
        """Wake every writer waiting to queue (``lock`` held), once :attr:`closing` is set.

        They give up, as their messages were not written before it.
        """
        self._flow.wake()

    def discard(self) -> None:
        """Drop everything queued and wake every waiting writer (``lock`` held).

        For the end of the channel, which closes the socket and sets
        :attr:`closing` in the same locked stretch.
        """
        self._busy = True
        try:
            self._sender.discard()
            self._out_bytes = 0
        finally:
            self._busy = self._busy_at_rest
        self._flow.wake()

    def hold(self) -> None:
        """Queue every write, and send none, until :meth:`release` (before any write)."""
        self._sender.hold()

    def release(self) -> None:
        """Let held writes go; the caller flushes them next (``lock`` held)."""
        self._sender.release()

    def disown(self) -> None:
        """Start afresh in a forked child: new lock, nothing queued, closing.

        The parent's lock may have been copied while held, and its queue
        belongs to the parent's connection.
        """
        self.lock = Lock()
        self._flow.reset(self.lock)
        self._sender.discard()
        self._out_bytes = 0
        self._busy = self._busy_at_rest
        self.closing = True

    @property
    def pending(self) -> bool:
        """Whether the queue holds anything (held writes included)."""
        return bool(self._out)

    @property
    def queued_bytes(self) -> int:
        """Bytes written but not yet handed to the kernel."""
        return self._out_bytes
