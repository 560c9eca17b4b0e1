"""A condition variable that costs almost nothing until a thread waits on it.

Every stocking has two conditions (messages arrived, outbound queue
drained), and most of the time nobody waits on either. ``threading.Condition``
allocates a waiter deque, an instance dict and bound methods up front, about
700 bytes each; with ten thousand stockings that is 14 MB spent on waits
that never happen. :class:`LazyCondition` keeps two slots and makes its
waiter list on the first wait.
"""

from __future__ import annotations

import time
from _thread import LockType, allocate_lock
from collections.abc import Callable
from typing import TypeVar

__all__ = ["LazyCondition"]

_T = TypeVar("_T")


class LazyCondition:
    """A condition variable over a lock the caller already holds.

    Offers the part of ``threading.Condition`` stockings uses: ``wait``,
    ``wait_for``, ``notify`` and ``notify_all``, each called with the lock
    held (taken with the lock's own ``with``, not the condition's).

    Args:
        lock: the plain lock that guards the state waited on.
    """

    __slots__ = ("_lock", "_waiters")

    def __init__(self, lock: LockType) -> None:
        self._lock = lock
        self._waiters: list[LockType] | None = None

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, wait for a notify or ``timeout``, take the lock again.

        Returns:
            False if ``timeout`` ran out, True otherwise.
        """
        # A fresh lock per wait, taken once here and released by notify: the
        # second acquire below blocks until then.
        waiter = allocate_lock()
        waiter.acquire()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        self._lock.release()
        notified = False
        try:
            if timeout is None:
                notified = waiter.acquire()
            elif timeout > 0:
                notified = waiter.acquire(True, timeout)
            else:
                notified = waiter.acquire(False)
            return notified
        finally:
            self._lock.acquire()
            if not notified:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass  # notified between the timeout and taking the lock back

    def wait_for(self, predicate: Callable[[], _T], timeout: float | None = None) -> _T:
        """Wait until ``predicate()`` is true or ``timeout`` runs out; return its last value."""
        deadline = None if timeout is None else time.monotonic() + timeout
        result = predicate()
        while not result:
            if deadline is None:
                self.wait()
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.wait(remaining)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiting threads."""
        waiters = self._waiters
        if not waiters:
            return
        for waiter in waiters[:n]:
            waiter.release()
        del waiters[:n]

    def notify_all(self) -> None:
        """Wake every waiting thread."""
        waiters = self._waiters
        if not waiters:
            return
        for waiter in waiters:
            waiter.release()
        waiters.clear()
