"""The comparison benchmark: stockings against its peers, in one run, one table.

Each measurement runs a server and a client in two fresh child processes
talking over TCP loopback, so that each reports its own peak memory
(``ru_maxrss``) for that run alone; this process only orchestrates, checks
and prints. Every system must deliver every message: the server counts
messages and bytes and answers with the counts, and a run whose counts are
wrong is reported as failed, never as a number.

Systems:

- ``stockings``: this library, ``write`` / ``read(timeout=None)``.
- ``raw``: a hand-written framed socket (4-byte length, writes batched into
  one ``sendall``, ``recv_into`` a large buffer): the practical limit.
- ``mpc``: :mod:`multiprocessing.connection`, ``send_bytes`` / ``recv_bytes``.
- ``zmq``: pyzmq ``PAIR`` sockets, ``copy=False`` for messages of 64 KiB and up.
- ``stockings-1.2.3``: the last release from PyPI, installed on demand with
  ``pip install --no-deps --target`` into a cache directory and run from it
  (its ``Stockings`` package would clash with our compatibility module).
  Its runs are smaller: it deadlocks on bursts of large messages.
- ``stockings-batch`` and ``stockings-nospin``: this library again, through
  ``write_many`` / ``read_all`` (small streams only), and with
  ``read_spin=0`` (round trips only). Not peers: no ratio columns.

Measures: ``stream`` (N messages of S bytes one by one, then one answer) and
``rtt`` (16-byte request/response round trips).

This module is the command and its report (the table and the targets); the
work is done by :mod:`stockings._compare_peers` (one endpoint per system),
:mod:`stockings._compare_child` (the server and client processes) and
:mod:`stockings._compare_run` (launching them and checking their counts).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ._compare_child import child_main
from ._compare_peers import BATCH, NOSPIN, OLD, SYSTEMS
from ._compare_result import Result, size_name
from ._compare_run import RTT_SIZE, SIZES, ensure_old, run_compare, run_one, zmq_unavailable

__all__ = [
    "BATCH",
    "OLD",
    "RTT_SIZE",
    "SIZES",
    "SYSTEMS",
    "Result",
    "add_arguments",
    "check_targets",
    "ensure_old",
    "format_table",
    "main",
    "run_compare",
    "run_from_options",
    "run_one",
    "zmq_unavailable",
]


def _mib(value: int) -> str:
    return f"{value / (1 << 20):.0f}"


def format_table(results: dict[tuple[str, str, int], Result], unavailable: dict[str, str]) -> str:
    """The results as a Markdown table, with stockings' ratio to every peer."""
    systems = [s for s in SYSTEMS if any(k[0] == s for k in results)]
    peers = [s for s in systems if s not in ("stockings", BATCH, NOSPIN)]
    head = ["measure", *systems, *(f"x {p}" for p in peers)]
    rows = [head, ["---"] * len(head)]

    def cell(system: str, test: str, size: int, value: Callable[[Result], float]) -> str:
        r = results.get((system, test, size))
        if r is None:
            return "n/a"
        return f"{value(r):,.0f}" if r.ok else "failed"

    def ratio(peer: str, test: str, size: int, value: Callable[[Result], float]) -> str:
        ours, theirs = results.get(("stockings", test, size)), results.get((peer, test, size))
        if ours is None or theirs is None or not ours.ok or not theirs.ok:
            return "n/a"
        if not value(theirs):
            return "n/a"
        return f"{value(ours) / value(theirs):.2f}"

    def rate(r: Result) -> float:
        return r.rate

    def mbps(r: Result) -> float:
        return r.mbps

    def rtt(r: Result) -> float:
        return r.rtt_us

    for size in SIZES:
        for label, value in (("msg/s", rate), ("MB/s", mbps)):
            if label == "MB/s" and size < 4096:
                continue
            name = f"stream {size_name(size)}, {label}"
            rows.append(
                [name]
                + [cell(s, "stream", size, value) for s in systems]
                + [ratio(p, "stream", size, value) for p in peers]
            )
    rows.append(
        [f"rtt {RTT_SIZE} B, us"]
        + [cell(s, "rtt", RTT_SIZE, rtt) for s in systems]
        + [ratio(p, "rtt", RTT_SIZE, rtt) for p in peers]
    )
    big = SIZES[-1]
    rows.append(
        [f"peak MiB above idle, {size_name(big)} stream (client/server)"]
        + [_rss_cell(results.get((s, "stream", big))) for s in systems]
        + [""] * len(peers)
    )
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")
    for system in ("stockings", OLD):
        counts = ", ".join(
            f"{size_name(size)} x{results[(system, 'stream', size)].count}"
            for size in SIZES
            if (system, "stream", size) in results
        )
        rtt_run = results.get((system, "rtt", RTT_SIZE))
        if rtt_run is not None:
            counts += f"; rtt x{rtt_run.count}"
        if counts:
            who = "every system but 1.2.3" if system == "stockings" else "1.2.3 (slower, so fewer)"
            lines.append(f"Messages per run, {who}: {counts}.")
    lines.append("Ratios are stockings / peer: above 1 is better for rates, below 1 for rtt.")
    gains = []
    for size in SIZES:
        ours, batched = (
            results.get(("stockings", "stream", size)),
            results.get((BATCH, "stream", size)),
        )
        if ours is not None and batched is not None and ours.ok and batched.ok and ours.rate:
            gains.append(f"{size_name(size)} {batched.rate / ours.rate:.2f}")
    if gains:
        lines.append(
            f"{BATCH} (write_many/read_all) against the one-message calls: {', '.join(gains)}."
        )
    plain, nospin = (
        results.get(("stockings", "rtt", RTT_SIZE)),
        results.get((NOSPIN, "rtt", RTT_SIZE)),
    )
    if plain is not None and nospin is not None and plain.ok and nospin.ok:
        line = (
            f"{NOSPIN} (read_spin=0, a read that waits sleeps at once): rtt {nospin.rtt_us:.0f} us"
        )
        for peer in ("mpc", "zmq"):
            theirs = results.get((peer, "rtt", RTT_SIZE))
            if theirs is not None and theirs.ok and theirs.rtt_us:
                line += f", x {peer} {nospin.rtt_us / theirs.rtt_us:.2f}"
        lines.append(line + ".")
    for system, why in unavailable.items():
        lines.append(f"{system}: unavailable: {why}")
    for r in results.values():
        if not r.ok:
            lines.append(f"{r.system} {r.test} {size_name(r.size)}: failed: {r.error}")
    return "\n".join(lines)


def _rss_cell(result: Result | None) -> str:
    if result is None or not result.ok:
        return "n/a"
    return f"{_mib(result.client_rss)} / {_mib(result.server_rss)}"


def check_targets(results: dict[tuple[str, str, int], Result]) -> list[str]:
    """One line per target of the performance issue: met or not, and by how much."""

    def get(system: str, test: str, size: int) -> Result | None:
        r = results.get((system, test, size))
        return r if r is not None and r.ok else None

    lines = []

    def compare(
        label: str, ours: float | None, theirs: float | None, goal: float, hi: bool
    ) -> None:
        if ours is None or theirs is None or not theirs:
            lines.append(f"- {label}: not measured")
            return
        value = ours / theirs
        met = value >= goal if hi else value <= goal
        sign = ">=" if hi else "<="
        verdict = "met" if met else "NOT met"
        lines.append(f"- {label}: {value:.2f} (target {sign} {goal}): {verdict}")

    def rate_of(system: str, size: int) -> float | None:
        r = get(system, "stream", size)
        return r.rate if r else None

    def rtt_of(system: str) -> float | None:
        r = get(system, "rtt", RTT_SIZE)
        return r.rtt_us if r else None

    ours100 = rate_of("stockings", 100)
    compare("100 B msg/s vs zmq", ours100, rate_of("zmq", 100), 1.0, True)
    compare("100 B msg/s vs mpc", ours100, rate_of("mpc", 100), 2.0, True)
    compare("100 B msg/s vs 1.2.3", ours100, rate_of(OLD, 100), 10.0, True)
    compare("16 B msg/s vs zmq", rate_of("stockings", 16), rate_of("zmq", 16), 1.0, True)
    compare("1 MiB MB/s vs raw", rate_of("stockings", 1 << 20), rate_of("raw", 1 << 20), 0.8, True)
    compare("16 B rtt vs mpc", rtt_of("stockings"), rtt_of("mpc"), 1.0, False)
    compare("16 B rtt vs zmq", rtt_of("stockings"), rtt_of("zmq"), 0.7, False)
    big = get("stockings", "stream", 1 << 20)
    if big is None:
        lines.append("- memory: not measured")
    else:
        worst = max(big.client_rss, big.server_rss)
        sent = big.count * big.size
        verdict = "met" if worst < 64 << 20 else "NOT met"
        lines.append(
            f"- memory, {sent >> 20} MiB as 1 MiB messages: worst side {_mib(worst)} MiB"
            f" above idle (target < 64): {verdict}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison and print the table; ``python -m stockings._compare``.

    Returns:
        0 when every run delivered every message, 1 otherwise.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("serve", "client"):
        child_main(args)
        return 0
    parser = argparse.ArgumentParser(
        prog="stockings bench --compare",
        description="Compare stockings with a raw socket, multiprocessing.connection, "
        "pyzmq and Stockings 1.2.3 over TCP loopback.",
    )
    add_arguments(parser)
    options = parser.parse_args(args)
    return run_from_options(options)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the comparison's options to ``parser`` (shared with the ``bench`` command)."""
    parser.add_argument("--quick", action="store_true", help="smaller runs (under 2 minutes)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="runs per measure, best kept (default 1 quick, 3 full)",
    )
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated subset of {','.join(SYSTEMS)}",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("STOCKINGS_BENCH_CACHE", ".bench")),
        help="where Stockings 1.2.3 is installed on demand (default ./.bench)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write raw results here")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every message count (default 1)"
    )


def run_from_options(options: argparse.Namespace) -> int:
    """Run the comparison the parsed options describe; print progress and the table."""
    systems = [s.strip() for s in options.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        print(f"unknown systems: {', '.join(unknown)}", file=sys.stderr)
        return 2
    if "stockings" not in systems:
        systems.insert(0, "stockings")
    repeat = options.repeat or (1 if options.quick else 3)
    started = time.monotonic()
    results, unavailable = run_compare(
        systems,
        quick=options.quick,
        repeat=repeat,
        cache=options.cache,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        scale=options.scale,
    )
    print(format_table(results, unavailable))
    print()
    print("\n".join(check_targets(results)))
    print(f"\n({time.monotonic() - started:.0f} s, best of {repeat}, {os.cpu_count()} CPUs)")
    if options.json is not None:
        options.json.write_text(json.dumps([r.__dict__ for r in results.values()], indent=1) + "\n")
    return 0 if all(r.ok for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
