"""The listening side of a server: opening the listening socket, and accepting on the hub.

The listening socket is served by a hub like any stocking: the hub thread
accepts every pending connection when the socket turns readable and hands
the raw sockets on, so accepting costs no thread per connection and never
blocks. When the taker wants no more for now, accepting pauses until it is
resumed: the kernel's queue then fills and pushes back on connecting
clients, as it would with no server object.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import stat
from collections.abc import Callable

from ._hub import Hub

__all__ = ["ACCEPT_BATCH", "ACCEPT_RETRY_DELAY", "Listener", "listen", "over_limit"]

#: The most connections the hub accepts in one turn, so a burst of
#: connections does not hold up the I/O of established ones.
ACCEPT_BATCH = 256
#: How long accepting rests after running out of descriptors or memory.
ACCEPT_RETRY_DELAY = 0.1

_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def listen(target: tuple[str, int] | str, backlog: int) -> tuple[socket.socket, str | None]:
    """Open the listening socket; return it and the Unix path, if any."""
    if isinstance(target, str):
        path = target
        _remove_stale_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        return sock, path
    host, port = target
    family = socket.AF_INET6 if host and ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=backlog), None


def over_limit(fd: int, limit: int) -> OSError:
    """The error for a descriptor a ``select()`` hub cannot watch."""
    return OSError(
        errno.EMFILE,
        f"descriptor {fd} is over select()'s limit (FD_SETSIZE {limit}):"
        " connection refused; use Stocking or PollStocking, which have no such limit",
    )


def _remove_stale_socket(path: str) -> None:
    # A socket file left by a server that died would make bind() fail; any
    # other kind of file is not ours to remove.
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


class Listener:
    """The listening socket as the hub sees it: accepts in batches (hub thread only).

    It knows nothing of the server it accepts for: what it accepts, and
    what goes wrong, it hands to the callbacks it was given.

    Args:
        sock: the listening socket, non-blocking.
        hub: the hub whose thread accepts; :meth:`start` is run on it.
        fd_limit: descriptors from this one up cannot be served by the
            stockings' selector, and their connections are refused;
            ``None`` for no limit.
        deliver: takes each accepted socket; returns false once it wants no
            more until :meth:`resume` (accepting then pauses).
        note_error: told of each error accepting ran into.
        lost: told, once, why the listening socket stopped for good.
    """

    __slots__ = ("deliver", "events", "fd_limit", "hub", "lost", "note_error", "sock", "stopped")

    def __init__(
        self,
        sock: socket.socket,
        hub: Hub,
        fd_limit: int | None,
        deliver: Callable[[socket.socket], bool],
        note_error: Callable[[OSError], None],
        lost: Callable[[BaseException], None],
    ) -> None:
        self.sock = sock
        self.hub = hub
        self.fd_limit = fd_limit
        self.deliver = deliver
        self.note_error = note_error
        self.lost = lost
        self.events = 0
        self.stopped = False

    def start(self) -> None:
        if not self.stopped:
            self.hub.selector.register(self.sock, selectors.EVENT_READ, self)
            self.events = selectors.EVENT_READ

    def pause(self) -> None:
        if self.events:
            self.hub.selector.unregister(self.sock)
            self.events = 0

    def resume(self) -> None:
        if not self.stopped and not self.events:
            self.start()

    def stop(self) -> None:
        if self.stopped:
            return
        self.pause()
        self.stopped = True
        self.sock.close()
        self.hub.detach(self)

    def handle_events(self, mask: int) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    # Level-triggered: retrying now would spin. Rest; the
                    # kernel keeps the connections queued meanwhile.
                    self.note_error(exc)
                    self.pause()
                    self.hub.call_later(ACCEPT_RETRY_DELAY, self.resume)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue  # the client gave up before we accepted it
                self.note_error(exc)
                self.stop()
                self.lost(exc)
                return
            limit = self.fd_limit
            if limit is not None and conn.fileno() >= limit:
                # The stocking's selector could not watch it: refuse this one
                # connection (the client sees it closed), not the hub.
                self.note_error(over_limit(conn.fileno(), limit))
                conn.close()
                continue
            if not self.deliver(conn):
                self.pause()
                return

    def hub_failed(self, exc: BaseException) -> None:
        if self.stopped:
            return
        self.events = 0
        self.stopped = True
        self.sock.close()
        self.hub.detach(self)
        self.lost(exc)
