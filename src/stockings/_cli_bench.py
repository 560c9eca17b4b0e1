"""The ``stockings`` command line: ``bench``, ``serve`` and ``cat``.

``stockings bench`` is a loopback demo that measures each flavour in one
process; ``stockings serve`` is an echo server and ``stockings cat`` a
client that sends stdin's lines as messages and prints what comes back, so
two terminals are enough to try stockings by hand.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import selectors
import signal
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from . import __version__
from ._client import connect
from ._errors import ConnectionClosed, StockingError
from ._stocking import SelectStocking, Stocking

__all__ = ["BenchResult", "BenchmarkFailed", "build_parser", "flavours", "main", "run_bench"]

#: The size of the messages in the "small" stream.
SMALL_SIZE = 100
#: The size of the messages in the "large" stream.
LARGE_SIZE = 1024 * 1024
#: The size of the round-trip message.
RTT_SIZE = 16
#: How long one read may wait before the benchmark is declared stuck.
STUCK_AFTER = 30.0

Pair = tuple[socket.socket, socket.socket]


class BenchmarkFailed(StockingError):
    """A benchmark run did not deliver what it sent."""


def flavours() -> dict[str, type[Stocking]]:
    """The stocking flavours this platform offers, by class name.

    Returns:
        ``Stocking`` and ``SelectStocking``, and ``PollStocking`` where
        ``select.poll`` exists, in that order of preference.
    """
    found: dict[str, type[Stocking]] = {"Stocking": Stocking}
    module = importlib.import_module("stockings._stocking")
    poll = getattr(module, "PollStocking", None)
    if poll is not None:
        found["PollStocking"] = poll
    found["SelectStocking"] = SelectStocking
    return found


def _tcp_pair() -> Pair:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


def _transports() -> dict[str, Callable[[], Pair]]:
    found: dict[str, Callable[[], Pair]] = {"tcp": _tcp_pair}
    if hasattr(socket, "socketpair"):
        found["socketpair"] = socket.socketpair
    return found


# ---------------------------------------------------------------------- bench


@dataclass
class BenchResult:
    """One row of the ``bench`` table.

    Attributes:
        flavour: the stocking class name.
        transport: ``"tcp"`` or ``"socketpair"``.
        small_rate: small messages per second.
        small_mbps: small-message throughput, in MB (10**6 bytes) per second.
        small_count: how many small messages were sent and received.
        large_rate: large messages per second.
        large_mbps: large-message throughput, in MB per second.
        large_count: how many large messages were sent and received.
        rtt_us: median round-trip time of a 16-byte message, in microseconds.
        rtt_count: how many round trips were timed.
    """

    flavour: str
    transport: str
    small_rate: float
    small_mbps: float
    small_count: int
    large_rate: float
    large_mbps: float
    large_count: int
    rtt_us: float
    rtt_count: int


def _open(flavour: type[Stocking], make_pair: Callable[[], Pair]) -> tuple[Stocking, Stocking]:
    a, b = make_pair()
    left = flavour(a)
    try:
        right = flavour(b)
    except BaseException:
        left.close()
        b.close()
        raise
    return left, right


def _read_or_fail(stocking: Stocking) -> Any:
    message = stocking.read(timeout=STUCK_AFTER)
    if message is None:
        why = stocking.end_reason.value if stocking.end_reason else "nothing arrived"
        raise BenchmarkFailed(f"the stream stopped early ({why})")
    return message


def _stream(
    flavour: type[Stocking],
    make_pair: Callable[[], Pair],
    size: int,
    count: int,
    duration: float,
) -> tuple[float, int]:
    """Send up to ``count`` messages of ``size`` bytes one way; return (seconds, count).

    The writer stops early once ``duration`` seconds have passed, then
    sends an empty text message as the end marker: the payloads are bytes,
    so the marker cannot be mistaken for one.
    """
    left, right = _open(flavour, make_pair)
    payload = b"x" * size
    sent = 0
    failure: list[BaseException] = []

    def writer() -> None:
        nonlocal sent
        try:
            deadline = time.perf_counter() + duration
            write = left.write
            while sent < count:
                write(payload)
                sent += 1
                if not sent & 15 and time.perf_counter() > deadline:
                    break
            write("")
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=writer, name="stockings-bench-writer")
    try:
        received = 0
        start = time.perf_counter()
        thread.start()
        while True:
            message = _read_or_fail(right)
            if isinstance(message, str):
                break
            if len(message) != size:
                raise BenchmarkFailed(f"a {size} B message arrived as {len(message)} B")
            received += 1
        elapsed = time.perf_counter() - start
    finally:
        left.close()
        thread.join()
        right.close()
    if failure:
        raise BenchmarkFailed(f"the writer failed: {failure[0]!r}") from failure[0]
    if received != sent:
        raise BenchmarkFailed(f"sent {sent} messages of {size} B but received {received}")
    return elapsed, received


def _round_trips(
    flavour: type[Stocking], make_pair: Callable[[], Pair], count: int, duration: float
) -> tuple[float, int]:
    """Time up to ``count`` round trips of a 16-byte message; return (median µs, count)."""
    left, right = _open(flavour, make_pair)

    def echo() -> None:
        try:
            for message in right:
                right.write(message)
        except StockingError:
            pass  # the timing side closed first; it reports what went wrong

    thread = threading.Thread(target=echo, name="stockings-bench-echo")
    payload = b"r" * RTT_SIZE
    samples: list[float] = []
    try:
        thread.start()
        for _ in range(min(count, 20)):  # warm the path up before timing it
            left.write(payload)
            _read_or_fail(left)
        deadline = time.perf_counter() + duration
        clock = time.perf_counter
        while len(samples) < count:
            start = clock()
            left.write(payload)
            answer = _read_or_fail(left)
            samples.append(clock() - start)
            if answer != payload:
                raise BenchmarkFailed("a round trip returned a different message")
            if clock() > deadline:
                break
    finally:
        left.close()
        right.close()
        thread.join()
    return statistics.median(samples) * 1e6, len(samples)


def run_bench(
    flavour: type[Stocking],
    transport: str,
    make_pair: Callable[[], Pair],
    small_count: int,
    large_count: int,
    rtt_count: int,
    duration: float,
) -> BenchResult:
    """Measure one flavour over one transport.

    Args:
        flavour: the stocking class to measure.
        transport: the transport's name, for the result.
        make_pair: makes a connected socket pair.
        small_count: the most 100-byte messages to stream.
        large_count: the most 1 MiB messages to stream.
        rtt_count: the most round trips to time.
        duration: the most seconds each of the three measurements may run;
            a measurement that stops early reports what it did send.

    Returns:
        The measured row.

    Raises:
        BenchmarkFailed: a message was lost, changed or stuck.
    """
    small_time, small_n = _stream(flavour, make_pair, SMALL_SIZE, small_count, duration)
    large_time, large_n = _stream(flavour, make_pair, LARGE_SIZE, large_count, duration)
    rtt, rtt_n = _round_trips(flavour, make_pair, rtt_count, duration)
    return BenchResult(
        flavour=flavour.__name__,
        transport=transport,
        small_rate=small_n / small_time,
        small_mbps=small_n * SMALL_SIZE / small_time / 1e6,
        small_count=small_n,
        large_rate=large_n / large_time,
        large_mbps=large_n * LARGE_SIZE / large_time / 1e6,
        large_count=large_n,
        rtt_us=rtt,
        rtt_count=rtt_n,
    )


def _micro() -> str:
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "µ".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "u"
    return "µ"


def format_table(results: Sequence[BenchResult]) -> str:
    """Lay benchmark rows out as an aligned text table.

    Args:
        results: the rows to show.

    Returns:
        The table, one line per row after a header line, no trailing newline.
    """
    header = (
        "flavour",
        "transport",
        "100 B msg/s",
        "100 B MB/s",
        "1 MiB msg/s",
        "1 MiB MB/s",
        f"rtt {_micro()}s",
    )
    rows = [header]
    for r in results:
        rows.append(
            (
                r.flavour,
                r.transport,
                f"{r.small_rate:,.0f}",
                f"{r.small_mbps:,.1f}",
                f"{r.large_rate:,.1f}",
                f"{r.large_mbps:,.1f}",
                f"{r.rtt_us:,.1f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for row in rows:
        left = [row[i].ljust(widths[i]) for i in range(2)]
        right = [row[i].rjust(widths[i]) for i in range(2, len(row))]
        lines.append("  ".join(left + right).rstrip())
    return "\n".join(lines)


def _compare_entry() -> Callable[[Sequence[str]], int] | str:
    """The cross-library comparison's entry point, or why this install lacks it."""
    try:
        module = importlib.import_module("stockings._compare")
    except ImportError as exc:
        if getattr(exc, "name", None) == "stockings._compare":
            return "not available in this install"
        return f"not available here ({exc})"
    entry: Callable[[Sequence[str]], int] = module.main
    return entry


def _run_compare(argv: Sequence[str]) -> int:
    compare_main = _compare_entry()
    if isinstance(compare_main, str):
        print(f"stockings bench --compare: {compare_main}", file=sys.stderr)
        return 2
    return compare_main(argv)


def _cmd_bench(args: argparse.Namespace) -> int:
    available = flavours()
    transports = _transports()
    chosen = args.flavour or list(available)
    ways = args.transport or list(transports)
    print(
        f"stockings {__version__} bench: loopback, both ends in this process"
        f" (Python {platform.python_version()}, {sys.platform})"
    )
    print(
        f"streams of up to {args.count:,} x 100 B and {args.large_count:,} x 1 MiB messages;"
        f" rtt = median of up to {args.rtt_count:,} round trips of {RTT_SIZE} B;"
        f" each measurement stops after {args.duration:g} s; MB = 10**6 bytes"
    )
    print(flush=True)
    results = []
    name, way = chosen[0], ways[0]
    try:
        # A short unreported run first, so that the first row does not pay for
        # the interpreter and the caches warming up.
        _stream(available[name], transports[way], SMALL_SIZE, 2_000, args.duration)
        for name in chosen:
            for way in ways:
                results.append(
                    run_bench(
                        available[name],
                        way,
                        transports[way],
                        args.count,
                        args.large_count,
                        args.rtt_count,
                        args.duration,
                    )
                )
    except (OSError, StockingError) as exc:
        print(f"stockings bench: {name} over {way} failed: {exc}", file=sys.stderr)
        return 1
    print(format_table(results))
    total = sum(r.small_count + r.large_count for r in results)
    trips = sum(r.rtt_count for r in results)
    print(f"\nverified: all {total:,} streamed messages and {trips:,} round trips arrived intact")
    return 0


# ---------------------------------------------------------------- serve / cat


def _split_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _name(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)


def _stop_on_sigterm() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _cmd_serve(args: argparse.Namespace) -> int:
    flavour = flavours()[args.flavour]
    listener = socket.create_server((args.host, args.port))
    clients: dict[int, Stocking] = {}
    served = 0
    with selectors.DefaultSelector() as selector, listener:
        selector.register(listener, selectors.EVENT_READ)
        print(f"listening on {_name(listener.getsockname())}", flush=True)
        _stop_on_sigterm()
        try:
            while clients or not (args.once and served):
                for key, _ in selector.select():
                    if key.fileobj is listener:
                        sock, _ = listener.accept()
                        stocking = flavour(sock)
                        served += 1
                        # A stocking's fileno() is readable while a message
                        # waits or once it has ended: one selector serves all.
                        fd = stocking.fileno()
                        clients[fd] = stocking
                        selector.register(fd, selectors.EVENT_READ)
                        print(f"+ {_name(stocking.addr)}", flush=True)
                        continue
                    assert isinstance(key.fileobj, int)
                    stocking = clients[key.fileobj]
                    _echo_ready(stocking)
                    if stocking.ended and stocking.read() is None:
                        selector.unregister(key.fileobj)
                        del clients[key.fileobj]
                        reason = stocking.end_reason.value if stocking.end_reason else "?"
                        stocking.close()
                        print(f"- {_name(stocking.addr)} ({reason})", flush=True)
        except KeyboardInterrupt:
            pass
        finally:
            for stocking in clients.values():
                stocking.close()
    return 0


def _echo_ready(stocking: Stocking) -> None:
    while True:
        message = stocking.read()
        if message is None:
            return
        try:
            stocking.write(message)
        except ConnectionClosed:
            return


def _print_message(message: Any) -> None:
    if isinstance(message, str):
        print(message, flush=True)
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(bytes(message) + b"\n")
        sys.stdout.buffer.flush()


def _cmd_cat(args: argparse.Namespace) -> int:
    flavour = flavours()[args.flavour]
    stocking = connect(args.address, timeout=args.connect_timeout, cls=flavour)
    received = 0
    progress = threading.Condition()
    problem: list[BaseException] = []

    def printer() -> None:
        nonlocal received
        try:
            for message in stocking:
                _print_message(message)
                with progress:
                    received += 1
                    progress.notify_all()
        except ConnectionClosed as exc:
            problem.append(exc)
        finally:
            with progress:
                progress.notify_all()

    thread = threading.Thread(target=printer, name="stockings-cat-printer")
    thread.start()
    try:
        for line in sys.stdin:
            line = line.rstrip("\r\n")
            stocking.write(line.encode() if args.bytes else line)
        with progress:
            if args.expect is not None:
                progress.wait_for(lambda: received >= args.expect or stocking.ended)
            else:
                # No count to wait for: stop once the peer has been quiet a while.
                seen = -1
                while seen != received and not stocking.ended:
                    seen = received
                    progress.wait(args.wait)
    except (KeyboardInterrupt, ConnectionClosed) as exc:
        if isinstance(exc, ConnectionClosed):
            problem.append(exc)
    finally:
        stocking.close()
        thread.join()
    if problem:
        print(f"stockings cat: {problem[0]}", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------- main


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Build the ``stockings`` argument parser.

    Returns:
        The parser, with one sub-parser per command.
    """
    names = list(flavours())
    parser = argparse.ArgumentParser(
        prog="stockings",
        description="Send and receive whole messages over sockets: demo, benchmark, tools.",
    )
    parser.add_argument("--version", action="version", version=f"stockings {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    bench = commands.add_parser(
        "bench",
        help="measure every flavour over loopback in this process",
        description="Open a pair of stockings per flavour and transport, stream 100 B and"
        " 1 MiB messages one way, time 16 B round trips, and print a table."
        " Every message is counted and checked.",
    )
    bench.add_argument(
        "--count", type=_positive_int, default=1_000_000, help="most 100 B messages (1000000)"
    )
    bench.add_argument(
        "--large-count", type=_positive_int, default=200, help="most 1 MiB messages (200)"
    )
    bench.add_argument(
        "--rtt-count", type=_positive_int, default=2_000, help="most round trips (2000)"
    )
    bench.add_argument(
        "--duration",
        type=_positive_float,
        default=1.0,
        help="most seconds per measurement; 3 per row (1.0)",
    )
    bench.add_argument(
        "--flavour", action="append", choices=names, help="only this flavour (repeatable)"
    )
    bench.add_argument(
        "--transport",
        action="append",
        choices=list(_transports()),
        help="only this transport (repeatable)",
    )
    bench.add_argument(
        "--compare",
        action="store_true",
        help="compare with other libraries instead; see: stockings bench --compare --help",
    )
    bench.set_defaults(run=_cmd_bench)

    serve = commands.add_parser(
        "serve",
        help="run an echo server",
        description="Accept connections, echo every message back, print who comes and goes.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port to listen on; 0 picks one")
    serve.add_argument("--flavour", choices=names, default="Stocking")
    serve.add_argument("--once", action="store_true", help="exit when the first client leaves")
    serve.set_defaults(run=_cmd_serve)

    cat = commands.add_parser(
        "cat",
        aliases=["send"],
        help="send stdin's lines as messages, print the messages received",
        description="Connect to HOST:PORT, send each line of stdin as one message, and"
        " print each message received on its own line.",
    )
    cat.add_argument("address", type=_split_address, metavar="HOST:PORT")
    cat.add_argument("--flavour", choices=names, default="Stocking")
    cat.add_argument("--bytes", action="store_true", help="send lines as bytes, not text")
    cat.add_argument(
        "--expect", type=int, metavar="N", help="after stdin ends, wait for N messages in all"
    )
    cat.add_argument(
        "--wait",
        type=_positive_float,
        default=1.0,
        help="after stdin ends, stop once nothing arrived for this long (1 s)",
    )
    cat.add_argument("--connect-timeout", type=_positive_float, default=10.0)
    cat.set_defaults(run=_cmd_cat)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``stockings`` command line.

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` if ``None``.

    Returns:
        The exit status: 0 on success, 1 when a command failed, 2 on bad usage.
    """
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["bench"] and "--compare" in words:
        # The comparison has options (and a --help) of its own: hand it the rest.
        return _run_compare([word for word in words[1:] if word != "--compare"])
    args = build_parser().parse_args(words)
    try:
        status: int = args.run(args)
    except OSError as exc:
        print(f"stockings {args.command}: {exc}", file=sys.stderr)
        return 1
    return status
