"""Readers blocked on an empty inbox: the slow path of ``Inbox.receive``.

Taking a message that is there is the inbox's hot path (``_inbox``);
waiting for one is rarer and has rules of its own, kept here with the two
things it asks of the channel (:class:`InboxOwner`). A reader waits with no
lock held, so that a signal handler's exception finds none to take back
(see ``docs/topics/interrupts.md``); a reader that may receive on its own
thread does so through the channel's :class:`~stockings._direct.DirectReader`
rather than wait for the hub; a reader blocked without a deadline wakes
every :data:`ORPHAN_CHECK_INTERVAL` to see whether the socket was closed
behind the stocking's back, which an epoll hub is not told; and a reader
that drained a paused inbox has the channel read again. The channel is held
weakly, so that it and its inbox make no reference cycle.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Sized
from threading import Lock
from typing import TYPE_CHECKING, Protocol

from ._sync import LazyCondition

if TYPE_CHECKING:
    from ._direct import DirectReader
    from ._readiness import Readiness

__all__ = ["DIRECT", "GIVE_UP", "HUB", "ORPHAN_CHECK_INTERVAL", "InboxOwner", "Waited", "Waiting"]

#: What one turn of waiting tells ``receive``: give up (return ``None``), or
#: look again and, for the next turn, receive directly or wait on the hub.
GIVE_UP, DIRECT, HUB = 0, 1, 2

#: How often a reader blocked without a deadline checks that nobody closed
#: the socket behind the stocking's back (an epoll hub is not told).
ORPHAN_CHECK_INTERVAL = 1.0


class InboxOwner(Protocol):
    """What an inbox's readers ask of its channel."""

    def _resume_reading(self) -> None:
        """Watch the socket for reading again, unless paused anew (hub thread)."""

    def check_orphaned(self) -> None:
        """End the channel if its socket was closed behind its back (``Inbox.lock`` held)."""


class Waited(Protocol):
    """What :class:`Waiting` reads of the inbox it waits on, and asks of it.

    All but ``direct`` are used with ``lock`` held.
    """

    lock: Lock
    paused: bool
    ended: bool
    no_more: bool
    interest_stale: bool
    direct: DirectReader | None
    readiness: Readiness | None

    @property
    def messages(self) -> Sized:
        """The messages not yet read."""

    def resume_reading_soon(self) -> None:
        """Have the hub read again, and clear ``paused``."""


class Waiting:
    """The readers waiting on one inbox, and how they wait.

    Args:
        lock: the inbox's lock, which guards :attr:`count` too.
        owner: the channel, held weakly.
    """

    __slots__ = ("arrived", "count", "owner")

    def __init__(self, lock: Lock, owner: weakref.ref[InboxOwner]) -> None:
        #: Notified when a message arrives or the channel ends.
        self.arrived = LazyCondition(lock)
        #: How many readers wait now: the inbox notifies only if any do.
        self.count = 0
        self.owner = owner

    def resume_reading(self) -> None:
        """Posted to the hub thread by a reader that drained the inbox."""
        owner = self.owner()
        if owner is not None:
            owner._resume_reading()

    def wait_once(self, inbox: Waited, no_wait: bool, deadline: float, direct: bool) -> int:
        """One turn of waiting for a message (no lock held on entry or exit).

        Returns:
            ``GIVE_UP`` when ``receive`` should return ``None``; else
            ``DIRECT`` or ``HUB``: look again, and for the next turn receive
            directly or wait on the hub.
        """
        messages = inbox.messages
        reader = inbox.direct
        waiter = None
        with inbox.lock:
            if not messages and inbox.paused:
                # All read, so nothing can be over the mark (the counts may
                # say otherwise after racing readers): read again before
                # waiting.
                inbox.resume_reading_soon()
            if messages:
                return DIRECT if direct else HUB
            if inbox.readiness is not None and not inbox.ended:
                # Readiness a read interrupted after taking the last
                # message may have left set.
                inbox.readiness.clear()
            wait = min(ORPHAN_CHECK_INTERVAL, deadline - time.monotonic())
            if inbox.ended or no_wait or inbox.no_more or wait <= 0:
                return GIVE_UP
            # Counted for the length of this turn (a count an interrupt
            # leaves too high costs only a spare notify).
            self.count += 1
            if not (direct and reader is not None and not reader.active):
                waiter = self.arrived.register()
        try:
            if waiter is None:
                assert reader is not None
                return DIRECT if reader.read(None if deadline == math.inf else deadline) else HUB
            if inbox.interest_stale and reader is not None:
                # A direct reader's interrupted hand-back left the socket unwatched.
                reader.heal_interest()
            # Wait with no lock held: an interrupted wait has none to take back.
            notified = waiter.acquire(True, wait)
        finally:
            with inbox.lock:
                self.count -= 1
                if waiter is not None:
                    self.arrived.forget(waiter)
        if not notified:
            owner = self.owner()
            if owner is not None:
                with inbox.lock:
                    owner.check_orphaned()
        return DIRECT if direct else HUB

    def wait_ended(self, inbox: Waited, timeout: float | None) -> bool:
        """Wait until the channel has ended; return whether it has."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with inbox.lock:
                if inbox.ended:
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                waiter = self.arrived.register()
            self.arrived.wait_registered(waiter, remaining)
