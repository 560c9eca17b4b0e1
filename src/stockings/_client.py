"""The client helper: connect to an address and get a stocking back."""

from __future__ import annotations

import os
import re
import socket
import ssl as _ssl
from typing import Any, TypeVar, Union, overload

from ._options import check_options, check_stocking_class
from ._stocking import Stocking
from ._timeouts import bounded

__all__ = [
    "Address",
    "SocketAddress",
    "connect",
    "default_client_context",
    "describe_address",
    "resolve_address",
    "tcp_address",
]

#: An address as a socket reports it: ``(host, port)``, the four-tuple of
#: IPv6, or the path of a Unix socket.
SocketAddress = tuple[str, int] | tuple[str, int, int, int] | str
#: What ``connect`` and ``Server`` take: a socket address, ``"host:port"``
#: (``"[::1]:8000"`` for IPv6), or a Unix socket path as ``str`` or path-like.
Address = Union[SocketAddress, "os.PathLike[str]"]

_S = TypeVar("_S", bound="Stocking[Any, ...]")

# "host:port" or "[v6 host]:port": what a str without "/" holding ":" must be.
_HOST_PORT = re.compile(r"(?:\[(?P<v6>[^\[\]/]+)\]|(?P<host>[^:\[\]/]*)):(?P<port>[0-9]+)")


def describe_address(address: object) -> str:
    """``host:port`` or the path, for messages."""
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    if isinstance(address, (str, os.PathLike)):
        return os.fspath(address)
    return repr(address)


def resolve_address(address: object, *, listen: bool) -> tuple[str, int] | str:
    """Tell a TCP address from a Unix socket path, checking either.

    The rule: a tuple is ``(host, port)`` (an IPv6 four-tuple's last two
    fields are ignored); a path-like object or ``bytes`` is a Unix socket
    path; a ``str`` is a path if it holds a ``/`` or no ``:`` at all, and is
    ``"host:port"`` otherwise, with an IPv6 host in brackets
    (``"[::1]:8000"``). So ``"./name:1"`` is the way to name a Unix
    socket with a colon in the current directory.

    Args:
        address: the address as given.
        listen: whether it is to listen on, where port 0 (any free port)
            makes sense; to connect, the port must be 1 to 65535.

    Returns:
        ``(host, port)`` for TCP, or the path (``str``) of a Unix socket.

    Raises:
        TypeError: ``address`` is none of these, or its port is not a number.
        ValueError: a ``"host:port"`` string is malformed, or the port is
            out of range.
    """
    if isinstance(address, tuple):
        if len(address) not in (2, 4):
            raise TypeError(f"a TCP address is (host, port), not {address!r}")
        return _host(address[0]), _port(address[1], listen)
    if isinstance(address, (bytes, os.PathLike)):
        path = os.fsdecode(address)
        if not isinstance(path, str):
            raise TypeError(f"expected a Unix socket path, not {address!r}")
        return path
    if not isinstance(address, str):
        raise TypeError(
            "expected (host, port), 'host:port' or a Unix socket path, "
            f"not {type(address).__name__}"
        )
    if "/" in address or ":" not in address or address.startswith("\0"):
        return address
    match = _HOST_PORT.fullmatch(address)
    if match is None:
        raise ValueError(
            f"{address!r} is neither 'host:port' nor a Unix socket path: write an IPv6 "
            f"host in brackets ('[::1]:8000'), and a Unix socket path with a '/' "
            f"('./{address}')"
        )
    host = match.group("v6") if match.group("v6") is not None else match.group("host")
    return host, _port(int(match.group("port")), listen)


def tcp_address(address: object) -> tuple[str, int]:
    """Check that ``address`` is a TCP address and return ``(host, port)``.

    Raises:
        TypeError: it is a Unix socket path, or no address at all.
        ValueError: as for :func:`resolve_address` (a port of 0 is let through).
    """
    target = resolve_address(address, listen=True)
    if isinstance(target, str):
        raise TypeError(f"expected (host, port) or 'host:port', not the path {target!r}")
    return target


def _is_path(address: object) -> bool:
    """Whether ``address`` names a Unix socket, by the rule of :func:`resolve_address`."""
    return isinstance(resolve_address(address, listen=True), str)


def _host(host: object) -> str:
    if host is None:
        return ""
    if isinstance(host, bytes):
        return host.decode("ascii")
    return str(host)


def _port(port: object, listen: bool) -> int:
    if isinstance(port, str) and port.isascii() and port.isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"a port is an int, not {type(port).__name__} ({port!r})")
    if listen:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0-65535 (0 picks a free one), not {port}")
    elif not 1 <= port <= 65535:
        raise ValueError(f"port must be 1-65535 to connect to, not {port}")
    return port


def _open(target: tuple[str, int] | str, address: object, timeout: float | None) -> socket.socket:
    where = describe_address(address)
    try:
        if isinstance(target, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(target)
            except BaseException:
                sock.close()
                raise
            return sock
        return socket.create_connection(target, timeout=timeout)
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
    cls: type[Stocking[Any, ...]] = Stocking,
    **kwargs: Any,
) -> Stocking[Any, ...]:
    """Connect to a stockings server and return the connection as a stocking.

    Args:
        address: ``(host, port)`` or ``"host:port"`` for TCP (``"[::1]:8000"``
            for IPv6), or the path of a Unix socket (``str`` or path-like); a
            ``str`` is a path when it holds a ``/`` or no ``:``.
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
        **kwargs: passed on to ``cls`` (``max_message_size=...`` and so on);
            checked before connecting.

    Returns:
        A ``cls`` stocking over the new connection (with ``TCP_NODELAY`` on
        TCP unless ``nodelay=False`` is passed on).

    Raises:
        TypeError: an option is unknown to ``cls``, or ``address`` is of no
            address type.
        ValueError: the port is not 1 to 65535, a ``"host:port"`` string is
            malformed, or ``ssl`` is asked for on a Unix socket without a
            ``server_hostname``.
        TimeoutError: the connection was not made within ``timeout``.
        ConnectionRefusedError: nothing listens at ``address``.
        OSError: any other failure to connect (the message names the address).
    """
    target = resolve_address(address, listen=False)
    check_stocking_class(cls, Stocking, "connect()")
    check_options(cls, kwargs, "connect()")
    timeout = bounded(timeout)
    context = None
    if ssl:
        context = default_client_context() if ssl is True else ssl
        if server_hostname is None:
            if isinstance(target, str):
                if context.check_hostname:
                    raise ValueError("TLS over a Unix socket needs server_hostname")
            else:
                server_hostname = target[0]
    # Socket options (TCP_NODELAY, keepalive) are the stocking's to set, as
    # its options say: one place, whoever made the socket.
    sock = _open(target, address, timeout)
    try:
        if context is not None:
            sock = context.wrap_socket(
                sock, server_hostname=server_hostname, do_handshake_on_connect=False
            )
        return cls(sock, **kwargs)
    except BaseException:
        sock.close()
        raise
