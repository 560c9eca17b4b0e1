"""What the hub's selector watches one channel's socket for, and the lock that guards it.

Only the hub thread changes the selector, with one exception: on an epoll
hub a direct reader (``_direct``) stops the hub watching its socket while
it receives on its own thread, and has it watch again after. Both go
through :class:`Interest`, under its ``lock``, which is taken inside the
receiver's lock when both are held.

The channel decides what it wants watched (its ``_wanted_events``, asked
of its transport); an :class:`Interest` only brings the selector in line,
with as few calls as each selector allows, and forgets the socket once the
channel has released it.
"""

from __future__ import annotations

import errno
import socket
from threading import Lock

from ._common import _RELEASED, _UNREGISTERED
from ._epoll import EpollSelector
from ._hub import Hub

__all__ = ["Interest"]


class Interest:
    """The selector's registration of one socket on one hub.

    It holds neither the channel nor anything that does, so that the two
    make no reference cycle.

    Args:
        sock: the channel's socket.
        hub: the hub whose selector watches it.
    """

    __slots__ = ("events", "hub", "lock", "sock", "state", "watched_fd")

    def __init__(self, sock: socket.socket, hub: Hub) -> None:
        self.sock = sock
        self.hub = hub
        #: Guards everything here.
        self.lock = Lock()
        #: What the selector watches for now; -1 while a change is under way.
        self.events = 0
        #: The descriptor registered with an EpollSelector, which keeps it
        #: registered while it watches it for nothing; -1 when not.
        self.watched_fd = -1
        #: ``_UNREGISTERED`` until the hub first registers the socket,
        #: ``_LIVE`` from then on, ``_RELEASED`` once the channel has ended.
        self.state = _UNREGISTERED

    def apply(self, events: int, channel: object) -> None:
        """Have the selector watch for ``events`` (``lock`` held).

        ``channel`` is the selector key's data: the hub calls its ``handle_events``.

        Raises:
            OSError: the socket was closed behind the stocking's back.
        """
        if events == self.events:
            return
        selector = self.hub.selector
        sock = self.sock
        try:
            if isinstance(selector, EpollSelector):
                # Registered once; from then on one epoll_ctl per change.
                if self.watched_fd >= 0:
                    # Unknown until watch() returns: a change interrupted by a
                    # signal handler (a direct reader on the main thread) is
                    # then made again by the next call, not taken as done.
                    self.events = -1
                    selector.watch(self.watched_fd, events)
                elif events:
                    self.watched_fd = selector.register(sock, events, channel).fd
            elif not self.events:
                selector.register(sock, events, channel)
            elif not events:
                selector.unregister(sock)
            else:
                selector.modify(sock, events, channel)
        except ValueError as exc:
            # The selectors' word for a socket closed behind the stocking's
            # back (its fileno() is -1): a connection error like any other,
            # so the stocking ends with an OSError whichever path met it first.
            if sock.fileno() >= 0:
                raise
            raise OSError(errno.EBADF, "the socket was closed behind the stocking") from exc
        self.events = events

    def release(self) -> None:
        """The channel ends: unregister the socket for good (``lock`` held)."""
        self.state = _RELEASED
        if self.events or self.watched_fd >= 0:
            try:
                self.hub.selector.unregister(self.sock)
            except (KeyError, ValueError, OSError):
                pass
            self.forget()

    def forget(self) -> None:
        """The selector no longer knows the socket (its loop broke, or it was released)."""
        self.events = 0
        self.watched_fd = -1
