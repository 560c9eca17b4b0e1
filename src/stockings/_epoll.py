"""An epoll selector whose interest in a descriptor changes cheaply, from any thread.

``selectors.EpollSelector`` rebuilds a key for every change of interest and
needs the events to be non-zero, so a connection that stops reading for a
moment pays for an unregister and a register: a few microseconds of Python
per change. :meth:`EpollSelector.watch` is one ``epoll_ctl`` call instead.
The epoll set takes a change at once, even while another thread waits in
:meth:`~EpollSelector.select`, which is what lets a reader take its socket
over from the hub thread and hand it back (see ``DirectReader.read`` in ``_direct``).
"""

from __future__ import annotations

import math
import select
import selectors
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["EpollSelector", "epoll_available"]

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE

#: Whether this platform has epoll.
epoll_available = hasattr(select, "epoll")


def _kernel_mask(events: int) -> int:
    return (select.EPOLLIN if events & _READ else 0) | (select.EPOLLOUT if events & _WRITE else 0)


def _fileno(fileobj: Any) -> int:
    fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
    if not isinstance(fd, int) or fd < 0:
        raise ValueError(f"invalid file descriptor: {fd!r}")
    return fd


class EpollSelector(selectors.BaseSelector):
    """A ``selectors`` selector over epoll with a cheap, thread-safe :meth:`watch`.

    It keeps, apart from each key, the events the kernel watches for now:
    :meth:`select` reports only those, and a registered descriptor may be
    watched for nothing (it then leaves the epoll set, so not even a hang-up
    wakes the loop for it).
    """

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._keys: dict[int, selectors.SelectorKey] = {}
        # What the kernel watches each registered descriptor for; 0 when it
        # is out of the epoll set.
        self._watched: dict[int, int] = {}

    def fileno(self) -> int:
        """The epoll descriptor."""
        return self._epoll.fileno()

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        """Register ``fileobj`` for ``events``, as ``selectors`` does."""
        if not events or events & ~(_READ | _WRITE):
            raise ValueError(f"invalid events: {events!r}")
        fd = _fileno(fileobj)
        if fd in self._keys:
            raise KeyError(f"{fileobj!r} (fd {fd}) is already registered")
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._epoll.register(fd, _kernel_mask(events))
        self._keys[fd] = key
        self._watched[fd] = events
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        """Forget ``fileobj``; it may already be closed.

        Raises:
            KeyError: it is not registered.
        """
        fd = self._find(fileobj)
        key = self._keys.pop(fd)
        if self._watched.pop(fd, 0):
            try:
                self._epoll.unregister(fd)
            except OSError:
                # Closed already, which took it out of the epoll set.
                pass
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        """Change the events and data of a registered ``fileobj``."""
        if not events or events & ~(_READ | _WRITE):
            raise ValueError(f"invalid events: {events!r}")
        fd = self._find(fileobj)
        key = self._keys[fd]
        self.watch(fd, events)
        if events != key.events or data is not key.data:
            key = self._keys[fd] = key._replace(events=events, data=data)
        return key

    def watch(self, fd: int, events: int) -> None:
        """Watch a registered descriptor for ``events`` from now on; 0 for nothing.

        One ``epoll_ctl`` call at most; safe from any thread, provided calls
        for one descriptor are not made concurrently, and the descriptor
        stays registered until the call returns.
        """
        current = self._watched[fd]
        if events == current:
            return
        # The record first: a select() running meanwhile then never drops
        # an event the kernel reports for what is newly watched.
        self._watched[fd] = events
        try:
            if not events:
                self._epoll.unregister(fd)
            elif not current:
                self._epoll.register(fd, _kernel_mask(events))
            else:
                self._epoll.modify(fd, _kernel_mask(events))
        except OSError:
            # Only a failed epoll_ctl is undone: an exception a signal
            # handler raises once it returned must not undo a change made.
            self._watched[fd] = current
            raise

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        """Wait for readiness, as ``selectors`` does; reports only watched events."""
        if timeout is None:
            wait = -1.0
        elif timeout <= 0:
            wait = 0.0
        else:
            # Round up to the millisecond epoll counts in, or a short
            # timeout would wake the loop early and spin.
            wait = math.ceil(timeout * 1e3) * 1e-3
        try:
            events = self._epoll.poll(wait, max(len(self._keys), 1))
        except InterruptedError:
            return []
        ready = []
        keys = self._keys
        watched = self._watched
        for fd, happened in events:
            key = keys.get(fd)
            if key is None:
                continue
            # A hang-up or error counts as both: a read or write will tell.
            mask = (_READ if happened & ~select.EPOLLOUT else 0) | (
                _WRITE if happened & ~select.EPOLLIN else 0
            )
            mask &= watched.get(fd, 0)
            if mask:
                ready.append((key, mask))
        return ready

    def close(self) -> None:
        """Release the epoll descriptor."""
        self._epoll.close()
        self._keys.clear()
        self._watched.clear()

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        """The key of a registered ``fileobj``.

        Raises:
            KeyError: it is not registered.
        """
        return self._keys[self._find(fileobj)]

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        """A read-only view of the keys, by descriptor."""
        return MappingProxyType(self._keys)

    def _find(self, fileobj: Any) -> int:
        try:
            fd = _fileno(fileobj)
        except ValueError:
            # Closed already: find it by identity, as ``selectors`` does.
            for key in self._keys.values():
                if key.fileobj is fileobj:
                    return key.fd
            raise KeyError(f"{fileobj!r} is not registered") from None
        if fd not in self._keys:
            raise KeyError(f"{fileobj!r} is not registered")
        return fd
