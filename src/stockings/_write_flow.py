"""Write-side flow control: writers wait while an outbound queue is too long.

A write that finds its :class:`~stockings._outbox.Outbox` over the
high-water mark waits, here, until the queue has drained below the
low-water mark, then queues its message; the outbox's
:class:`~stockings._sender.Sender` wakes the waiting writers as the kernel
takes the queue below that mark, and the channel wakes them when it stops
taking writes, which they then refuse. The outbox judges the first attempt
itself, so a write that need not wait never comes here.

A writer waits with no lock held, on a lock of its own that a wake-up
releases: an interrupted wait then has no lock to take back, so it cannot
leave one held or released twice (see ``docs/topics/interrupts.md``). Of
its outbox, :class:`WriteFlow` uses only the lock, the queue's byte count,
whether it is closing and the error a refused write raises
(:class:`FlowQueue`); it is given the outbox on each wait rather than
holding it.
"""

from __future__ import annotations

import math
import time
from _thread import LockType
from collections.abc import Callable
from typing import Any, Protocol

from ._errors import ConnectionClosed, WriteTimeout
from ._sync import LazyCondition, wait_for_release

__all__ = ["FlowQueue", "WriteFlow"]


class FlowQueue(Protocol):
    """What a :class:`WriteFlow` uses of its outbox."""

    #: Guards the queue and its count.
    lock: LockType
    #: True once no more messages are taken.
    closing: bool
    #: Bytes queued and not yet handed to the kernel.
    _out_bytes: int

    def _closed_error(self) -> ConnectionClosed:
        """The error a write refused once :attr:`closing` raises."""


class WriteFlow:
    """The writers waiting for one outbound queue to drain.

    Args:
        lock: the outbox's lock.
        low_water: the queue's low-water mark, in bytes.
    """

    __slots__ = ("_drained", "low_water", "waiters")

    def __init__(self, lock: LockType, low_water: int) -> None:
        self._drained = LazyCondition(lock)
        self.low_water = low_water
        #: How many writers wait (the outbox's lock).
        self.waiters = 0

    def wait_to_queue(
        self,
        box: FlowQueue,
        queue: Callable[..., None],
        args: tuple[Any, ...],
        timeout: float | None,
    ) -> None:
        """Wait below the low-water mark, then call ``queue(*args)`` with the lock held.

        For a write that found the queue over its high-water mark.

        Raises:
            ConnectionClosed: the outbox is closing, or started to meanwhile.
            WriteTimeout: the queue did not drain within ``timeout``.
        """
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        while True:
            with box.lock:
                if box.closing:
                    raise box._closed_error()
                if box._out_bytes <= self.low_water:
                    queue(*args)
                    return
                if deadline - time.monotonic() <= 0:
                    raise WriteTimeout(
                        f"outbound queue still held {box._out_bytes} bytes after {timeout} s"
                    )
                waiter = self._drained.register()
                self.waiters += 1
            try:
                wait_for_release(
                    waiter, None if deadline == math.inf else deadline - time.monotonic()
                )
            finally:
                with box.lock:
                    self._drained.forget(waiter)
                    self.waiters -= 1

    def wake(self) -> None:
        """Wake every waiting writer (the outbox's lock held)."""
        self._drained.notify_all()

    def reset(self, lock: LockType) -> None:
        """Start afresh over a new lock, with no writer waiting (a forked child)."""
        self._drained = LazyCondition(lock)
        self.waiters = 0
