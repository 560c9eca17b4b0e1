"""A waiting reader receiving on its own thread.

A reader waiting on the hub costs two thread wake-ups per message: the
hub's, then the reader's. So a reader that finds the inbox empty and the
socket idle (or, in a stream of messages of ``TAKE_OVER_WAITING`` or more,
with bytes waiting) takes the socket over (:meth:`DirectReader.read`): the hub stops
watching it for reading, and the reader polls it (spinning a moment first,
see ``_spin_until_ready``) and receives into a buffer of its thread's own,
through the channel's :class:`~stockings._receiver.Receiver` under its lock
(large payloads included), until a message is in the inbox; then it hands the
socket back. Only the happy path is the reader's: at an end of stream or an
error it goes back to waiting on the hub, which meets the same state of the
socket when it reads again and ends the channel as it always does.

On the main thread, where signal handlers run, a reader receives only
between messages and one receive at a time (``Receiver.receive_on_main``),
so that an exception a handler raises can neither lose received bytes nor
leave the socket unwatched (``docs/topics/interrupts.md``).

The :class:`DirectReader` is one part of a
:class:`~stockings._channel.Channel`, which makes it with the interest lock
it takes (inside the receiver's) and which the inbox asks to read
(``Inbox.direct``). It asks the channel for its receiver, its inbox and the
selector (:class:`DirectReaderOwner`), holding it weakly, so that the parts
make no reference cycle. Its own state:
:attr:`DirectReader.active` (a reader has the socket; both locks),
:attr:`DirectReader.wake` (what ``close()`` and the end set to stop its
poll; the interest lock) and the spin's back-off (one reader at a time).
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
import weakref
from threading import local
from typing import TYPE_CHECKING, Protocol

from ._common import _DELIVERED, _LIVE, _RELEASED, _STOPPED
from ._hub import RECV_BUFFER_SIZE
from ._inbox import ORPHAN_CHECK_INTERVAL
from ._signal import ReadySignal

if TYPE_CHECKING:
    from ._inbox import Inbox
    from ._interest import Interest
    from ._receiver import Receiver

__all__ = [
    "DIRECT_RECV_SIZE",
    "SPIN_BACKOFF_FIRST",
    "SPIN_BACKOFF_MAX",
    "TAKE_OVER_WAITING",
    "_MAY_SPIN",
    "DirectReader",
    "DirectReaderOwner",
    "_thread_view",
]

#: What one receive on a reader's own thread asks for (see ``DirectReader.read``).
DIRECT_RECV_SIZE = 64 * 1024
#: After a message this large, a reader takes the socket over even with
#: bytes already waiting. Smaller ones come many to a receive, which the
#: hub makes while the reader takes the last; from here on each costs a
#: receive or more of its own, and the hub's wake-up of the reader per
#: message is the larger cost (measured in interleaved pairs: an eighth
#: less time at 16 KiB, about a quarter less at 64 KiB).
TAKE_OVER_WAITING = 16 * 1024
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


class DirectReaderOwner(Protocol):
    """What a :class:`DirectReader` asks of its channel."""

    #: The inbox: its messages, the last message's size, ``interest_stale``.
    inbox: Inbox
    #: What receives, under its lock: the reader receives through it.
    receiver: Receiver
    #: Whether ``close()`` was called.
    _close_requested: bool

    def _wanted_events(self) -> int:
        """What the selector should watch the socket for now (interest lock held)."""

    def _may_read_directly(self) -> bool:
        """Whether a reader may receive now (receive lock held)."""

    def _may_take_over(self) -> bool:
        """Whether a reader may take the socket over: also, between messages (receive lock)."""


class DirectReader:
    """Receiving on a waiting reader's thread, for one channel.

    No ``__slots__``: tests record calls of its methods per instance.

    Args:
        sock: the channel's socket (polled here, received from by its receiver).
        interest: the channel's selector registration; its lock is taken inside the receiver's.
        spin: how long (seconds) to check the socket before sleeping (``read_spin``).
        owner: the channel, held weakly.
    """

    def __init__(
        self,
        sock: socket.socket,
        interest: Interest,
        spin: float,
        owner: DirectReaderOwner,
    ) -> None:
        self.sock = sock
        self.interest = interest
        #: True while a reader has taken the socket over (both locks): the
        #: hub then neither receives nor watches it for reading.
        self.active = False
        #: Set by ``close()`` and the channel's end to stop a reader's poll
        #: (interest lock); made by the first reader that needs it.
        self.wake: ReadySignal | None = None
        self._poller: select.poll | None = None
        # How long a reader checks the socket before it sleeps, and its
        # back-off (one reader at a time).
        self._spin = spin if _MAY_SPIN else 0.0
        self._spin_skip = 0
        self._spin_backoff = SPIN_BACKOFF_FIRST
        self._owner: weakref.ref[DirectReaderOwner] = weakref.ref(owner)

    def read(self, deadline: float | None) -> bool:
        """Receive on this reader's thread until a message arrives (no lock held).

        See the module's docstring. Bytes already waiting in the kernel are
        left to the hub, unless the last message was at least
        ``TAKE_OVER_WAITING`` long: taking over pays when there is nothing
        yet, or when messages come one or fewer to a receive.

        Returns:
            Whether to receive directly again if the inbox is still empty.
        """
        owner = self._owner()
        if owner is None:  # pragma: no cover - a reader holds its stocking
            return False
        inbox = owner.inbox
        receiver = owner.receiver
        whole = receiver.whole
        if (
            inbox.last_size > RECV_BUFFER_SIZE
            or receiver.assembly is not None
            or (whole is not None and whole.stage)
            or inbox.messages
        ):
            # Told without the receive lock, which the hub holds through each
            # receive. Up to the size of its buffer, a message mostly comes
            # whole in one receive, and waiting for the lock is waiting for
            # it; a larger one comes in pieces, and a reader waiting for the
            # lock would wake after a piece only to be sent to wait on the
            # hub (a megabyte stream spent a sixth more CPU so). So does
            # one received whole, in a stream of them, after a wait for all
            # of it with the lock free. Each test is made again under the
            # lock below.
            return False
        # Signal handlers run on the main thread only: there, an exception
        # may land between a receive and the delivery of what it received.
        on_main = threading.get_ident() == threading.main_thread().ident
        taken = False
        try:
            with receiver.lock:
                if (
                    inbox.messages
                    or self.active
                    # Mid-message the hub is already at work on a stream, and
                    # one more message, not its first byte, is what keeps us.
                    or not owner._may_take_over()
                    # Over the hub's buffer the transfer, not a wake-up, is
                    # the cost, and the hub's assembly moves it best.
                    or inbox.last_size > RECV_BUFFER_SIZE
                ):
                    return False
                with self.interest.lock:
                    if self.interest.state != _LIVE:
                        return False
                    poller = self._poller
                    if poller is None:
                        fd = self.sock.fileno()
                        if fd < 0:
                            # Closed behind the stocking's back: the orphan check
                            # of a reader waiting on the hub ends the channel.
                            return False
                        # Stored only once it watches the socket.
                        poller = select.poll()
                        poller.register(fd, select.POLLIN)
                        self._poller = poller
                    if inbox.interest_stale:
                        # An interrupted hand-back: the hub watches again first.
                        self._apply_interest_for_reader()
                        inbox.interest_stale = False
                if inbox.last_size < TAKE_OVER_WAITING and poller.poll(0):
                    # Bytes are waiting, so the hub is awake for them or soon
                    # will be: let it receive while this thread gets on with
                    # the messages. Taking over pays when there is nothing yet.
                    return False
                with self.interest.lock:
                    if self.interest.state != _LIVE:
                        return False
                    # Set together, without a call between: whatever
                    # interrupts from here on, the ``finally`` hands back.
                    self.active = True
                    taken = True
                    # From now on the hub neither receives nor even wakes for it.
                    if not self._apply_interest_for_reader():
                        return False
            blocking = False
            while True:
                # The probe above found nothing, so wait before receiving.
                if not blocking:
                    with self.interest.lock:
                        if self.interest.state != _LIVE or owner._close_requested:
                            return False
                        wake = self.wake
                        if wake is None:
                            # close() and the end set it to stop the poll below.
                            wake = self.wake = ReadySignal()
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
                with receiver.lock:
                    if not owner._may_read_directly():
                        return False
                    if on_main:
                        outcome = receiver.receive_on_main(_thread_view())
                    else:
                        outcome = receiver.receive(_thread_view(), True)
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
                inbox.interest_stale = True
                self.active = False
                with self.interest.lock:
                    wake = self.wake
                    if self.interest.state == _RELEASED:
                        if wake is not None:
                            wake.close()
                            self.wake = None
                    else:
                        restored = False
                        try:
                            restored = self._apply_interest_for_reader()
                        finally:
                            if not restored:
                                # Interrupted (or failed): once more.
                                restored = self._apply_interest_for_reader()
                        inbox.interest_stale = not restored

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
        """Bring the selector in line with the channel, on a reader's thread; never raises.

        It fails only for a socket closed behind the stocking's back, which
        the hub ends (the reader's receive, or its orphan check, tells it).
        """
        owner = self._owner()
        if owner is None:  # pragma: no cover - a reader holds its stocking
            return False
        try:
            self.interest.apply(owner._wanted_events(), owner)
        except (KeyError, ValueError, OSError):
            return False
        return True

    def heal_interest(self) -> None:
        """Make the hub watch the socket again after an interrupted hand-back."""
        owner = self._owner()
        if owner is None:  # pragma: no cover - a reader holds its stocking
            return
        with self.interest.lock:
            if (
                self.interest.state == _LIVE
                and not self.active
                and self._apply_interest_for_reader()
            ):
                owner.inbox.interest_stale = False

    # ------------------------------------------------------- the channel's

    def stop(self) -> None:
        """The channel ended (interest lock held): stop a reader's poll, or close the wake-up."""
        wake = self.wake
        if wake is not None:
            if self.active:
                # It closes the descriptor once it has stopped polling it.
                wake.set()
            else:
                wake.close()
                self.wake = None

    def disown(self) -> None:
        """In a forked child: no poller, no wake-up (the interest has a fresh lock)."""
        self.active = False
        self._poller = None
        wake, self.wake = self.wake, None
        if wake is not None:
            wake.close()
