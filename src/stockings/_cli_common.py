"""What every ``stockings`` command shares: addresses, TLS, the authkey, notices.

Errors a person can cause are raised as :class:`CliError`, which the entry
point turns into one line on stderr and an exit status; nothing a user
types should ever end in a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import ssl
import sys
import threading
import time
from typing import Any

from ._auth import AuthStocking
from ._flavours import SelectStocking
from ._framing import DEFAULT_MAX_MESSAGE_SIZE
from ._stocking import Stocking

__all__ = [
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "CliError",
    "add_connection_options",
    "auth_flavour",
    "client_tls",
    "describe_end",
    "describe_error",
    "flavours",
    "is_fd_terminal",
    "is_terminal",
    "notice",
    "parse_address",
    "parse_port",
    "parse_size",
    "read_authkey",
    "server_tls",
    "stdin_fd",
    "stocking_class",
    "timestamp",
]

#: The exit status of a command that failed.
EXIT_FAILURE = 1
#: The exit status of a command given wrong arguments.
EXIT_USAGE = 2

_SIZE = re.compile(r"(\d+)\s*(|b|k|kib|m|mib|g|gib)")
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2}
_SIZE_UNITS.update(g=1024**3, gib=1024**3)
_notice_lock = threading.Lock()


class CliError(Exception):
    """A mistake or failure to report as one line, with the exit status to end with."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


def flavours() -> dict[str, type[Stocking]]:
    """The stocking flavours this platform offers, by class name.

    Returns:
        ``Stocking`` and ``SelectStocking``, and ``PollStocking`` where
        ``select.poll`` exists, in that order of preference.
    """
    found: dict[str, type[Stocking]] = {"Stocking": Stocking}
    module = importlib.import_module("stockings._flavours")
    poll = getattr(module, "PollStocking", None)
    if poll is not None:
        found["PollStocking"] = poll
    found["SelectStocking"] = SelectStocking
    return found


# ------------------------------------------------------------ argument types


def parse_port(text: str, lowest: int = 0) -> int:
    """A TCP port number, checked to be in range, for argparse."""
    try:
        port = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a number, not {text!r}") from None
    if not lowest <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range ({lowest}-65535)")
    return port


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or a bare ``PORT`` (on 127.0.0.1), for argparse."""
    if text.isdigit():
        return "127.0.0.1", parse_port(text, lowest=1)
    host, sep, port = text.rpartition(":")
    if not sep or not port:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "127.0.0.1", parse_port(port, lowest=1)


def parse_size(text: str) -> int | None:
    """A byte count such as ``1000``, ``64M`` or ``2GiB``; ``none`` for no limit."""
    cleaned = text.strip().lower().replace("_", "")
    if cleaned in ("none", "unlimited"):
        return None
    match = _SIZE.fullmatch(cleaned)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected a size in bytes such as 1000, 64M or 1G (or 'none'), got {text!r}"
        )
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


# ------------------------------------------------------------ common options


def add_connection_options(
    parser: argparse.ArgumentParser, server: bool, both_ends: bool = False
) -> None:
    """Add the flavour, TLS, authkey and size-limit options a command shares.

    Args:
        parser: the command's parser.
        server: the options of the accepting end (else of the connecting end).
        both_ends: the command makes both ends (bench): each option serves
            the end it is for, and there is no ``--flavour`` (bench has its own).
    """
    if not both_ends:
        parser.add_argument(
            "--flavour",
            choices=list(flavours()),
            default="Stocking",
            help="the stocking class to use",
        )
    parser.add_argument(
        "--max-message-size",
        type=parse_size,
        default=DEFAULT_MAX_MESSAGE_SIZE,
        metavar="SIZE",
        help="the longest message to send or accept, in bytes (K, M and G suffixes"
        " welcome; 'none' for no limit)",
    )
    parser.add_argument(
        "--authkey-file",
        metavar="PATH",
        help="prove to the peer, with an HMAC handshake, that both hold the key in"
        " this file (its bytes, less one trailing newline)",
    )
    tls = parser.add_argument_group("TLS")
    if both_ends:
        tls.add_argument(
            "--tls", action="store_true", help="speak TLS; needs --certfile (and --keyfile)"
        )
        tls.add_argument(
            "--certfile",
            metavar="PATH",
            help="the accepting end's certificate chain (PEM), for the name localhost;"
            " implies --tls",
        )
        tls.add_argument(
            "--keyfile", metavar="PATH", help="the certificate's private key, if not in --certfile"
        )
        tls.add_argument(
            "--cafile", metavar="PATH", help="the connecting end trusts these CAs (PEM)"
        )
        tls.add_argument(
            "--insecure",
            action="store_true",
            help="the connecting end does not check the certificate",
        )
    elif server:
        tls.add_argument(
            "--tls", action="store_true", help="speak TLS; needs --certfile (and --keyfile)"
        )
        tls.add_argument(
            "--certfile", metavar="PATH", help="the server's certificate chain (PEM); implies --tls"
        )
        tls.add_argument(
            "--keyfile", metavar="PATH", help="the certificate's private key, if not in --certfile"
        )
        tls.add_argument(
            "--cafile",
            metavar="PATH",
            help="require a client certificate signed by these CAs (PEM)",
        )
    else:
        tls.add_argument(
            "--tls",
            action="store_true",
            help="speak TLS, checking the server's certificate against the system's CAs",
        )
        tls.add_argument(
            "--cafile", metavar="PATH", help="trust these CAs (PEM) instead; implies --tls"
        )
        tls.add_argument(
            "--certfile", metavar="PATH", help="a client certificate to present; implies --tls"
        )
        tls.add_argument(
            "--keyfile", metavar="PATH", help="the certificate's private key, if not in --certfile"
        )
        tls.add_argument(
            "--insecure",
            action="store_true",
            help="do not check the server's certificate or name (testing only); implies --tls",
        )


def _load_chain(context: ssl.SSLContext, certfile: str, keyfile: str | None) -> None:
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise CliError(f"cannot load --certfile {certfile}: {describe_error(exc)}", 2) from exc


def _load_cas(context: ssl.SSLContext, cafile: str) -> None:
    try:
        context.load_verify_locations(cafile)
    except (OSError, ssl.SSLError) as exc:
        raise CliError(f"cannot load --cafile {cafile}: {describe_error(exc)}", 2) from exc


def client_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The client's TLS context from the options, or ``None`` for plain TCP."""
    if not (args.tls or args.cafile or args.certfile or args.insecure):
        if args.keyfile:
            raise CliError("--keyfile needs --certfile", 2)
        return None
    context = ssl.create_default_context()
    context.options |= ssl.OP_NO_RENEGOTIATION
    if args.cafile:
        _load_cas(context, args.cafile)
    if args.certfile:
        _load_chain(context, args.certfile, args.keyfile)
    elif args.keyfile:
        raise CliError("--keyfile needs --certfile", 2)
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def server_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The server's TLS context from the options, or ``None`` for plain TCP."""
    if not (args.tls or args.certfile or args.cafile or args.keyfile):
        return None
    if not args.certfile:
        raise CliError("a TLS server needs its certificate: give --certfile (and --keyfile)", 2)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.options |= ssl.OP_NO_RENEGOTIATION
    _load_chain(context, args.certfile, args.keyfile)
    if args.cafile:
        _load_cas(context, args.cafile)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def read_authkey(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            key = file.read()
    except OSError as exc:
        raise CliError(f"cannot read --authkey-file {path}: {describe_error(exc)}", 2) from exc
    # Keys written with echo or an editor end in a newline the other end may lack.
    key = key.removesuffix(b"\n").removesuffix(b"\r")
    if not key:
        raise CliError(f"--authkey-file {path} is empty", 2)
    return key


def stocking_class(args: argparse.Namespace, server_side: bool) -> tuple[type[Stocking], Any]:
    """The stocking class and keyword arguments the options ask for.

    Returns:
        ``(cls, kwargs)``: the flavour, made an :class:`AuthStocking` with
        ``--authkey-file``, and what to pass it.
    """
    flavour = flavours()[args.flavour]
    kwargs: dict[str, Any] = {"max_message_size": args.max_message_size}
    if args.authkey_file is None:
        return flavour, kwargs
    kwargs["authkey"] = read_authkey(args.authkey_file)
    kwargs["server_side"] = server_side
    return auth_flavour(flavour), kwargs


def auth_flavour(flavour: type[Stocking]) -> type[AuthStocking]:
    """:class:`AuthStocking` made of the given flavour."""
    if flavour is Stocking:
        return AuthStocking
    made: type[AuthStocking] = type(f"Auth{flavour.__name__}", (AuthStocking, flavour), {})
    return made


# ------------------------------------------------------------------ messages


def describe_error(exc: BaseException) -> str:
    """An exception as a person reads it: no ``[Errno N]``, never empty."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
        if exc.filename is not None:
            text = f"{text}: {exc.filename}"
        return text
    text = str(exc)
    return text or type(exc).__name__


def describe_end(stocking: Stocking) -> str:
    """Why a stocking ended: the reason, and the exception behind it if any."""
    reason = stocking.end_reason
    if reason is None:
        return "still open"
    exc = stocking.end_exception
    if exc is None:
        return reason.value
    text = f"{reason.value}: {describe_error(exc)}"
    cause = exc.__cause__
    if cause is not None and describe_error(cause) not in text:
        text = f"{text} ({describe_error(cause)})"
    return text


def timestamp() -> str:
    """The local time, for notices that say when."""
    return time.strftime("%Y-%m-%d %H:%M:%S")


def notice(command: str, text: str) -> None:
    """Tell the person at the terminal something, on stderr, prefixed with the command."""
    with _notice_lock:
        try:
            sys.stderr.write(f"stockings {command}: {text}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # stderr is gone: there is no one left to tell


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is a terminal (false for a closed or odd stream)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def stdin_fd() -> int:
    """The descriptor of standard input."""
    try:
        return sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):
        return 0


def is_fd_terminal(fd: int) -> bool:
    """Whether descriptor ``fd`` is a terminal."""
    try:
        return os.isatty(fd)
    except OSError:
        return False
