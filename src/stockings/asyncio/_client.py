"""Connecting from asyncio: an address in, a ready stocking out."""

from __future__ import annotations

import asyncio
import os
import ssl as _ssl
from typing import Any, TypeVar, overload

from .._client import Address, default_client_context, describe_address, tcp_address
from .._errors import HandshakeFailed
from .._options import check_stocking_class
from .._timeouts import bounded
from ._stocking import Stocking

__all__ = ["connect"]

_S = TypeVar("_S", bound=Stocking)


@overload
async def connect(
    address: Address,
    *,
    ssl: bool | _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float | None = None,
    cls: type[_S],
    **options: Any,
) -> _S: ...


@overload
async def connect(
    address: Address,
    *,
    ssl: bool | _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float | None = None,
    **options: Any,
) -> Stocking: ...


async def connect(
    address: Address,
    *,
    ssl: bool | _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float | None = None,
    cls: type[Stocking] = Stocking,
    **options: Any,
) -> Stocking:
    """Connect to a stockings server and return the connection as an asyncio stocking.

    The stocking is ready when this returns: TLS and any custom
    ``handshake`` (such as :class:`AuthStocking`'s) have succeeded.

    Args:
        address: ``(host, port)`` for TCP, or the path of a Unix socket.
        ssl: ``None`` or ``False`` for a plain connection; ``True`` for TLS
            with the system's CAs and the host name checked; or an
            ``ssl.SSLContext`` to use as is.
        server_hostname: the name to check the server's certificate against
            (and send in SNI); defaults to the host.
        timeout: how long connecting (TCP and TLS) may take, in seconds;
            ``None`` waits as long as the operating system does.
        cls: the stocking class to make, e.g. a subclass with its own hooks.
        **options: passed on to ``cls`` (``max_message_size=...``, the
            water marks, ``idle_timeout``, ``keepalive``...).

    Returns:
        A ``cls`` stocking over the new connection.

    Raises:
        TimeoutError: the connection was not made within ``timeout``.
        ConnectionRefusedError: nothing listens at ``address``.
        OSError: any other failure to connect (the message names the address).
        HandshakeFailed: the TLS handshake or the stocking's handshake failed.
        ValueError: ``ssl`` is asked for on a Unix socket without a
            ``server_hostname``.
    """
    loop = asyncio.get_running_loop()
    timeout = bounded(timeout)
    check_stocking_class(cls, Stocking, "connect()")
    # Made first, so that bad options fail before any connection is.
    stocking = cls(**options)

    def factory() -> Any:
        return stocking._connection

    context = None
    if ssl:
        context = default_client_context() if ssl is True else ssl
    is_path = isinstance(address, (str, bytes, os.PathLike))
    if context is not None and server_hostname is None:
        if is_path:
            if context.check_hostname:
                raise ValueError("TLS over a Unix socket needs server_hostname")
        else:
            server_hostname = tcp_address(address)[0]
    where = describe_address(address)
    if is_path:
        opening = loop.create_unix_connection(
            factory,
            os.fspath(address),  # type: ignore[arg-type]
            ssl=context,
            server_hostname=server_hostname if context is not None else None,
        )
    else:
        host, port = tcp_address(address)
        opening = loop.create_connection(
            factory,
            host,
            port,
            ssl=context,
            server_hostname=server_hostname if context is not None else None,
        )
    try:
        try:
            await asyncio.wait_for(opening, timeout)
        except BaseException:
            # Made just as the wait gave up, it is not the caller's to close.
            stocking.abort()
            raise
    except asyncio.TimeoutError as exc:
        raise TimeoutError(f"connecting to {where} timed out after {timeout} s") from exc
    except _ssl.SSLError as exc:
        raise HandshakeFailed(f"TLS handshake failed: {exc}") from exc
    except OSError as exc:
        if exc.errno is None:
            raise
        raise type(exc)(exc.errno, f"cannot connect to {where}: {exc.strerror}") from exc
    try:
        await stocking._run_handshake()
    except BaseException:
        stocking.abort()
        await stocking.wait_closed()
        raise
    return stocking
