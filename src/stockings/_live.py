"""A set of the live objects of a kind, held weakly and without callbacks.

``weakref.WeakSet`` removes a dead member through a Python callback, run by
whichever thread drops the last reference, often the main thread while it
closes a stocking. A signal handler's exception (Ctrl-C) that lands inside
that callback cannot propagate: Python prints it as unraisable and drops
it, and the program carries on as if the key had never been pressed. Plain
weak references without a callback run no Python code when their object
dies, so the exception reaches the program. Dead references are pruned as
the set grows instead.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["LiveSet"]

T = TypeVar("T")

#: Below this many references the set is not pruned.
_PRUNE_FLOOR = 64


class LiveSet(Generic[T]):
    """Weak references to objects, for listing the live ones now and then.

    Lock-free, so that a forked child (which may inherit a lock held by a
    thread it does not have) can use it: every member gets a key of its own
    that is never reused, so adding and pruning never touch the same entry,
    and each dictionary operation is atomic.
    """

    def __init__(self) -> None:
        self._refs: dict[int, weakref.ref[T]] = {}
        self._keys = itertools.count()
        self._prune_at = _PRUNE_FLOOR

    def add(self, item: T) -> None:
        """Hold ``item`` weakly (any thread)."""
        refs = self._refs
        refs[next(self._keys)] = weakref.ref(item)
        if len(refs) >= self._prune_at:
            # Raised first, so that threads adding meanwhile do not all prune.
            self._prune_at = 2 * len(refs)
            for key, ref in _snapshot(refs):
                if ref() is None:
                    refs.pop(key, None)
            self._prune_at = max(_PRUNE_FLOOR, 2 * len(refs))

    def __iter__(self) -> Iterator[T]:
        """The members alive now (a snapshot: members may die or come meanwhile)."""
        return iter([item for _, ref in _snapshot(self._refs) if (item := ref()) is not None])


def _snapshot(refs: dict[int, weakref.ref[T]]) -> list[tuple[int, weakref.ref[T]]]:
    """The entries of ``refs`` now, though other threads add to it meanwhile.

    Copying a dictionary allocates, which may run the cyclic collector and
    with it other threads (Python 3.10 and 3.11 collect at any allocation),
    so another thread's ``add`` can change its size during the copy: then
    copy again.
    """
    while True:
        try:
            return list(refs.items())
        except RuntimeError:
            continue
