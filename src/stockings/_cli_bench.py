"""``stockings bench``: a short loopback self-test of every flavour.

A pair of stockings per flavour and transport streams 100 B and 1 MiB
messages one way and times 16 B round trips (see :mod:`._cli_measure`);
this module runs the rows, shows progress on a terminal and prints the
table. Cross-library comparisons live in the repository's
``benchmarks/``, not in the package.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from . import __version__
from ._cli_common import CliError, client_tls, flavours, is_terminal, read_authkey, server_tls
from ._cli_measure import (
    LARGE_SIZE,
    RTT_SIZE,
    SMALL_SIZE,
    BenchResult,
    Ends,
    run_bench,
    stream,
    transports,
)
from ._errors import StockingError

__all__ = ["Progress", "format_table", "run_bench_command"]


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


class Progress:
    """One status line, redrawn in place on a terminal; silent anywhere else.

    Args:
        stream: where to draw it (stderr, so that stdout keeps only the table).
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = is_terminal(stream)
        self.start = time.monotonic()
        self.row = ""

    def begin_row(self, text: str) -> None:
        """Name the row being measured."""
        self.row = text
        self.show("starting")

    def show(self, what: str) -> None:
        """Say what is being measured now."""
        if self.live:
            elapsed = time.monotonic() - self.start
            self.stream.write(f"\r\x1b[K{self.row}: {what} ({elapsed:.0f} s)")
            self.stream.flush()

    def done(self) -> None:
        """Remove the line."""
        if self.live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def run_bench_command(args: argparse.Namespace) -> int:
    """Run ``stockings bench``; see its ``--help``."""
    available = flavours()
    ways = transports()
    chosen = args.flavour or list(available)
    chosen_ways = args.transport or list(ways)
    extras = [
        *(["TLS"] if args.tls or args.certfile else []),
        *(["an authkey"] if args.authkey_file else []),
    ]
    print(
        f"stockings {__version__} bench: loopback, both ends in this process"
        f"{' with ' + ' and '.join(extras) if extras else ''}"
        f" (Python {platform.python_version()}, {sys.platform})"
    )
    print(
        f"streams of up to {args.count:,} x 100 B and {args.large_count:,} x 1 MiB messages;"
        f" rtt = median of up to {args.rtt_count:,} round trips of {RTT_SIZE} B;"
        f" each measurement stops after {args.duration:g} s; MB = 10**6 bytes"
    )
    print(flush=True)
    ends = _ends(args)
    progress = Progress(sys.stderr)
    rows = [(name, way) for name in chosen for way in chosen_ways]
    results = []
    name, way = rows[0]
    try:
        progress.begin_row("warming up")
        # A short unreported run first, so that the first row does not pay for
        # the interpreter and the caches warming up.
        stream(available[name], ways[way], SMALL_SIZE, 2_000, args.duration, ends)
        for number, (name, way) in enumerate(rows, 1):
            progress.begin_row(f"[{number}/{len(rows)}] {name} over {way}")
            results.append(
                run_bench(
                    available[name],
                    way,
                    ways[way],
                    args.count,
                    args.large_count,
                    args.rtt_count,
                    args.duration,
                    progress.show,
                    ends,
                )
            )
    except (OSError, StockingError) as exc:
        raise CliError(f"{name} over {way} failed: {exc}") from exc
    finally:
        progress.done()
    print(format_table(results))
    total = sum(r.small_count + r.large_count for r in results)
    trips = sum(r.rtt_count for r in results)
    print(f"\nverified: all {total:,} streamed messages and {trips:,} round trips arrived intact")
    return 0


def _ends(args: argparse.Namespace) -> Ends:
    """The pairs' TLS, authkey and size limit, from the command's options."""
    ends = Ends(kwargs={"max_message_size": args.max_message_size})
    limit = args.max_message_size
    if limit is not None and limit < LARGE_SIZE:
        raise CliError(f"--max-message-size must be at least {LARGE_SIZE} for the 1 MiB stream", 2)
    if args.tls or args.certfile or args.cafile or args.keyfile or args.insecure:
        # One set of options, two ends: the certificate is the accepting
        # end's, the CAs and --insecure the connecting end's.
        server_side = argparse.Namespace(**{**vars(args), "tls": True, "cafile": None})
        client_side = argparse.Namespace(**{**vars(args), "certfile": None, "keyfile": None})
        client_side.tls = True
        ends.server_tls = server_tls(server_side)
        ends.client_tls = client_tls(client_side)
    if args.authkey_file is not None:
        ends.authkey = read_authkey(args.authkey_file)
    return ends
