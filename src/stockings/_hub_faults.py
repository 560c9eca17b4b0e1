"""Containing a fault in a hub's loop to the connections it concerns.

A hub's loop serves many connections, so a fault ends only those it
concerns. A connection whose readiness handler or callback raises is ended
with that exception; a socket the selector refuses (closed behind its
connection's back, or over ``select()``'s descriptor limit) ends only its
own connection; a selector that keeps failing, or a bug in the loop
itself, ends every connection the hub serves, those still waiting to be
registered included, so nobody waits on a loop that is gone. The
:class:`Containment` applies these rules, apart from the loop (``_hub``)
so that the loop reads as its steady state. Also the descriptor limit of
``select()``.
"""

from __future__ import annotations

import functools
import os
import selectors
import sys
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, TypeVar

from ._log import log_unexpected

if TYPE_CHECKING:
    from ._hub import Attached, Hub

__all__ = ["SELECT_FD_LIMIT", "Containment", "fd_limit_of", "owner_of", "report", "sort_refused"]

#: ``select.select`` takes no descriptor from this one up (``FD_SETSIZE``,
#: fixed when Python was built; 1024 on Linux and macOS).
SELECT_FD_LIMIT = 1024

#: How many times in a row ``select()`` may fail with no culprit found
#: before the selector counts as broken.
SELECT_RETRIES = 1

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


class Containment:
    """Ends the connections a fault in one hub's loop concerns (hub thread).

    Args:
        hub: the hub; asked for its members, to count one out
            (:meth:`Hub.detach`), and to give them all up when the loop broke.
    """

    __slots__ = ("_hub", "select_failures")

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        #: ``select()`` failures in a row with no culprit found; the loop
        #: sets it back to 0 after each ``select()`` that worked.
        self.select_failures = 0

    def select_failed(
        self, selector: selectors.BaseSelector, error: Exception
    ) -> list[tuple[selectors.SelectorKey, int]]:
        """Find the sockets ``select()`` refused over; end only their connections.

        A socket closed behind its connection's back is reported readable,
        so the connection meets the closed socket itself. A descriptor the
        selector cannot take, or one that is no longer open, ends its
        connection with ``error``. With no culprit, ``select()`` is retried;
        failing again so, the selector is broken and ``error`` propagates.
        """
        # The selector itself says what it can take: a factory that is no
        # class (say, a lambda) hides that from ``fd_limit``.
        closed, refused = sort_refused(selector, fd_limit_of(type(selector)))
        for member in refused:
            self.member_failed(selector, member, error)
        if closed or refused:
            self.select_failures = 0
            return closed
        self.select_failures += 1
        if self.select_failures > SELECT_RETRIES:
            raise error
        return []

    def member_failed(
        self, selector: selectors.BaseSelector, member: Attached, exc: BaseException
    ) -> None:
        """End one connection with ``exc``, which it raised or which concerns it alone."""
        for key in list(selector.get_map().values()):
            if key.data is member:
                try:
                    selector.unregister(key.fileobj)
                except (KeyError, ValueError, OSError):
                    pass
        try:
            member.hub_failed(exc)
        except Exception as again:  # pragma: no cover - a bug in hub_failed itself
            report(again)
        # Counted out here if it failed to detach itself.
        self._hub.detach(member)

    def callback_failed(
        self, selector: selectors.BaseSelector, callback: Callable[[], None], exc: Exception
    ) -> None:
        """A callback raised: end the connection it works for, if one can be told."""
        owner = owner_of(callback, self._hub._members_now())
        if owner is None:
            # Nobody to end: report it and keep serving everyone else.
            report(exc)
        else:
            self.member_failed(selector, owner, exc)

    def loop_failed(self, selector: selectors.BaseSelector, exc: BaseException) -> None:
        """The loop itself broke: end every connection, registered yet or not."""
        # Never die silently: end every connection with the error, those
        # still waiting to register too, so no user waits forever on a loop
        # that is gone. A selector that broke says so in each end; anything
        # else is a bug in the loop and is reported as well.
        if not isinstance(exc, (OSError, ValueError)):
            report(exc)
        unnamed: list[Attached] = []
        try:
            unnamed = [key.data for key in selector.get_map().values() if key.data is not None]
        except Exception:  # pragma: no cover - a selector too broken to list its keys
            pass
        while members := self._hub._disband(selector, unnamed):
            unnamed = []
            for member in members:
                try:
                    member.hub_failed(exc)
                except Exception as again:  # pragma: no cover - a bug in hub_failed itself
                    report(again)
