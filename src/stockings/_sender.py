"""The kernel's end of a channel's outbound queue: sending what is queued.

An :class:`~stockings._outbox.Outbox` takes writers' messages in at the
tail of its queue; its :class:`Sender` hands bytes from the head of that
queue to the socket, in as few ``sendmsg`` calls as the kernel allows,
on whichever thread sends: a writer's (:meth:`Sender.from_writer`), or the
hub's (:meth:`Sender.flush`, which it has the hub run when a writer leaves
bytes the kernel did not take). It runs only under the outbox's lock,
which guards every use of the socket for sending.
How it may use the socket (``sendmsg`` or not, which exceptions mean "the
kernel is full", whether this thread may send now) is its transport's
:class:`~stockings._transport.SendRules`.

The two share the queue itself (one ``deque``); of the outbox the sender
uses only the queue's byte count and stream counter, the flag that keeps
``Outbox.send``'s lock-free path off the queue while it sends, the time of
a writer's last send, and ``closing``, which it sets when a send fails
(:class:`SendQueue`); it wakes the writers waiting for the queue to drain
through their :class:`~stockings._write_flow.WriteFlow`. Like a transport,
it is given its outbox on each call rather than holding it, and it holds
the channel weakly (:class:`OutboxOwner`), so that it makes no reference
cycle.
"""

from __future__ import annotations

import os
import socket
import weakref
from collections import deque
from collections.abc import Callable
from itertools import islice
from time import perf_counter
from typing import Any, Protocol

from ._encoding import BytesLike
from ._errors import ConnectionClosed, EndReason, end_reason_for
from ._hub import Hub
from ._transport import SendRules
from ._write_flow import WriteFlow

__all__ = [
    "BURST_GAP",
    "BURST_HOLD",
    "JOIN_SIZE",
    "MAX_IOVECS",
    "WRITER_FLUSH_SIZE",
    "OutboxOwner",
    "SendQueue",
    "Sender",
]

#: The most buffers one ``sendmsg`` call is given.
MAX_IOVECS = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)
#: Without ``sendmsg`` small buffers are joined into one send of about this size.
JOIN_SIZE = 256 * 1024
#: A write this soon (seconds) after the last send is part of a burst: it is
#: queued rather than sent, so that a burst costs one ``sendmsg`` per batch
#: instead of one ``send`` per message. A request/response exchange writes
#: far less often than this and keeps its direct, lowest-latency send.
#: (Read by ``Outbox``, as its own name: set it there.)
BURST_GAP = 5e-6
#: Once a burst has queued this many bytes, the writer sends them itself.
WRITER_FLUSH_SIZE = 64 * 1024
#: How much more a writer queues behind bytes the kernel could not take
#: before it tries to send again itself (the hub meanwhile waits for room).
#: Against a reader slower than the writer, each try finds only what the
#: reader took since the last: at 4 KiB a 100 B stream made a system call
#: every 60 messages, nearly doubling the writer's CPU.
WRITER_RETRY_STEP = 32 * 1024
#: The longest (seconds) a burst's batch waits for the hub to send it, when
#: its writer does not fill it, and no thread waits to read meanwhile. The
#: hub's clock ticks in milliseconds: a shorter hold would be no shorter.
BURST_HOLD = 1e-3


#: Parked at the head of the queue by :meth:`Sender.hold`. ``Outbox.send``
#: queues a message whenever the queue is not empty, so an empty marker
#: there holds every write back without costing the plain path a check. It
#: is removed (by identity) by :meth:`Sender.release`.
_HOLD = memoryview(bytearray())


def _never() -> bool:
    return False


class OutboxOwner(Protocol):
    """What an outbox and its sender ask of their channel."""

    def _flush_from_hub(self) -> None:
        """Flush the outbox (hub thread): calls ``Outbox.flush`` under its lock."""

    def end_soon(self, reason: EndReason, exc: BaseException | None = None) -> None:
        """Have the hub thread end the channel (any thread): a send failed."""

    def _closed_error(self) -> ConnectionClosed:
        """The error a write refused once ``Outbox.closing`` raises."""


class SendQueue(Protocol):
    """What a :class:`Sender` uses of its outbox (the outbox's lock held)."""

    #: Bytes queued and not yet handed to the kernel.
    _out_bytes: int
    #: True while the queue changes in several steps (a send, a settle):
    #: the lock-free path of ``send`` then leaves the queue alone.
    _busy: bool
    #: What ``_busy`` goes back to after: True while every join must lock.
    _busy_at_rest: bool
    #: Bytes of the message stream the kernel took.
    bytes_sent: int
    #: When a writer's thread last handed bytes to the kernel.
    _last_send: float
    #: True once no more messages are taken.
    closing: bool
    #: True while a queued message waits for a send or a flush request.
    _flush_owed: bool
    #: The byte count at which a writer next sends the queue itself.
    _writer_flush_at: int


def _set_writer_flush(box: SendQueue) -> None:
    """Where a writer next sends ``box``'s queue itself, after a send.

    What the kernel could not take waits for the hub, which watches for
    room: a writer tries again only once ``WRITER_RETRY_STEP`` more has
    joined it, not at each write (a system call each while the kernel is
    full); an emptied queue is sent again once a full batch is in it.
    """
    box._writer_flush_at = max(box._out_bytes + WRITER_RETRY_STEP, WRITER_FLUSH_SIZE)


class Sender:
    """Sends from the head of one outbox's queue.

    Args:
        sock: the channel's non-blocking socket.
        hub: the channel's hub, which flushes what a writer could not send.
        out: the outbox's queue (shared: the outbox adds, the sender takes).
        rules: how the socket may be used.
        flow: the writers waiting for the queue to drain, woken here.
        owner: the channel, held weakly.
    """

    __slots__ = (
        "_flow",
        "_flush_scheduled",
        "_hold_posted",
        "_least_offer",
        "_out",
        "_owner",
        "_record",
        "_rules",
        "hub",
        "may_send",
        "sock",
        "use_sendmsg",
    )

    def __init__(
        self,
        sock: socket.socket,
        hub: Hub,
        out: deque[BytesLike],
        rules: SendRules,
        flow: WriteFlow,
        owner: OutboxOwner,
    ) -> None:
        self.sock = sock
        self.hub = hub
        self._owner: weakref.ref[OutboxOwner] = weakref.ref(owner)
        self._flush_scheduled = False
        # A flush after BURST_HOLD is posted to the hub (see ``flush_after_hold``).
        self._hold_posted = False
        self._out = out
        # What the kernel took from the queue, recorded with the send itself
        # and not yet taken off it (see ``send``).
        self._record: list[int] = []
        # The fewest bytes the next send may offer (see ``_join_head``).
        self._least_offer = 0
        self._rules = rules
        self._flow = flow
        #: Whether several buffers go to the kernel in one ``sendmsg``.
        self.use_sendmsg = rules.use_sendmsg and hasattr(sock, "sendmsg")
        #: Asked before each send; ``None`` means always.
        self.may_send = rules.may_send

    def from_writer(self, box: SendQueue) -> None:
        """Send what is queued from a writer's thread.

        What the kernel does not take now, the hub sends when it can.

        Raises:
            ConnectionClosed: the send failed; the channel ends.
        """
        try:
            self.send(box)
        except OSError as exc:
            box._flush_owed = False
            raise self._lost_while_writing(box, exc) from exc
        except BaseException:
            # Interrupted: what is queued stays queued; the hub sends it.
            # Should a second interrupt cut this request short, the owed
            # flag (still set) has the next write make it.
            if self._out:
                self.schedule_flush()
            box._flush_owed = False
            raise
        box._last_send = perf_counter()
        if self._out:
            # The kernel is full: the hub sends the rest when it can. (Here
            # too, not only in _settle: a send refused whole settles nothing.)
            _set_writer_flush(box)
            self.schedule_flush()
        box._flush_owed = False

    def _lost_while_writing(self, box: SendQueue, exc: OSError) -> ConnectionClosed:
        """A send from a writer's thread failed.

        The channel ends on the hub thread, which owns the selector; the
        writer gets the error to raise.
        """
        box.closing = True
        reason = end_reason_for(exc)
        owner = self._owner()
        if owner is not None:
            owner.end_soon(reason, exc)
        return ConnectionClosed(f"connection lost while writing: {exc}", reason)

    def schedule_flush(self) -> None:
        """Have the hub flush the queue.

        The call is posted before the flag is set: an interrupt between the
        two leaves one flush too many, which costs nothing.
        """
        if not self._flush_scheduled:
            self.hub.call_soon(self._flush_owner)
            self._flush_scheduled = True

    def flush_after_hold(self) -> None:
        """Have the hub flush the queue in ``BURST_HOLD``, if nobody sent it by then.

        For a burst: the writer sends its batch itself once it is full, so
        the hub is not woken for every few messages (each time the two
        threads trade the GIL), only for what a burst leaves at its end.
        Posted before the flag is set, as :meth:`schedule_flush` is.
        """
        if not self._hold_posted:
            self.hub.call_later(BURST_HOLD, self._flush_held)
            self._hold_posted = True

    @property
    def batch_held(self) -> bool:
        """Whether a held flush is on its way (see :meth:`flush_after_hold`)."""
        return self._hold_posted

    def _flush_held(self) -> None:
        self._hold_posted = False
        if self._out:
            self._flush_owner()

    def _flush_owner(self) -> None:
        """The flush ``schedule_flush`` posts: the channel's, if it is still about."""
        owner = self._owner()
        if owner is not None:
            owner._flush_from_hub()

    def flush(self, box: SendQueue) -> OSError | None:
        """Send what the kernel takes now, for the hub's flush; the error, if any."""
        self._flush_scheduled = False
        box._flush_owed = False
        try:
            self.send(box)
        except OSError as exc:
            return exc
        return None

    def send_now(self, box: SendQueue) -> OSError | None:
        """Send what the kernel takes now, on the hub thread; the error, if any."""
        try:
            self.send(box)
        except OSError as exc:
            return exc
        return None

    def send(self, box: SendQueue) -> None:
        """Send from the queue until it is empty or the kernel is full.

        What the kernel took is recorded by ``list.extend`` inside the same
        C call as the send (``map`` over one argument), before any signal
        handler can run; :meth:`_settle` then takes it off the queue. An
        exception between the two leaves the count in the record, settled
        by the next call here: never a byte sent twice or skipped.
        """
        may_send = self.may_send
        if may_send is not None and not may_send():
            return
        out = self._out
        record = self._record
        # The lock-free path of ``send`` keeps off the queue meanwhile: the
        # kernel may be reading the tail batch, and a settle changes the
        # head and the count in steps.
        box._busy = True
        try:
            if len(out) == 1 and not record:
                # The commonest send, a message written alone or a batch:
                # the loop below, without its choices.
                try:
                    record.extend(map(self.sock.send, (out[0],)))
                except self._rules.would_block:
                    return
                self._settle(box)
                return
            if record:
                self._settle(box)
            sock = self.sock
            call: Callable[..., int]
            arguments: tuple[Any, ...]
            while out:
                if len(out) == 1:
                    attempted = len(out[0])
                    call, arguments = sock.send, (out[0],)
                elif self.use_sendmsg:
                    # sendmsg takes the queue itself when it fits in one call.
                    buffers = out if len(out) <= MAX_IOVECS else list(islice(out, MAX_IOVECS))
                    attempted = sum(map(len, buffers))
                    call, arguments = sock.sendmsg, (buffers,)
                else:
                    joined = self._join_head()
                    attempted = len(joined)
                    call, arguments = sock.send, (joined,)
                    # Set before the send, so that whatever cuts it short
                    # leaves the next join its floor (a lone buffer needs
                    # none: every send starts with the head whole).
                    self._least_offer = attempted
                try:
                    record.extend(map(call, arguments))  # type: ignore[arg-type]
                except self._rules.would_block:
                    return
                self._least_offer = 0
                sent = record[0]
                self._settle(box)
                if sent < attempted:
                    return
        finally:
            box._busy = box._busy_at_rest

    def _join_head(self) -> BytesLike:
        """The first queued buffers joined, up to about ``JOIN_SIZE`` (the queue is left as is).

        A buffer of ``JOIN_SIZE`` or more is never copied into a join: it
        is sent alone, after what comes before it (a large payload's
        header, say); the join only spares small buffers their own sends.

        Except when the last send was cut short: the join is then at least
        as long as that send was. OpenSSL refuses a retry of a write it
        could not finish that offers fewer bytes than before ("bad
        length"), and the buffers joined last time may since have grown
        (the batch at the tail) past ``JOIN_SIZE``.
        """
        parts: list[BytesLike] = []
        size = 0
        least = self._least_offer
        for part in self._out:
            if len(part) >= JOIN_SIZE and parts and size >= least:
                break
            parts.append(part)
            size += len(part)
            if size >= JOIN_SIZE and size >= least:
                break
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def _settle(self, box: SendQueue) -> None:
        """Take what the kernel accepted (the record) off the queue.

        Each step changes the queue, the byte count and the record together
        in one stretch of bytecode without a call, so an interrupt between
        steps leaves them in step, and the next call carries on.
        """
        record = self._record
        out = self._out
        if len(record) == 1:
            sent = record[0]
            pieces = len(out)
            if sent and sent == box._out_bytes and pieces <= 2:
                # The commonest outcome: the kernel took the whole queue, a
                # batch or a payload beside its header. Only the measuring
                # above calls anything; the steps below are one stretch.
                del out[0]
                if pieces == 2:
                    del out[0]
                box._out_bytes = 0
                box.bytes_sent += sent
                del record[0]
        while record:
            sent = record[0]
            if not sent:
                del record[0]
                continue
            head = out[0]
            size = len(head)
            if sent >= size:
                del out[0]
                box._out_bytes -= size
                box.bytes_sent += size
                if sent == size:
                    del record[0]
                else:
                    record[0] = sent - size
            else:
                rest = memoryview(head)[sent:]
                out[0] = rest
                box._out_bytes -= sent
                box.bytes_sent += sent
                del record[0]
        _set_writer_flush(box)
        flow = self._flow
        if flow.waiters and box._out_bytes <= flow.low_water:
            flow.wake()

    def discard(self) -> None:
        """Drop everything queued, and the record of what of it was sent."""
        self._out.clear()
        self._record.clear()
        self._least_offer = 0

    def hold(self) -> None:
        """Hold every write in the queue, and send none, until :meth:`release`."""
        self._out.append(_HOLD)
        self.may_send = _never

    def release(self) -> None:
        """Let held writes go, and send again as the rules allow."""
        if self._out and self._out[0] is _HOLD:
            self._out.popleft()
        self.may_send = self._rules.may_send
