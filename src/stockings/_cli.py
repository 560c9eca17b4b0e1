"""The ``stockings`` command line: ``bench``, ``serve`` and ``cat``.

``stockings bench`` is a short loopback self-test of every flavour;
``stockings serve`` an echo server and ``stockings cat`` a client that
sends stdin as messages and shows what comes back, so that two terminals
are enough to try stockings by hand.

This module builds the parser and turns every outcome into an exit status:
0 for success, 1 for a failure (said in one line on stderr), 2 for a usage
mistake, 128 + the signal's number when interrupted (130 for Ctrl-C). A
person's mistake never ends in a traceback.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

from . import __version__
from ._cli_bench import run_bench_command
from ._cli_cat import run_cat
from ._cli_common import (
    EXIT_USAGE,
    CliError,
    add_connection_options,
    describe_error,
    flavours,
    is_terminal,
    parse_address,
    parse_port,
)
from ._cli_measure import transports
from ._cli_serve import run_serve

__all__ = ["build_parser", "main"]

_BENCH_EXAMPLES = """\
examples:
  stockings bench                      every flavour over TCP and a socket pair (~10 s)
  stockings bench --flavour Stocking --transport tcp --duration 0.2
  stockings bench --transport tcp --certfile cert.pem --keyfile key.pem --insecure
  stockings bench --authkey-file secret.key
"""

_SERVE_EXAMPLES = """\
examples:
  stockings serve                       echo on 127.0.0.1:8765
  stockings serve --host ::1 --port 0   on IPv6 loopback, any free port
  stockings serve --print --once        print each message; stop when the client leaves
  stockings serve --tls --certfile cert.pem --keyfile key.pem
  stockings serve --authkey-file secret.key
"""

_CAT_EXAMPLES = """\
examples:
  stockings cat 127.0.0.1:8765                    type lines, see the replies
  echo hello | stockings cat localhost:8765       send one line, print the answer
  printf 'a\\0b\\0' | stockings cat --null 8765     NUL-separated records
  stockings cat --bytes --raw [::1]:8765 < in.bin > out.bin
  echo '{"op": "ping"}' | stockings cat --json 8765
  stockings cat --file photo.jpg --bytes 8765     a whole file as one message
  stockings cat --cafile ca.pem example.org:8765  TLS, trusting ca.pem
  stockings cat --authkey-file secret.key 8765
"""


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (when it has one) and keeps the examples' layout."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see: {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _add_bench(commands: argparse._SubParsersAction[_Parser]) -> None:
    bench = commands.add_parser(
        "bench",
        help="check every flavour over loopback, and measure it",
        description="Open a pair of stockings per flavour and transport in this process,"
        " stream 100 B and 1 MiB messages one way, time 16 B round trips, and print a"
        " table. Every message is counted and checked. Progress shows on a terminal.",
        epilog=_BENCH_EXAMPLES,
        formatter_class=_Formatter,
    )
    bench.add_argument(
        "--count", type=_positive_int, default=1_000_000, help="the most 100 B messages per row"
    )
    bench.add_argument(
        "--large-count", type=_positive_int, default=200, help="the most 1 MiB messages per row"
    )
    bench.add_argument(
        "--rtt-count", type=_positive_int, default=2_000, help="the most round trips per row"
    )
    bench.add_argument(
        "--duration",
        type=_positive_float,
        default=0.5,
        metavar="SECONDS",
        help="the longest each of a row's three measurements may run",
    )
    bench.add_argument(
        "--flavour",
        action="append",
        choices=list(flavours()),
        help="only this flavour (repeatable; all by default)",
    )
    bench.add_argument(
        "--transport",
        action="append",
        choices=list(transports()),
        help="only this transport (repeatable; all by default)",
    )
    add_connection_options(bench, server=False, both_ends=True)
    bench.set_defaults(run=run_bench_command)


def _add_serve(commands: argparse._SubParsersAction[_Parser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run an echo server",
        description="Listen, accept any number of clients, echo every message back to its"
        " sender (or print it with --print). Who connects and why they left is logged on"
        " stderr with the time. Stop it with Ctrl-C.",
        epilog=_SERVE_EXAMPLES,
        formatter_class=_Formatter,
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on; IPv6 (::1) works too"
    )
    serve.add_argument(
        "--port", type=parse_port, default=8765, help="the port to listen on; 0 picks a free one"
    )
    serve.add_argument(
        "--echo", action="store_true", help="send each message back (the default without --print)"
    )
    serve.add_argument(
        "--print",
        action="store_true",
        help="write each message, with its sender and the time, to stdout (no echo unless --echo)",
    )
    serve.add_argument("--once", action="store_true", help="exit when the first client leaves")
    serve.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also log every connection's opening, TLS handshake and end (the library's"
        " DEBUG records); notices and warnings are always shown",
    )
    add_connection_options(serve, server=True)
    serve.set_defaults(run=run_serve)


def _add_cat(commands: argparse._SubParsersAction[_Parser]) -> None:
    cat = commands.add_parser(
        "cat",
        aliases=["send"],
        help="send stdin as messages, show the messages received",
        description="Connect to HOST:PORT, send each line of stdin as one text message, and"
        " show each message received on a line of its own. On a terminal it prompts for"
        " lines, and received bytes and control characters are shown escaped (bytes as a"
        " hex dump when not plain ASCII); in a pipe they are written as they are. Notices"
        " (connected, and why the connection ended) go to stderr. It stops when the peer"
        " closes, or once stdin has ended and replies stopped coming.",
        epilog=_CAT_EXAMPLES,
        formatter_class=_Formatter,
    )
    cat.add_argument(
        "address",
        type=parse_address,
        metavar="HOST:PORT",
        help="where to connect: HOST:PORT, [IPv6]:PORT, or a PORT on 127.0.0.1",
    )
    sending = cat.add_argument_group("input")
    sending.add_argument(
        "--bytes", action="store_true", help="send records as bytes, exactly as read, not as text"
    )
    sending.add_argument(
        "--null", action="store_true", help="records end with a NUL byte, not a newline"
    )
    sending.add_argument(
        "--json",
        action="store_true",
        help="each line is a JSON value, checked and sent as text; received text that is"
        " JSON is pretty-printed",
    )
    sending.add_argument(
        "--file",
        metavar="PATH",
        help="send this file as one message (text unless --bytes; - for all of stdin)",
    )
    showing = cat.add_argument_group("output")
    showing.add_argument(
        "--raw",
        action="store_true",
        help="write received messages unchanged, even to a terminal",
    )
    showing.add_argument(
        "--expect",
        type=_positive_int,
        metavar="N",
        help="after the input ends, wait for N messages in all (or the peer's close)",
    )
    showing.add_argument(
        "--wait",
        type=_positive_float,
        default=1.0,
        metavar="SECONDS",
        help="after the input ends, stop once nothing arrived for this long",
    )
    cat.add_argument(
        "--connect-timeout",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="how long connecting (and an authkey handshake) may take",
    )
    add_connection_options(cat, server=False)
    cat.set_defaults(run=run_cat)


def build_parser() -> argparse.ArgumentParser:
    """Build the ``stockings`` argument parser.

    Returns:
        The parser, with one sub-parser per command.
    """
    parser = _Parser(
        prog="stockings",
        description="Send and receive whole messages over TCP: try it, test it, measure it.",
        epilog="Each command has its own --help, with examples.",
    )
    parser.add_argument("--version", action="version", version=f"stockings {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    _add_bench(commands)
    _add_serve(commands)
    _add_cat(commands)
    return parser


#: After SIGTERM, how long a command may spend ending before it prints
#: where its threads are and exits with status 1 (see ``_stop_on_sigterm``).
STOP_GRACE = 20.0


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that cleanup runs."""


def _bound_the_stop() -> bool:
    # A supervisor that sends SIGTERM expects an end, and a cleanup that
    # hangs would otherwise leave it nothing to go on. faulthandler's
    # watchdog is a C thread: it fires even if the interpreter is stuck.
    try:
        faulthandler.dump_traceback_later(STOP_GRACE, exit=True, file=sys.stderr)
    except (AttributeError, ValueError, OSError, RuntimeError):
        return False  # no usable stderr: the stop is simply not bounded
    return True


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    bounded = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal bounded
        if not bounded:  # a second SIGTERM does not push the bound back
            bounded = _bound_the_stop()
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if bounded:
            # Run in-process (tests, an embedding program), the caller lives on.
            faulthandler.cancel_dump_traceback_later()


def _quiet_stdout() -> None:
    # The reader of stdout left (say, `| head`): say nothing more there, and
    # keep the interpreter's final flush from complaining about it.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``stockings`` command line.

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` if ``None``.

    Returns:
        The exit status: 0 on success, 1 when a command failed, 2 on bad
        usage, 130 after Ctrl-C (143 after SIGTERM).
    """
    command = "stockings"
    try:
        args = build_parser().parse_args(argv)
        command = f"stockings {args.command}"
        with _stop_on_sigterm():
            status: int = args.run(args)
        return status
    except CliError as exc:
        _say(f"{command}: {exc}")
        return exc.status
    except _Terminated:
        _say(f"{command}: terminated", interrupted=True)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        _say(f"{command}: interrupted", interrupted=True)
        return 128 + signal.SIGINT
    except BrokenPipeError:
        _quiet_stdout()
        return 128 + getattr(signal, "SIGPIPE", 13)
    except OSError as exc:
        _say(f"{command}: {describe_error(exc)}")
        return 1


def _say(text: str, interrupted: bool = False) -> None:
    try:
        if interrupted and is_terminal(sys.stderr):
            text = "\n" + text  # after the ^C the terminal echoed
        sys.stderr.write(f"{text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
