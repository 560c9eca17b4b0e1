"""A waiting reader receiving on its own thread.

A reader waiting on the hub costs two thread wake-ups per message: the
hub's, then the reader's. So a reader that finds the inbox empty and the
socket idle takes the socket over (``_read_directly``): the hub stops
watching it for reading, and the reader polls it (spinning a moment first,
see ``_spin_until_ready``) and receives into a buffer of its thread's own,
through the channel's own ``_receive_locked`` under ``_recv_lock`` (large
payloads included), until a message is in the inbox; then it hands the
socket back. Only the happy path is the reader's: at an end of stream or an
error it goes back to waiting on the hub, which meets the same state of the
socket when it reads again and ends the channel as it always does.

On the main thread, where signal handlers run, a reader receives only
between messages and one receive at a time (``_receive_on_main``), so that
an exception a handler raises can neither lose received bytes nor leave the
socket unwatched (``docs/topics/interrupts.md``).
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from threading import Lock, local
from typing import TYPE_CHECKING

from ._buffers import Assembly
from ._common import _DELIVERED, _LIVE, _NOTHING, _RELEASED, _STOPPED, LARGE_PAYLOAD
from ._errors import EndReason, end_reason_for
from ._framing import BytesLike, Decoder
from ._inbox import ORPHAN_CHECK_INTERVAL, Inbox
from ._signal import ReadySignal

__all__ = [
    "DIRECT_RECV_SIZE",
    "SPIN_BACKOFF_FIRST",
    "SPIN_BACKOFF_MAX",
    "_MAY_SPIN",
    "DirectReadMixin",
    "_thread_view",
]

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
# Each reading thread's own receive buffer, for direct reads.
_thread_buffers = local()


def _thread_view() -> memoryview:
    try:
        view: memoryview = _thread_buffers.view
    except AttributeError:
        view = _thread_buffers.view = memoryview(bytearray(DIRECT_RECV_SIZE))
    return view


class DirectReadMixin:
    """Receiving on a waiting reader's thread, for :class:`~stockings._channel.Channel`."""

    # Set by ``Channel.__init__``, which documents them.
    sock: socket.socket
    decoder: Decoder
    inbox: Inbox
    ended: bool
    _recv_lock: Lock
    bytes_received: int
    _interest_lock: Lock
    _interest_state: int
    _direct_reader: bool
    _direct_wake: ReadySignal | None
    _direct_poller: select.poll | None
    _spin: float
    _spin_skip: int
    _spin_backoff: int
    _assembly: Assembly | None
    _reading: bool
    _peer_eof: bool
    _close_requested: bool
    _filled: bool

    if TYPE_CHECKING:
        # Channel's own.
        def _apply_interest(self) -> None: ...
        def _receive_locked(self, view: memoryview, direct: bool) -> int: ...
        def _take_in(self, data: BytesLike, direct: bool = False) -> int: ...
        def _end_from(self, direct: bool, reason: EndReason, exc: BaseException) -> None: ...

    def _read_directly(self, deadline: float | None) -> bool:
        """Receive on this reader's thread until a message arrives (no lock held).

        See the module's docstring. Bytes already waiting in the kernel are
        left to the hub: taking over pays only when there is nothing yet.

        Returns:
            Whether to receive directly again if the inbox is still empty.
        """
        # Signal handlers run on the main thread only: there, an exception
        # may land between a receive and the delivery of what it received.
        on_main = threading.get_ident() == threading.main_thread().ident
        taken = False
        try:
            with self._recv_lock:
                if (
                    self.inbox.messages
                    or self._direct_reader
                    or not self._may_read_directly()
                    # Mid-message the hub is already at work on a stream, and
                    # one more message, not its first byte, is what keeps us.
                    or self._assembly is not None
                    or self.decoder.in_progress
                    # Large messages: the transfer, not a wake-up, is the cost,
                    # and the hub's larger buffer and assembly move them best.
                    or self.inbox.last_size >= LARGE_PAYLOAD
                ):
                    return False
                with self._interest_lock:
                    if self._interest_state != _LIVE:
                        return False
                    poller = self._direct_poller
                    if poller is None:
                        fd = self.sock.fileno()
                        if fd < 0:
                            # Closed behind the stocking's back: the orphan check
                            # of a reader waiting on the hub ends the channel.
                            return False
                        # Stored only once it watches the socket.
                        poller = select.poll()
                        poller.register(fd, select.POLLIN)
                        self._direct_poller = poller
                    if self.inbox.interest_stale:
                        # An interrupted hand-back: the hub watches again first.
                        self._apply_interest_for_reader()
                        self.inbox.interest_stale = False
                if poller.poll(0):
                    # Bytes are waiting, so the hub is awake for them or soon
                    # will be: let it receive while this thread gets on with
                    # the messages. Taking over pays when there is nothing yet.
                    return False
                with self._interest_lock:
                    if self._interest_state != _LIVE:
                        return False
                    # Set together, without a call between: whatever
                    # interrupts from here on, the ``finally`` hands back.
                    self._direct_reader = True
                    taken = True
                    # From now on the hub neither receives nor even wakes for it.
                    if not self._apply_interest_for_reader():
                        return False
            blocking = False
            while True:
                # The probe above found nothing, so wait before receiving.
                if not blocking:
                    with self._interest_lock:
                        if self._interest_state != _LIVE or self._close_requested:
                            return False
                        wake = self._direct_wake
                        if wake is None:
                            # close() and _end set it to stop the poll below.
                            wake = self._direct_wake = ReadySignal()
                        else:
                            # Left set by an interrupted hand-back, it would
                            # turn the waits below into a busy loop.
                            wake.clear()
                        # Again each time: an interrupt may have come between
                        # making it and registering it (a no-op otherwise).
                        poller.register(wake.fileno(), select.POLLIN)
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
                    if on_main:
                        outcome = self._receive_on_main(_thread_view())
                    else:
                        outcome = self._receive_locked(_thread_view(), True)
                if outcome == _DELIVERED:
                    return True
                if outcome == _STOPPED:
                    return False
        finally:
            if taken:
                # The flag first, with no lock and no call: even if taking
                # the lock below is interrupted, no reader is left "taking
                # over" for ever; ``interest_stale`` then has the next
                # reader make the hub watch again.
                self.inbox.interest_stale = True
                self._direct_reader = False
                with self._interest_lock:
                    wake = self._direct_wake
                    if self._interest_state == _RELEASED:
                        if wake is not None:
                            wake.close()
                            self._direct_wake = None
                    else:
                        restored = False
                        try:
                            restored = self._apply_interest_for_reader()
                        finally:
                            if not restored:
                                # Interrupted (or failed): once more.
                                restored = self._apply_interest_for_reader()
                        self.inbox.interest_stale = not restored

    def _receive_on_main(self, view: memoryview) -> int:
        """One receive on the main thread, safe from signal handlers (``_recv_lock`` held).

        Only with the decoder between messages; otherwise the hub carries
        on. The count of what ``recv_into`` took is recorded inside the same
        C call (``list.extend`` over ``map``), so an exception raised by a
        signal handler once it returns cannot lose it; and if the exception
        comes before the messages reached the inbox (``deliveries`` tells),
        the bytes, still in this thread's buffer, are decoded afresh by a new
        decoder (the old one was between messages before them).

        Returns:
            As ``Channel._receive_locked``.
        """
        if self._assembly is not None or self.decoder.in_progress:
            return _STOPPED
        got: list[int] = []
        deliveries = self.inbox.deliveries
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
            self._filled = received == len(view)
            if not received:
                # The end of the stream stays readable: the hub meets it next.
                return _STOPPED
            return self._take_in(view[:received], True)
        except BaseException:
            if got and got[0] and self.inbox.deliveries == deliveries:
                self.decoder = Decoder(self.decoder.max_message_size)
                self._take_in(view[: got[0]], True)
            raise

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

    def _heal_interest(self) -> None:
        """Make the hub watch the socket again after an interrupted hand-back."""
        with self._interest_lock:
            if (
                self._interest_state == _LIVE
                and not self._direct_reader
                and self._apply_interest_for_reader()
            ):
                self.inbox.interest_stale = False

    def _may_read_directly(self) -> bool:
        return self._reading and not self._peer_eof
