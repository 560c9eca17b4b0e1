"""Serving from asyncio: one handler task per connection, each with its stocking."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl as _ssl
from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import Any

from .._client import Address, tcp_address
from .._errors import HandshakeFailed
from .._opening import DEFAULT_CLOSE_TIMEOUT
from .._options import check_stocking_class
from ._connection import Connection
from ._stocking import Stocking

__all__ = ["Server", "serve"]

logger = logging.getLogger("stockings.asyncio")

Handler = Callable[[Any], Awaitable[Any]]


class Server:
    """A listening socket whose connections each get a stocking and a handler task.

    Made by :func:`serve`; use it as an async context manager. The handler
    runs as one task per connection, after TLS and the stocking's handshake
    succeeded; the stocking is closed (flushing) when it returns. An
    exception from a handler is logged to the ``stockings.asyncio`` logger
    and ends only that connection.
    """

    def __init__(
        self,
        handler: Handler,
        address: Address,
        *,
        ssl: _ssl.SSLContext | None = None,
        cls: type[Stocking] = Stocking,
        backlog: int = 1024,
        **options: Any,
    ) -> None:
        check_stocking_class(cls, Stocking, "serve()")
        if not callable(handler):
            raise TypeError(f"serve(): handler must be callable, not {type(handler).__name__}")
        self.handler = handler
        self._address_asked = address
        self._ssl = ssl
        self._cls = cls
        self._backlog = backlog
        self._options = options
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stockings: set[Stocking] = set()
        self._closing = False
        # Check the options now, not at the first connection.
        cls(**options)

    async def start(self) -> None:
        """Start listening (done by ``async with``)."""
        loop = asyncio.get_running_loop()
        address = self._address_asked
        if isinstance(address, (str, bytes, os.PathLike)):
            self._server = await loop.create_unix_server(
                self._factory, os.fspath(address), ssl=self._ssl, backlog=self._backlog
            )
        else:
            host, port = tcp_address(address)
            self._server = await loop.create_server(
                self._factory, host, port, ssl=self._ssl, backlog=self._backlog
            )

    @property
    def address(self) -> Any:
        """The address the server listens on: ``(host, port)`` or the socket path."""
        if self._server is None or not self._server.sockets:
            return None
        name = self._server.sockets[0].getsockname()
        return tuple(name[:2]) if isinstance(name, tuple) else name

    @property
    def stockings(self) -> frozenset[Stocking]:
        """The stockings of the connections open now."""
        return frozenset(self._stockings)

    def _factory(self) -> Connection:
        stocking = self._cls(server_side=True, **self._options)
        connection = stocking._connection
        connection.on_made = lambda made: self._start(stocking, made)
        return connection

    def _start(self, stocking: Stocking, connection: Connection) -> None:
        stocking._made(connection)
        if self._closing:
            stocking.abort()
            return
        self._stockings.add(stocking)
        task = asyncio.get_running_loop().create_task(self._serve_one(stocking))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_one(self, stocking: Stocking) -> None:
        try:
            try:
                await stocking._run_handshake()
            except HandshakeFailed as exc:
                logger.debug("handshake with %s failed: %s", stocking.addr, exc)
                return
            await self.handler(stocking)
        except asyncio.CancelledError:
            stocking.abort()
            raise
        except Exception:
            logger.exception("handler of the connection from %s failed", stocking.addr)
            stocking.abort()
        finally:
            try:
                await stocking.close()
            finally:
                self._stockings.discard(stocking)

    async def serve_forever(self) -> None:
        """Serve until cancelled (or :meth:`close`)."""
        if self._server is None:
            await self.start()
        assert self._server is not None
        try:
            await self._server.serve_forever()
        except asyncio.CancelledError:
            self.close()
            raise

    def close(self) -> None:
        """Stop listening and start closing every connection (flushing what was written).

        Each close is bounded by the default close timeout (10 s). Handlers
        see their stocking end; :meth:`wait_closed` waits for them to return.
        """
        self._closing = True
        if self._server is not None:
            self._server.close()
        for stocking in list(self._stockings):
            stocking._connection.begin_close(DEFAULT_CLOSE_TIMEOUT)

    async def wait_closed(self) -> None:
        """Wait until the listener is closed and every handler task has finished."""
        while self._tasks:
            tasks = list(self._tasks)
            await asyncio.gather(*tasks, return_exceptions=True)
            # Their done callbacks may not have run yet: awaiting finished
            # tasks need not yield to the loop.
            self._tasks.difference_update(tasks)
        if self._server is not None:
            await self._server.wait_closed()

    def __await__(self) -> Generator[Any, None, Server]:
        """``server = await serve(...)`` starts listening, as ``async with`` does."""
        return self._started().__await__()

    async def _started(self) -> Server:
        await self.start()
        return self

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()


def serve(
    handler: Handler,
    address: Address,
    *,
    ssl: _ssl.SSLContext | None = None,
    **options: Any,
) -> Server:
    """Serve stockings at ``address``: ``async with serve(handler, address) as server:``.

    Args:
        handler: ``async def handler(stocking)``, run as one task per
            connection; the stocking is closed when it returns.
        address: ``(host, port)`` (port 0 picks a free one; see
            :attr:`Server.address`) or the path of a Unix socket.
        ssl: an ``ssl.SSLContext`` with the server's certificate, for TLS.
        **options: ``cls=`` a stocking class (a subclass with hooks,
            :class:`AuthStocking`), ``backlog=``, and the stocking options
            (``max_message_size``, the water marks, ``idle_timeout``,
            ``keepalive``...).

    Returns:
        The :class:`Server`, listening once entered.

    Raises:
        ValueError, TypeError: an option is invalid.
    """
    return Server(handler, address, ssl=ssl, **options)
