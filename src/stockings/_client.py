"""The client helper: connect to an address and get a stocking back."""

from __future__ import annotations

import os
import socket
import ssl as _ssl
from typing import Any, TypeVar, Union, overload

from ._stocking import Stocking

__all__ = ["Address", "connect", "default_client_context", "describe_address", "tcp_address"]

#: A TCP ``(host, port)`` pair or the path of a Unix socket.
Address = Union[tuple[str, int], str, "os.PathLike[str]"]

_S = TypeVar("_S", bound=Stocking)


def describe_address(address: object) -> str:
    """``host:port`` or the path, for messages."""
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    if isinstance(address, (str, os.PathLike)):
        return os.fspath(address)
    return repr(address)


def _is_path(address: object) -> bool:
    return isinstance(address, (str, bytes, os.PathLike))


def tcp_address(address: object) -> tuple[str, int]:
    """Check that ``address`` is a ``(host, port)`` pair and return it.

    Raises:
        TypeError: it is not.
    """
    if not (isinstance(address, tuple) and len(address) == 2):
        raise TypeError(f"expected (host, port) or a Unix socket path, not {address!r}")
    host, port = address
    return str(host) if host is not None else "", int(port)


def _open(address: Address, timeout: float | None) -> socket.socket:
    where = describe_address(address)
    try:
        if _is_path(address):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(os.fspath(address))  # type: ignore[arg-type]
            except BaseException:
                sock.close()
                raise
            return sock
        return socket.create_connection(tcp_address(address), timeout=timeout)
    except TimeoutError as exc:
        # socket.timeout is TimeoutError: keep the type, say where and how long.
        raise TimeoutError(f"connecting to {where} timed out after {timeout} s") from exc
    except OSError as exc:
        if exc.errno is None:
            raise
        # Same class and errno, so callers' except clauses still match.
        raise type(exc)(exc.errno, f"cannot connect to {where}: {exc.strerror}") from exc


def default_client_context() -> _ssl.SSLContext:
    """The context ``connect(ssl=True)`` uses: the system's CAs, hostname checked.

    It also refuses TLS 1.2 renegotiation (TLS 1.3 has none), which a
    message stream never needs and which has a history of attacks.
    """
    context = _ssl.create_default_context()
    context.options |= _ssl.OP_NO_RENEGOTIATION
    return context


@overload
def connect(
    address: Address,
    *,
    timeout: float | None = None,
    ssl: bool | _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    cls: type[_S],
    **kwargs: Any,
) -> _S: ...


@overload
def connect(
    address: Address,
    *,
    timeout: float | None = None,
    ssl: bool | _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    **kwargs: Any,
) -> Stocking: ...


def connect(
    address: Address,
    *,
    timeout: float | None = None,
    ssl: bool | _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    cls: type[Stocking] = Stocking,
    **kwargs: Any,
) -> Stocking:
    """Connect to a stockings server and return the connection as a stocking.

    Args:
        address: ``(host, port)`` for TCP, or the path of a Unix socket
            (``str`` or path-like).
        timeout: how long connecting may take, in seconds; ``None`` waits as
            long as the operating system does. It bounds only the connect:
            the stocking does its I/O in the background afterwards.
        ssl: ``None`` or ``False`` for a plain connection; ``True`` for TLS
            with ``ssl.create_default_context()`` (verifies the server's
            certificate and name); or an ``ssl.SSLContext`` to use as is.
            The TLS handshake happens in the background once the stocking
            exists.
        server_hostname: the name to check the server's certificate against
            (and send in SNI); defaults to ``host``.
        cls: the stocking class to make, e.g. a subclass with its own hooks.
        **kwargs: passed on to ``cls`` (``max_message_size=...`` and so on).

    Returns:
        A ``cls`` stocking over the new connection, with ``TCP_NODELAY`` set
        on TCP.

    Raises:
        TimeoutError: the connection was not made within ``timeout``.
        ConnectionRefusedError: nothing listens at ``address``.
        OSError: any other failure to connect (the message names the address).
        ValueError: ``ssl`` is asked for on a Unix socket without a
            ``server_hostname``.
    """
    sock = _open(address, timeout)
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl:
            context = default_client_context() if ssl is True else ssl
            if server_hostname is None:
                if _is_path(address):
                    if context.check_hostname:
                        raise ValueError("TLS over a Unix socket needs server_hostname")
                else:
                    server_hostname = tcp_address(address)[0]
            sock = context.wrap_socket(
                sock, server_hostname=server_hostname, do_handshake_on_connect=False
            )
        return cls(sock, **kwargs)
    except BaseException:
        sock.close()
        raise
