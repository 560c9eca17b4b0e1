"""What a stocking is made of, checked before it is made: its socket and its options.

Misuse is refused here, with an error that names the problem, rather than
left to fail later somewhere less clear: a socket of the wrong kind in the
I/O thread, a misspelt option only when a server accepts a connection.
"""

from __future__ import annotations

import difflib
import errno
import inspect
import math
import operator
import socket
import weakref
from collections.abc import Mapping
from numbers import Real
from typing import Any

from ._timeouts import bounded, option_seconds

__all__ = ["ChannelOptions", "check_options", "connected_peer", "peer_label"]

_SOCKET_TYPES = {
    getattr(socket, name): name
    for name in ("SOCK_DGRAM", "SOCK_RAW", "SOCK_RDM", "SOCK_SEQPACKET")
    if hasattr(socket, name)
}


def peer_label(addr: Any, sock: socket.socket) -> str:
    """How logs, thread names and ``repr`` name a stocking's peer: ``host:port``, a path, an fd."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr) or f"fd{sock.fileno()}"


def connected_peer(sock: object) -> Any:
    """Check that ``sock`` is a connected stream socket; return its peer's address.

    Raises:
        TypeError: ``sock`` is not a ``socket.socket``.
        ValueError: it is not a stream socket, or it is listening.
        OSError: it is not connected (``ENOTCONN``, as ``getpeername`` says).
    """
    if not isinstance(sock, socket.socket):
        raise TypeError(
            "a stocking needs a connected socket.socket of type SOCK_STREAM, "
            f"not {type(sock).__name__}"
        )
    kind = sock.type
    if kind != socket.SOCK_STREAM:
        # Message framing needs a byte stream: a datagram socket would cut
        # large writes ("Message too long") and drop or reorder the rest.
        name = _SOCKET_TYPES.get(kind, str(int(kind)))
        raise ValueError(f"a stocking needs a stream socket (SOCK_STREAM), not a {name} socket")
    try:
        return sock.getpeername()
    except OSError as exc:
        if exc.errno == errno.ENOTCONN and _is_listening(sock):
            raise ValueError(
                "this socket is listening: accept() a connection and wrap that, "
                "or use stockings.Server"
            ) from None
        raise


def _is_listening(sock: socket.socket) -> bool:
    option = getattr(socket, "SO_ACCEPTCONN", None)
    if option is None:
        return False
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, option))
    except OSError:
        return False


def check_options(cls: type[Any], options: Mapping[str, object], caller: str) -> None:
    """Refuse now the options that ``cls(sock, **options)`` would refuse later.

    Follows ``**kwargs`` up the classes of the library (a subclass of
    :class:`~stockings.Stocking` that passes them on to it, say), so that a
    misspelt option is named when a server or client is made, not when the
    first connection comes. A class of the user's that takes ``**kwargs``
    may consume any name, so options past it are left for it to judge.

    Args:
        cls: the stocking class.
        options: the keyword arguments it will get after the socket.
        caller: the call that takes them, for the message (``"Server()"``).

    Raises:
        TypeError: an option is unknown, or a required one is missing, or
            a limit is of the wrong type.
        ValueError: a limit of the channel (``max_message_size``, the
            water marks, ``idle_timeout``, ``read_spin``, ``keepalive``) is
            out of range.
    """
    if not isinstance(cls, type):
        return
    names = frozenset(options)
    # Judged once per class and set of names: inspecting signatures costs
    # far more than the check, and connect() may run thousands of times.
    verdicts = _verdicts.get(cls)
    if verdicts is None:
        verdicts = _verdicts[cls] = {}
    verdict = verdicts.get(names)
    if verdict is None:
        verdict = verdicts[names] = _judge(cls, names)
    problem, values_reach_stocking = verdict
    if problem is not None:
        raise TypeError(f"{caller}: {problem}")
    if values_reach_stocking and not names.isdisjoint(_VALUE_OPTIONS):
        _check_values(options, caller)


# The options Stocking hands to ChannelOptions as they are.
_CHANNEL_OPTIONS = (
    "max_message_size",
    "write_high_water",
    "write_low_water",
    "read_high_water",
    "read_low_water",
    "idle_timeout",
    "read_spin",
)
_VALUE_OPTIONS = frozenset((*_CHANNEL_OPTIONS, "keepalive", "write_timeout", "linger"))

# class -> option names -> (what is wrong with them, whether their values
# reach Stocking untouched). Weak, so that classes made on the fly can go.
_verdicts: weakref.WeakKeyDictionary[type[Any], dict[frozenset[str], tuple[str | None, bool]]] = (
    weakref.WeakKeyDictionary()
)
_stocking_defaults: dict[str, Any] = {}


def _judge(cls: type[Any], names: frozenset[str]) -> tuple[str | None, bool]:
    options = dict.fromkeys(names)
    try:
        inspect.signature(cls.__init__).bind(None, None, **options)
    except TypeError as exc:
        return f"{cls.__name__}() {exc}{_suggestion(cls, options)}", False
    except ValueError:
        return None, False  # no signature to check against (a builtin)
    known = _known_options(cls)
    if known is None:
        return None, False
    unknown = sorted(names - known)
    if unknown:
        return (
            f"{cls.__name__}() got an unexpected keyword argument {unknown[0]!r}"
            f"{_suggestion(cls, {unknown[0]: None})}"
        ), False
    return None, _values_reach_stocking(cls)


def _values_reach_stocking(cls: type[Any]) -> bool:
    from ._stocking import Stocking  # imports this module

    if not issubclass(cls, Stocking):
        return False
    if not _stocking_defaults:
        parameters = inspect.signature(Stocking.__init__).parameters
        _stocking_defaults.update((name, parameters[name].default) for name in _CHANNEL_OPTIONS)
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None and not klass.__module__.startswith("stockings."):
            # A class of the user's that names a limit may change its value.
            parameters = inspect.signature(init).parameters
            if not _VALUE_OPTIONS.isdisjoint(parameters):
                return False
    return True


def _check_values(options: Mapping[str, object], caller: str) -> None:
    """Check the channel's limits as the stocking will."""
    values: dict[str, Any] = {
        name: options.get(name, default) for name, default in _stocking_defaults.items()
    }
    try:
        ChannelOptions(**values)
        check_keepalive(options.get("keepalive"))
        option_seconds(options.get("write_timeout"), "write_timeout")
        option_seconds(options.get("linger"), "linger")
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{caller}: {exc}") from None


#: The longest silence ``keepalive`` may ask for: Linux takes no longer
#: ``TCP_KEEPIDLE`` (about nine hours).
KEEPALIVE_MAX = 32767


def check_stocking_class(cls: object, base: type[Any], caller: str) -> None:
    """Refuse a ``cls=`` that is no subclass of ``base``, naming it, before anything is made.

    Raises:
        TypeError: ``cls`` is not ``base`` or a subclass of it.
    """
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(
            f"{caller}: cls must be {base.__module__.removesuffix('._stocking')}."
            f"{base.__name__} or a subclass of it, not {cls!r}"
        )


def check_keepalive(keepalive: object) -> None:
    """Check a ``keepalive`` option: ``None``, a bool or a positive number of seconds.

    Raises:
        ValueError: it is no number, or not positive, or over ``KEEPALIVE_MAX``.
    """
    if keepalive is None or isinstance(keepalive, bool):
        return
    if not (isinstance(keepalive, (int, float)) and 0 < keepalive <= KEEPALIVE_MAX):
        raise ValueError(
            f"keepalive must be True, None or a positive number of seconds, at most {KEEPALIVE_MAX}"
        )


def _known_options(cls: type[Any]) -> set[str] | None:
    """The option names ``cls`` and the classes it passes ``**kwargs`` to take.

    ``None`` when any name may be right: a class of the user's takes ``**kwargs``.
    """
    known: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            # Past self and the socket.
            parameters = list(inspect.signature(init).parameters.values())[2:]
        except (TypeError, ValueError):
            return None
        known.update(
            p.name
            for p in parameters
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        )
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return known
        if not klass.__module__.startswith("stockings."):
            return None
    return known


def _suggestion(cls: type[Any], options: Mapping[str, object]) -> str:
    known = _known_options(cls)
    if known is None:
        return ""
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            if close:
                return f" (did you mean {close[0]!r}?)"
    return ""


class ChannelOptions:
    """The limits one channel enforces; see :class:`stockings.Stocking`."""

    __slots__ = (
        "half_close",
        "idle_timeout",
        "max_message_size",
        "read_high_water",
        "read_low_water",
        "read_spin",
        "write_high_water",
        "write_low_water",
    )

    half_close: bool
    idle_timeout: float | None
    max_message_size: int | None
    read_high_water: int
    read_low_water: int
    read_spin: float
    write_high_water: int
    write_low_water: int

    def __init__(
        self,
        max_message_size: int | None,
        write_high_water: int,
        write_low_water: int | None,
        read_high_water: int,
        read_low_water: int | None,
        idle_timeout: float | None = None,
        read_spin: float = 0.0,
        half_close: bool = False,
    ) -> None:
        self.half_close = half_close
        if read_spin is None or isinstance(read_spin, bool) or not isinstance(read_spin, Real):
            kind = type(read_spin).__name__
            raise TypeError(f"read_spin must be a number of seconds, not {kind}")
        if not 0 <= read_spin < math.inf:
            raise ValueError("read_spin must be a number of seconds, 0 or more")
        self.read_spin = float(read_spin)
        # ``inf`` (or any bound too long to matter) is no idle timeout at all.
        idle = bounded(idle_timeout, "idle_timeout")
        if idle is not None and not idle > 0:
            raise ValueError("idle_timeout must be a positive number of seconds, or None")
        self.idle_timeout = idle
        if max_message_size is not None:
            max_message_size = _byte_count(max_message_size, "max_message_size", " or None")
        write_high_water = _byte_count(write_high_water, "write_high_water")
        read_high_water = _byte_count(read_high_water, "read_high_water")
        if write_low_water is not None:
            write_low_water = _byte_count(write_low_water, "write_low_water", " or None")
        if read_low_water is not None:
            read_low_water = _byte_count(read_low_water, "read_low_water", " or None")
        if max_message_size is not None and max_message_size < 0:
            raise ValueError("max_message_size cannot be negative")
        if write_high_water < 0 or read_high_water < 0:
            raise ValueError("high-water marks cannot be negative")
        self.max_message_size = max_message_size
        self.write_high_water = write_high_water
        self.write_low_water = write_high_water // 4 if write_low_water is None else write_low_water
        self.read_high_water = read_high_water
        self.read_low_water = read_high_water // 4 if read_low_water is None else read_low_water
        if self.write_low_water > write_high_water or self.read_low_water > read_high_water:
            raise ValueError("a low-water mark cannot exceed its high-water mark")


def _byte_count(value: object, name: str, or_none: str = "") -> int:
    """``value`` as an ``int``: a size in bytes is a whole number (numpy's too).

    Raises:
        TypeError: anything else (``1.5``, ``"64k"``, ``True``).
    """
    if not isinstance(value, bool):
        try:
            return operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            pass
    raise TypeError(f"{name} must be a whole number of bytes{or_none}, not {type(value).__name__}")
