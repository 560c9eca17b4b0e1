"""Waiting: a condition variable that costs nothing until used, and sleeps that let handlers run.

Every stocking has two conditions (messages arrived, outbound queue
drained), and most of the time nobody waits on either. ``threading.Condition``
allocates a waiter deque, an instance dict and bound methods up front, about
700 bytes each; with ten thousand stockings that is 14 MB spent on waits
that never happen. :class:`LazyCondition` keeps two slots and makes its
waiter list on the first wait.

Every wait the library makes sleeps for at most
:data:`SIGNAL_CHECK_INTERVAL` at a time (:func:`wait_for_release`,
:func:`join_thread`), then goes round again. A signal that arrives just
before a thread goes to sleep interrupts no system call, and its handler
(Ctrl-C's ``KeyboardInterrupt``, a program's ``SIGTERM`` handler) runs
only once the main thread executes Python again: were the main thread to
sleep without a bound, a wait nothing else ends would hold the handler
back for ever.
"""

from __future__ import annotations

import threading
import time
from _thread import LockType, allocate_lock
from collections.abc import Callable, Iterator
from typing import TypeVar

__all__ = [
    "SIGNAL_CHECK_INTERVAL",
    "LazyCondition",
    "join_thread",
    "wait_for_condition",
    "wait_for_release",
]

_T = TypeVar("_T")

#: The longest one sleep of a waiting thread (seconds): the most a signal
#: that came just before the sleep waits for its handler to run.
SIGNAL_CHECK_INTERVAL = 0.5


def _sleeps(timeout: float | None) -> Iterator[float]:
    """The sleeps a wait of ``timeout`` seconds (``None``: no bound) is made of.

    Each is at most :data:`SIGNAL_CHECK_INTERVAL`; the last ends at the
    deadline. Between two, the caller's loop runs the handlers of signals
    that came.
    """
    if timeout is None:
        while True:
            yield SIGNAL_CHECK_INTERVAL
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        yield min(remaining, SIGNAL_CHECK_INTERVAL)


def wait_for_release(waiter: LockType, timeout: float | None) -> bool:
    """Acquire ``waiter``, which another thread releases to wake this one.

    As ``waiter.acquire(True, timeout)`` (``None``: no bound), in sleeps of
    at most :data:`SIGNAL_CHECK_INTERVAL`; a signal handler's exception
    comes out between two of them. For a waiter lock, held by nobody once
    released: an exception after the acquire leaves it held, which costs
    nothing.

    Returns:
        Whether it was acquired before ``timeout`` ran out.
    """
    for sleep in _sleeps(timeout):
        if waiter.acquire(True, sleep):
            return True
    return waiter.acquire(False)


def join_thread(thread: threading.Thread, timeout: float | None) -> None:
    """``thread.join(timeout)`` (``None``: no bound), in sleeps as :func:`wait_for_release`'s."""
    for sleep in _sleeps(timeout):
        if not thread.is_alive():
            return
        thread.join(sleep)


def wait_for_condition(
    condition: threading.Condition, predicate: Callable[[], _T], timeout: float | None = None
) -> _T:
    """``condition.wait_for(predicate, timeout)``, in sleeps as :func:`wait_for_release`'s."""
    result = predicate()
    for sleep in _sleeps(timeout):
        if result:
            break
        condition.wait(sleep)
        result = predicate()
    return result


class LazyCondition:
    """A condition variable over a lock the caller already holds.

    Offers the part of ``threading.Condition`` stockings uses: ``wait``,
    ``wait_for``, ``notify`` and ``notify_all``, each called with the lock
    held (taken with the lock's own ``with``, not the condition's); and
    ``register`` / ``forget`` for a waiter that waits with the lock released,
    which is what code reachable from the main thread does (a signal may
    interrupt any wait there, and ``wait`` must take the lock back after).

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
        waiter = self.register()
        notified = False
        try:
            # Inside the try: an interrupt just after the release still
            # takes the lock back below, so the caller's ``with`` stays right.
            self._lock.release()
            notified = wait_for_release(waiter, timeout)
            return notified
        finally:
            self._lock.acquire()
            if not notified:
                # Notified between the timeout and taking the lock back, or not.
                self.forget(waiter)

    def register(self) -> LockType:
        """Add a waiter (lock held) for a caller that waits with the lock released.

        The caller releases the lock (leaves its ``with`` block), then waits
        with ``acquire(True, timeout)`` on the lock returned, which a notify
        releases; :meth:`forget` it (lock held) if it stopped waiting early.
        Waiting outside the lock means a signal that interrupts the wait
        finds no lock to take back: see ``docs/topics/interrupts.md``.
        """
        waiter = allocate_lock()
        waiter.acquire()
        if self._waiters is None:
            self._waiters = [waiter]
        else:
            # In-place concatenation rather than append: no call, so no
            # signal handler runs between the change and the next line.
            self._waiters += (waiter,)
        return waiter

    def wait_registered(self, waiter: LockType, timeout: float | None) -> bool:
        """Wait, with the lock released, for ``waiter`` from :meth:`register` to be notified.

        Up to ``timeout`` seconds (``None``: no bound); then :meth:`forget`
        it, taking the lock for that, however the wait ended. An interrupt
        in the wait finds no lock to take back.

        Returns:
            Whether it was notified in time.
        """
        try:
            return wait_for_release(waiter, timeout)
        finally:
            with self._lock:
                self.forget(waiter)

    def forget(self, waiter: LockType) -> None:
        """Drop a waiter that stopped waiting before a notify (lock held)."""
        if self._waiters:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass  # notified meanwhile

    def wait_for(self, predicate: Callable[[], _T], timeout: float | None = None) -> _T:
        """Wait until ``predicate()`` is true or ``timeout`` runs out; return its last value."""
        result = predicate()
        for sleep in _sleeps(timeout):
            if result:
                break
            self.wait(sleep)
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
