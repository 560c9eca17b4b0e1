"""A server's accepted connections that nobody has taken yet.

This queue is where a server's threads meet: the hub thread puts raw
sockets in, user threads (or the handler thread) take them out or wait for
them, and :func:`stockings.wait` watches it. Kept apart from
:class:`~stockings._server.Server` so that the rules of that meeting sit in
one place: pushing back on clients once ``backlog`` connections wait, and
waking every taker and watcher when the server stops.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable

from ._sync import wait_for_condition

__all__ = ["Accepted"]


class Accepted:
    """The sockets accepted and not yet taken, and the threads waiting for them.

    Args:
        lock: the server's lock, which guards this queue too, so that a
            server's close and the queue's change as one.
        backlog: how many may wait before accepting pauses.
        resume: asks the hub to accept again, once takers have brought the
            queue down to half of ``backlog``.
    """

    __slots__ = (
        "_arrived",
        "_backlog",
        "_lock",
        "_resume",
        "_sockets",
        "_watchers",
        "closed",
        "failed",
        "paused",
    )

    def __init__(self, lock: threading.Lock, backlog: int, resume: Callable[[], None]) -> None:
        self._lock = lock
        self._arrived = threading.Condition(lock)
        self._backlog = backlog
        self._resume = resume
        self._sockets: deque[socket.socket] = deque()
        self._watchers: list[Callable[[], None]] = []
        #: The server was closed: sockets are refused and nobody waits.
        self.closed = False
        #: The listening socket failed: nobody waits.
        self.failed = False
        #: Whether accepting is paused until takers catch up.
        self.paused = False

    @property
    def ready(self) -> bool:
        """True while a connection waits to be taken, or once the server stopped."""
        return bool(self._sockets) or self.closed or self.failed

    def put(self, conn: socket.socket) -> bool:
        """Queue an accepted socket (hub thread); return False once the queue is full."""
        with self._lock:
            if self.closed:
                conn.close()
                return True
            self._sockets.append(conn)
            self._arrived.notify()
            for callback in self._watchers:
                callback()
            if len(self._sockets) >= self._backlog:
                self.paused = True
                return False
            return True

    def take(self, deadline: float | None) -> socket.socket | None:
        """The next socket, waiting until ``deadline``; ``None`` if none or stopped."""
        with self._lock:
            wait_for_condition(
                self._arrived,
                lambda: self._sockets or self.closed or self.failed,
                None if deadline is None else deadline - time.monotonic(),
            )
            if not self._sockets:
                return None
            conn = self._sockets.popleft()
            if self.paused and len(self._sockets) <= self._backlog // 2:
                self.paused = False
                self._resume()
            return conn

    def fail(self) -> None:
        """The listening socket failed: wake every taker and watcher."""
        with self._lock:
            self.failed = True
            self._stopped()

    def close_locked(self) -> list[socket.socket]:
        """The server closes (its lock held): take out what waits, wake everyone."""
        self.closed = True
        pending = list(self._sockets)
        self._sockets.clear()
        self._stopped()
        return pending

    def _stopped(self) -> None:
        self._arrived.notify_all()
        for callback in self._watchers:
            callback()

    def watch(self, callback: Callable[[], None]) -> bool:
        """Call ``callback`` when the server may have become :attr:`ready`."""
        with self._lock:
            self._watchers.append(callback)
            return self.ready

    def unwatch(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback``."""
        with self._lock:
            try:
                self._watchers.remove(callback)
            except ValueError:
                pass
