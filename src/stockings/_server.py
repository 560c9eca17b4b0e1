"""The server helper: listen, accept connections as stockings, shut down cleanly.

A hub thread accepts (see :mod:`stockings._listener`) and queues the raw
sockets (see :mod:`stockings._accepted`). The stocking itself is made in the thread that takes the
connection (:meth:`Server.accept`, iteration, or the server's one handler
thread), so a subclass's ``__init__`` never stalls the hub.

When more accepted connections wait than ``backlog``, the hub stops
accepting until the user catches up: the kernel's queue then fills and
pushes back on connecting clients, as it would with no server object.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import ssl as _ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

from ._accepted import Accepted
from ._client import Address, SocketAddress, describe_address, resolve_address
from ._close_all import close_all
from ._closing import ClosesOnExit
from ._hub import Hub, shared_hub
from ._hub_faults import fd_limit_of
from ._listener import Listener, listen, over_limit
from ._log import server_log
from ._opening import DEFAULT_CLOSE_TIMEOUT
from ._options import check_options, check_stocking_class
from ._sockopts import discard_socket
from ._stocking import Stocking
from ._sync import join_thread
from ._timeouts import bounded

__all__ = ["DEFAULT_BACKLOG", "Server"]

#: How many connections may wait to be accepted, in the kernel and again in
#: the server's own queue.
DEFAULT_BACKLOG = socket.SOMAXCONN
_S = TypeVar("_S", bound="Stocking[Any, ...]")


class Server(ClosesOnExit, Generic[_S]):
    """Listens on an address and hands each connection over as a stocking.

    Take connections by iterating (``for stocking in server:``), with
    :meth:`accept`, with :func:`stockings.wait` (a server is ready while a
    connection waits), or by passing a ``handler``, which the server calls
    with each new stocking from a thread of its own. Accepting is done by
    a hub thread, without a thread per connection.

    Args:
        address: ``(host, port)`` or ``"host:port"`` for TCP (port 0 picks a
            free one; see :attr:`address`), or the path of a Unix socket (a
            stale socket file there is replaced; the file is removed on
            close). A ``str`` is a path when it holds a ``/`` or no ``:``.
        cls: the stocking class to make of each connection.
        ssl: a server-side ``ssl.SSLContext`` to wrap each connection in; the
            TLS handshake then happens in the background.
        backlog: how many connections may wait to be accepted.
        handler: called as ``handler(stocking)`` for each connection, in one
            thread named ``stockings-server-...``; it should hand the
            stocking on rather than serve it, since the next connection
            waits for it to return. An exception it raises is logged (logger
            ``stockings.server``, ERROR) and the stocking is left open.
        **kwargs: passed on to ``cls`` for each connection, and checked
            now. With ``hub=...`` the listening socket is served by that hub
            too.

    Raises:
        TypeError: an option is unknown to ``cls`` (or a required one is
            missing), or ``address`` is of no address type.
        ValueError: the port is not 0 to 65535, a ``"host:port"`` string
            is malformed, or the listening socket's descriptor is over the
            limit of the flavour's selector (``select()``: 1024, ``FD_SETSIZE``).
        OSError: the address cannot be listened on (in use, no permission).
    """

    @overload
    def __init__(
        self,
        address: Address,
        *,
        cls: type[_S],
        ssl: _ssl.SSLContext | None = None,
        backlog: int = DEFAULT_BACKLOG,
        handler: Callable[[_S], object] | None = None,
        **kwargs: Any,
    ) -> None: ...

    @overload
    def __init__(
        self: Server[Stocking],
        address: Address,
        *,
        ssl: _ssl.SSLContext | None = None,
        backlog: int = DEFAULT_BACKLOG,
        handler: Callable[[Stocking], object] | None = None,
        **kwargs: Any,
    ) -> None: ...

    def __init__(
        self,
        address: Address,
        *,
        cls: type[Any] = Stocking,
        ssl: _ssl.SSLContext | None = None,
        backlog: int = DEFAULT_BACKLOG,
        handler: Callable[[Any], object] | None = None,
        **kwargs: Any,
    ) -> None:
        target = resolve_address(address, listen=True)
        check_stocking_class(cls, Stocking, "Server()")
        if handler is not None and not callable(handler):
            raise TypeError(f"Server(): handler must be callable, not {type(handler).__name__}")
        check_options(cls, kwargs, "Server()")
        self._cls = cls
        self._kwargs = kwargs
        self._ssl = ssl
        self._handler = handler
        self._lock = threading.Lock()
        self._accepted = Accepted(self._lock, max(1, backlog), self._resume_accepting)
        self._clients: set[_S] = set()
        #: The last error accepting a connection ran into, if any.
        self.last_accept_error: OSError | None = None
        #: The exception that stopped the listening socket, if one did.
        self.failure: BaseException | None = None

        sock, self._path = listen(target, backlog)
        sock.setblocking(False)
        #: The address listened on: ``(host, port)`` with the real port (a
        #: four-tuple for IPv6), or the path; ``connect`` takes it as it is.
        self.address: SocketAddress = self._path if self._path is not None else sock.getsockname()
        hub = kwargs.get("hub")
        if not isinstance(hub, Hub):
            hub = shared_hub(cls.flavour, cls.selector_factory, cls._max_wait())
            self._fd_limit = fd_limit_of(cls.selector_factory)
        else:
            self._fd_limit = hub.fd_limit
        if hub.fd_limit is not None and sock.fileno() >= hub.fd_limit:
            error = over_limit(sock.fileno(), hub.fd_limit)
            sock.close()
            if self._path is not None:
                os.unlink(self._path)
            raise ValueError(error.strerror)
        self._hub = hub
        self._listener = Listener(
            sock,
            hub,
            self._fd_limit,
            self._accepted.put,
            self._note_accept_error,
            self._listener_lost,
        )
        hub.attach(self._listener.start, self._listener)
        self._thread: threading.Thread | None = None
        if handler is not None:
            self._thread = threading.Thread(
                target=self._dispatch,
                name=f"stockings-server-{describe_address(self.address)}",
                daemon=True,
            )
            self._thread.start()

    def __repr__(self) -> str:
        state = "closed" if self._accepted.closed else "listening"
        return f"<Server {describe_address(self.address)} {state} clients={len(self._clients)}>"

    # ------------------------------------------------------------ hub thread

    def _resume_accepting(self) -> None:
        self._hub.call_soon(self._listener.resume)

    def _note_accept_error(self, exc: OSError) -> None:
        self.last_accept_error = exc

    def _listener_lost(self, exc: BaseException) -> None:
        self.failure = exc
        self._accepted.fail()

    # ---------------------------------------------------------- user threads

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._accepted.closed

    @property
    def ready(self) -> bool:
        """True while a connection waits to be accepted, or once the server stopped."""
        return self._accepted.ready

    @property
    def clients(self) -> list[_S]:
        """The stockings this server handed out that have not ended yet."""
        with self._lock:
            return list(self._clients)

    def watch(self, callback: Callable[[], None]) -> bool:
        """Call ``callback`` when the server may have become :attr:`ready`; for :func:`wait`."""
        return self._accepted.watch(callback)

    def unwatch(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback``."""
        self._accepted.unwatch(callback)

    @property
    def _wait_source(self) -> Server[_S]:
        return self

    def accept(self, timeout: float | None = None) -> _S | None:
        """Take the next connection, as a stocking.

        Args:
            timeout: ``None`` waits until a connection comes or the server
                is closed; ``0`` only looks; a positive number waits up to
                that many seconds.

        Returns:
            The new stocking, or ``None`` if none came in time or the server
            is closed (or its listening socket failed; see :attr:`failure`).

        Raises:
            RuntimeError: the server has a ``handler``, which takes every
                connection.
            Exception: whatever ``cls(sock, **kwargs)`` raised; that
                connection is closed.
        """
        if self._handler is not None and threading.current_thread() is not self._thread:
            raise RuntimeError("this server hands every connection to its handler")
        timeout = bounded(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            conn = self._accepted.take(deadline)
            if conn is None:
                return None
            stocking = self._make(conn)
            if stocking is not None:
                return stocking

    def _make(self, conn: socket.socket) -> _S | None:
        """Wrap an accepted socket; ``None`` if the client already left."""
        try:
            if self._ssl is not None:
                conn = self._ssl.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            stocking: _S = self._cls(conn, **self._kwargs)
        except OSError as exc:
            discard_socket(conn)
            if exc.errno in (errno.ENOTCONN, errno.ECONNRESET, errno.EINVAL):
                return None
            raise
        except BaseException:
            discard_socket(conn)
            raise
        with self._lock:
            if self._accepted.closed and self._close_clients:
                # close() ran while we were making it: it missed this one.
                doomed = True
            else:
                doomed = False
                self._clients.add(stocking)
        if doomed:
            stocking.close()
            return None
        if server_log.isEnabledFor(logging.DEBUG):
            peer = stocking._peer
            server_log.debug("%s: accepted %s", self._label, peer, extra={"peer": peer})
        stocking._served.on_end(lambda: self._forget(stocking))
        return stocking

    def _forget(self, stocking: _S) -> None:
        with self._lock:
            self._clients.discard(stocking)

    def __iter__(self) -> Iterator[_S]:
        """Yield each new connection as a stocking until the server is closed."""
        while True:
            stocking = self.accept()
            if stocking is None:
                return
            yield stocking

    @property
    def _label(self) -> str:
        return f"server {describe_address(self.address)}"

    def _dispatch(self) -> None:
        handler = self._handler
        assert handler is not None
        while True:
            try:
                stocking = self.accept()
            except Exception:
                server_log.exception("%s: accepting a connection failed", self._label)
                continue
            if stocking is None:
                return
            try:
                handler(stocking)
            except Exception:
                peer = stocking._peer
                server_log.exception(
                    "%s: the handler raised for %s", self._label, peer, extra={"peer": peer}
                )

    _close_clients = True

    def close(
        self, close_clients: bool = True, timeout: float | None = DEFAULT_CLOSE_TIMEOUT
    ) -> None:
        """Stop accepting and, by default, close every stocking this server made.

        Connections not yet accepted are dropped. Clients are closed all at
        once, each flushing what was written to it first (see
        :meth:`Stocking.close`), which also wakes a handler blocked reading
        one; then the handler thread, if any, gets what is left of
        ``timeout`` to return. Returns once the listening socket and, with
        ``close_clients``, every client socket is closed. Idempotent.

        Args:
            close_clients: close the stockings handed out; ``False`` leaves
                them to their owners.
            timeout: how long the whole close may take, in seconds: clients
                flushing, then the handler returning. ``None`` waits as long
                as that takes.
        """
        timeout = bounded(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            first = not self._accepted.closed
            self._close_clients = self._close_clients and close_clients
            pending = self._accepted.close_locked()
            clients = list(self._clients) if close_clients else []
        if first:
            self._stop_listening()
        for conn in pending:
            conn.close()
        if clients:
            close_all(clients, timeout)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            # Last: a handler serving a client returns once that client is closed.
            join_thread(thread, None if deadline is None else deadline - time.monotonic())

    def _stop_listening(self) -> None:
        listener = self._listener
        if self._hub.in_hub_thread():
            listener.stop()
        else:
            stopped = threading.Event()

            def stop() -> None:
                listener.stop()
                stopped.set()

            self._hub.call_soon(stop)
            # A hub that broke has closed the socket already and runs nothing.
            while not stopped.wait(0.5):
                if listener.stopped or not self._hub.running:
                    break
        if self._path is not None:
            try:
                os.unlink(self._path)
            except OSError:
                pass
