"""Telling which connection a fault in a hub's loop concerns.

The hub ends only the connections a fault concerns (see ``_hub``); these
helpers find them: the sockets a selector refuses, and the connection a
failing callback works for. Also the descriptor limit of ``select()``.
"""

from __future__ import annotations

import functools
import os
import selectors
import sys
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from ._log import log_unexpected

__all__ = ["SELECT_FD_LIMIT", "fd_limit_of", "owner_of", "report", "sort_refused"]

#: ``select.select`` takes no descriptor from this one up (``FD_SETSIZE``,
#: fixed when Python was built; 1024 on Linux and macOS).
SELECT_FD_LIMIT = 1024

_M = TypeVar("_M")


def fd_limit_of(selector_factory: Callable[[], selectors.BaseSelector]) -> int | None:
    """The first descriptor a selector made by ``selector_factory`` cannot watch, if any."""
    if (
        sys.platform != "win32"  # Windows limits how many sockets, not their numbers
        and isinstance(selector_factory, type)
        and issubclass(selector_factory, selectors.SelectSelector)
    ):
        return SELECT_FD_LIMIT
    return None


def sort_refused(
    selector: selectors.BaseSelector, limit: int | None
) -> tuple[list[tuple[selectors.SelectorKey, int]], list[Any]]:
    """Find what a failing ``select()`` may have refused.

    Returns:
        The keys of sockets closed behind their connection's back, as
        readable events (the connection then meets the closed socket
        itself), and the connections whose descriptor the selector cannot
        take (over ``limit``) or that is no longer open.
    """
    closed = []
    refused = []
    for key in list(selector.get_map().values()):
        member = key.data
        if member is None:
            continue
        fileobj = key.fileobj
        if not isinstance(fileobj, int) and fileobj.fileno() < 0:
            closed.append((key, selectors.EVENT_READ))
        elif (limit is not None and key.fd >= limit) or not _is_open(key.fd):
            refused.append(member)
    return closed, refused


def owner_of(callback: object, members: Collection[_M]) -> _M | None:
    """The member a callback works for, if it can be told.

    That is a bound method of it, a ``functools.partial`` of one, or a
    function that closes over it or over one of its bound methods.
    """
    by_id = {id(member): member for member in members}
    while isinstance(callback, functools.partial):
        callback = callback.func
    candidates = [callback]
    for cell in getattr(callback, "__closure__", None) or ():
        try:
            candidates.append(cell.cell_contents)
        except ValueError:  # an empty cell
            pass
    for candidate in candidates:
        for obj in (candidate, getattr(candidate, "__self__", None)):
            if id(obj) in by_id:
                return by_id[id(obj)]
    return None


def report(exc: BaseException) -> None:
    """Report an exception nobody else will see (``stockings.hub``, ERROR)."""
    log_unexpected(exc, "error in a hub's loop")


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
