"""Waiting on many stockings at once, without a descriptor per stocking.

A :class:`Waiter` asks each stocking's channel to call it back whenever the
stocking may have become ready (a message arrived, the handshake finished,
the connection ended). The callback only notes the stocking in an ordered
set and wakes the waiting thread through a condition, so waiting costs no
thread, no descriptor and no polling, and one turn of :meth:`Waiter.wait`
costs time in proportion to what happened, not to how many stockings it
watches.

Readiness is level-triggered, as with ``select()``: a noted stocking is
checked again before it is returned, and stays in the set while it is still
ready, so a stocking whose messages are not all read is returned again by
the next wait. :func:`wait` is the one-shot form, in the spirit of
``multiprocessing.connection.wait``.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, Union, cast

from ._closing import ClosesOnExit
from ._stocking import Stocking
from ._sync import LazyCondition
from ._timeouts import bounded

if TYPE_CHECKING:
    from typing_extensions import TypeVar as DefaultTypeVar

    from ._server import Server

__all__ = ["Waitable", "Waiter", "wait"]


class _Source(Protocol):
    """What a waiter needs from the thing behind a waitable object."""

    @property
    def ready(self) -> bool:
        """True while the object has something for its user."""

    def watch(self, callback: Callable[[], None]) -> bool:
        """Call ``callback`` when the object may have become ready; return ``ready``."""

    def unwatch(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback``."""


#: What a :class:`Waiter` watches: any stocking or server.
Waitable = Union["Stocking[Any, ...]", "Server[Any]"]

_T = TypeVar("_T")

if TYPE_CHECKING:
    #: What a waiter holds and returns; all stockings and servers by default.
    _W = DefaultTypeVar("_W", bound=Waitable, default=Waitable)
else:
    _W = TypeVar("_W", bound=Waitable)


def _source_of(obj: object) -> _Source | None:
    """The readiness source behind ``obj``, or ``None`` if it has none.

    Stockings and servers name theirs ``_wait_source``.
    """
    source: _Source | None = getattr(obj, "_wait_source", None)
    return source


def _note_weakly(waiter: weakref.ref[Waiter[Any]], key: int) -> None:
    alive = waiter()
    if alive is not None:
        alive._note(key)


class Waiter(ClosesOnExit, Generic[_W]):
    """Waits on a changing set of stockings and servers; reuse it across waits.

    Registering costs a little once per object, after which each
    :meth:`wait` costs time in proportion to the objects that became ready,
    however many are registered: the tool for a loop serving thousands of
    stockings. A stocking is ready while a message waits to be read (once
    its handshake is done) or once it has ended; a :class:`~stockings.Server`
    is ready while an accepted connection waits or once it is closed.

    ``add`` and ``discard`` may be called from any thread, also while
    another thread waits.

    For type checkers a waiter is generic in what it holds, inferred from
    ``objects`` or given: ``Waiter[Stocking | Server]()`` for a loop that
    watches a server and the stockings it hands out; a plain ``Waiter()``
    holds any stocking or server.

    Args:
        objects: stockings and servers to watch from the start.

    Raises:
        TypeError: an object is neither a stocking nor a server.
    """

    def __init__(self, objects: Iterable[_W] = ()) -> None:
        self._lock = threading.Lock()
        # Waited on with the lock released (``register``/``forget``), not
        # as threading.Condition does: an interrupt in its wait may leave
        # the lock not taken back, and the ``with`` around it then fails.
        self._changed = LazyCondition(self._lock)
        # key -> (object, source, callback); keys are ids, so objects with
        # their own __eq__/__hash__ are still told apart.
        self._watched: dict[int, tuple[_W, _Source, Callable[[], None]]] = {}
        # Objects that may be ready, in the order they became so.
        self._noted: dict[int, _W] = {}
        for obj in objects:
            self.add(obj)

    def __repr__(self) -> str:
        return f"<Waiter watching={len(self._watched)}>"

    def __len__(self) -> int:
        return len(self._watched)

    def __contains__(self, obj: object) -> bool:
        entry = self._watched.get(id(obj))
        return entry is not None and entry[0] is obj

    def add(self, obj: _W) -> None:
        """Watch ``obj`` from now on; a no-op if it is watched already.

        Raises:
            TypeError: ``obj`` is neither a stocking nor a server.
        """
        source = _source_of(obj)
        if source is None:
            raise TypeError(f"cannot wait on {type(obj).__name__} objects")
        key = id(obj)
        # The source holds the callback, and a hub holds the source: through
        # a weak reference, a dropped waiter (and the stockings it watched)
        # can still be collected, and a dropped stocking finalized.
        callback = functools.partial(_note_weakly, weakref.ref(self), key)
        with self._lock:
            if key in self._watched:
                return
            self._watched[key] = (obj, source, callback)
        # Outside our lock: the source calls back with its own lock held and
        # then takes ours, so we never take the two the other way round.
        if source.watch(callback):
            self._note(key)

    def discard(self, obj: object) -> None:
        """Stop watching ``obj``; a no-op if it is not watched."""
        key = id(obj)
        with self._lock:
            entry = self._watched.get(key)
            if entry is None or entry[0] is not obj:
                return
            del self._watched[key]
            self._noted.pop(key, None)
        entry[1].unwatch(entry[2])

    def close(self) -> None:
        """Stop watching everything."""
        with self._lock:
            entries = list(self._watched.values())
            self._watched.clear()
            self._noted.clear()
            self._changed.notify_all()
        for _, source, callback in entries:
            source.unwatch(callback)

    def _note(self, key: int) -> None:
        # Called by a source, with the source's lock held: be quick.
        with self._lock:
            if key in self._noted:
                return
            entry = self._watched.get(key)
            if entry is None:
                return
            self._noted[key] = entry[0]
            self._changed.notify_all()

    def wait(self, timeout: float | None = None) -> list[_W]:
        """Return the watched objects that are ready, waiting for one if none is.

        Args:
            timeout: ``None`` waits until something is ready; ``0`` only
                looks; a positive number waits up to that many seconds.

        Returns:
            The ready objects, in the order they became ready (objects that
            were ready when added, in the order they were added); an empty
            list if none became ready in time.
        """
        timeout = bounded(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        changed = self._changed
        while True:
            with self._lock:
                ready = self._collect_locked()
                if ready:
                    return ready
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return []
                waiter = changed.register()
            changed.wait_registered(waiter, remaining)

    def _collect_locked(self) -> list[_W]:
        noted = self._noted
        if not noted:
            return []
        ready: list[_W] = []
        stale: list[int] = []
        watched = self._watched
        for key, obj in noted.items():
            # Checked under our lock: a source changes its state before it
            # calls _note, which waits for our lock, so a stocking found not
            # ready here and dropped is noted again if it becomes ready.
            if watched[key][1].ready:
                ready.append(obj)
            else:
                stale.append(key)
        for key in stale:
            del noted[key]
        return ready


def wait(objects: Iterable[_T], timeout: float | None = None) -> list[_T]:
    """Return those of ``objects`` that are ready, waiting until one is.

    Like ``multiprocessing.connection.wait``: a stocking is ready while a
    message waits to be read or once it has ended (so a loop notices the
    end); a :class:`~stockings.Server` while an accepted connection waits
    or once it is closed. Stockings and servers need no descriptor for
    this. Any other object with a ``fileno()`` method (a socket, a pipe)
    may be mixed in; the wait then goes through the descriptors, and each
    stocking makes its ``fileno()`` descriptor.

    For a loop over thousands of stockings, keep a :class:`Waiter`
    instead: it registers each stocking once rather than on every call.

    Args:
        objects: the stockings, servers and other objects to wait on.
        timeout: ``None`` waits until one is ready; ``0`` only looks; a
            positive number waits up to that many seconds.

    Returns:
        The ready objects, in the order they became ready (those ready at
        the call first, in the order given); an empty list on timeout.

    Raises:
        TypeError: an object is neither a stocking, a server nor has ``fileno()``.
    """
    timeout = bounded(timeout)
    objects = list(objects)
    sources = [_source_of(obj) for obj in objects]
    if all(source is not None for source in sources):
        # Look before registering: a busy loop mostly finds something ready.
        ready = [
            obj
            for obj, source in zip(objects, sources, strict=True)
            if source is not None and source.ready
        ]
        if ready or timeout == 0:
            return ready
        # Every object has a source here: each is a stocking or a server.
        with Waiter(cast("list[Waitable]", objects)) as waiter:
            return cast("list[_T]", waiter.wait(timeout))
    return _wait_on_descriptors(objects, sources, timeout)


def _wait_on_descriptors(
    objects: list[_T], sources: list[_Source | None], timeout: float | None
) -> list[_T]:
    from multiprocessing.connection import wait as wait_fds

    for obj, source in zip(objects, sources, strict=True):
        if source is not None and not hasattr(obj, "fileno"):
            raise TypeError(f"cannot wait on {type(obj).__name__} together with descriptors")
        if not hasattr(obj, "fileno"):
            raise TypeError(f"cannot wait on {type(obj).__name__} objects")
    found = wait_fds(cast("list[Any]", objects), timeout)
    chosen = {id(obj) for obj in found}
    return [obj for obj in objects if id(obj) in chosen]
