"""The comparison benchmark's command and its report: the table and the targets.

Each measurement runs a server and a client in two fresh child processes
talking over TCP loopback, so that each reports its own peak memory
(``ru_maxrss``) and CPU time for that run alone; this process only
orchestrates, checks and prints. Every system must deliver every message
unchanged: the server compares each message with what was sent and answers
with its counts, and a run whose counts are wrong is reported as failed,
never as a number (and the command exits with status 1).

Systems:

- ``stockings``: this library, ``write`` / ``read(timeout=None)``.
- ``raw``: a hand-written framed socket (4-byte length, writes batched into
  one ``sendall``, ``recv_into`` a large buffer): the practical limit.
- ``mpc``: :mod:`multiprocessing.connection`, ``send_bytes`` / ``recv_bytes``.
- ``zmq``: pyzmq ``PAIR`` sockets, ``copy=False`` for messages of 64 KiB and up.
- ``asyncio``: asyncio streams (fan-in only; :mod:`comparison.fanin`).
- ``stockings-1.2.3``: the last release, run from the folder that
  ``pip install --no-deps --target .stockings123 stockings==1.2.3`` filled
  (its ``Stockings`` package would clash with our compatibility module).
- ``stockings-batch`` and ``stockings-nospin``: this library again, through
  ``write_many`` / ``read_all`` (small streams only), and with
  ``read_spin=0`` (round trips only). Not peers: no ratios.
- ``stockings-base``: stockings imported from another folder
  (``--baseline``, e.g. the ``src`` of a checkout of the last release),
  measured in the same run, for before/after ratios.

Tests: ``stream`` (N messages of S bytes one by one, then one answer),
``rtt`` (16-byte request/response round trips), ``fanin`` (32 connections
into one server, 100 B messages) and ``tls`` (streams over TLS, stockings
against the raw loop over an ``ssl`` socket).

The work is done by :mod:`comparison.peers` (one endpoint per system),
:mod:`comparison.fanin` (the fan-in servers), :mod:`comparison.child` (the
server and client processes) and :mod:`comparison.run` (launching them and
checking their counts).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .child import child_main
from .peers import BATCH, NOSPIN, SYSTEMS
from .result import Result, size_name
from .run import DEFAULT_OLD, FANIN_SIZE, RTT_SIZE, SIZES, TLS_SIZES, Where, run_compare

__all__ = ["Target", "check_targets", "format_table", "format_targets", "main"]

_TESTS = ("stream", "rtt", "fanin", "tls")
_NOT_PEERS = ("stockings", BATCH, NOSPIN)


def _measures(results: dict[tuple[str, str, int], Result]) -> list[tuple[str, int]]:
    order = [("stream", size) for size in SIZES] + [("rtt", RTT_SIZE), ("fanin", FANIN_SIZE)]
    order += [("tls", size) for size in TLS_SIZES]
    return [m for m in order if any(k[1:] == m for k in results)]


def measure_name(test: str, size: int) -> str:
    """How the table names a measure: ``stream 4 KiB``, ``fan-in 32 x 100 B``..."""
    if test == "fanin":
        return f"fan-in 32 x {size_name(size)}"
    if test == "tls":
        return f"TLS stream {size_name(size)}"
    return f"{test} {size_name(size)}"


def format_table(results: dict[tuple[str, str, int], Result], unavailable: dict[str, str]) -> str:
    """The results as a Markdown table: one row per measure and system.

    Rates are messages per second (for ``rtt``: microseconds per round trip);
    CPU is microseconds of both processes per message (per round trip); the
    ratio columns are stockings divided by the row's system.
    """
    head = ["measure", "system", "msg/s (rtt: us)", "MB/s", "CPU us/msg", "x rate", "x CPU"]
    rows = [head, ["---"] * len(head)]
    for test, size in _measures(results):
        ours = results.get(("stockings", test, size))
        for system in SYSTEMS:
            r = results.get((system, test, size))
            if r is None:
                continue
            row = [measure_name(test, size), system]
            if not r.ok:
                rows.append([*row, "failed", "", "", "", ""])
                continue
            value = r.rtt_us if test == "rtt" else r.rate
            rate = f"{value:,.1f}" if test == "rtt" else f"{value:,.0f}"
            mbps = f"{r.mbps:,.0f}" if size >= 4096 and test != "rtt" else ""
            ratio = cpu_ratio = ""
            if system not in _NOT_PEERS and ours is not None and ours.ok:
                theirs = r.rtt_us if test == "rtt" else r.rate
                mine = ours.rtt_us if test == "rtt" else ours.rate
                ratio = f"{mine / theirs:.2f}" if theirs else ""
                cpu_ratio = f"{ours.cpu_us / r.cpu_us:.2f}" if r.cpu_us else ""
            rows.append([*row, rate, mbps, f"{r.cpu_us:.2f}", ratio, cpu_ratio])
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")
    lines.append(
        "x rate: stockings / system (above 1 is better for stockings; for rtt, below 1)."
        " x CPU: stockings' CPU per message / the system's (below 1 is better)."
    )
    counts = {}
    for (system, test, size), r in results.items():
        if system == "stockings":
            counts[measure_name(test, size)] = r.count
    if counts:
        lines.append("Messages per run: " + ", ".join(f"{k} x{v}" for k, v in counts.items()) + ".")
    big = results.get(("stockings", "stream", SIZES[-1]))
    if big is not None and big.ok:
        lines.append(
            f"Peak memory above idle, {size_name(SIZES[-1])} stream"
            f" ({big.count * big.size >> 20} MiB): client {_mib(big.client_rss)} MiB,"
            f" server {_mib(big.server_rss)} MiB."
        )
    gains = []
    for size in SIZES:
        one, batched = (
            results.get(("stockings", "stream", size)),
            results.get((BATCH, "stream", size)),
        )
        if one is not None and batched is not None and one.ok and batched.ok and one.rate:
            gains.append(f"{size_name(size)} {batched.rate / one.rate:.2f}")
    if gains:
        lines.append(f"{BATCH} (write_many/read_all) / the one-message calls: {', '.join(gains)}.")
    plain, nospin = (
        results.get(("stockings", "rtt", RTT_SIZE)),
        results.get((NOSPIN, "rtt", RTT_SIZE)),
    )
    if plain is not None and nospin is not None and plain.ok and nospin.ok:
        lines.append(
            f"{NOSPIN} (read_spin=0): rtt {nospin.rtt_us:.1f} us,"
            f" CPU {nospin.cpu_us:.2f} us per round trip."
        )
    for system, why in unavailable.items():
        lines.append(f"{system}: unavailable: {why}")
    for r in results.values():
        if not r.ok:
            lines.append(f"FAILED: {r.system} {measure_name(r.test, r.size)}: {r.error}")
    return "\n".join(lines)


def _mib(value: int) -> str:
    return f"{value / (1 << 20):.0f}"


@dataclass
class Target:
    """One target of the performance issue and what this run measured."""

    label: str
    goal: float
    higher_is_better: bool
    value: float | None

    @property
    def met(self) -> bool | None:
        """Whether the target is met; ``None`` when it was not measured."""
        if self.value is None:
            return None
        if self.higher_is_better:
            return self.value >= self.goal
        return self.value <= self.goal


def check_targets(results: dict[tuple[str, str, int], Result]) -> list[Target]:
    """Every target of the performance issue, with this run's ratio."""

    def get(system: str, test: str, size: int) -> Result | None:
        r = results.get((system, test, size))
        return r if r is not None and r.ok else None

    def rate(system: str, test: str, size: int) -> float | None:
        r = get(system, test, size)
        return r.rate if r else None

    def best_rate(systems: Sequence[str], test: str, size: int) -> float | None:
        rates = [x for s in systems if (x := rate(s, test, size))]
        return max(rates) if rates else None

    def ratio(ours: float | None, theirs: float | None) -> float | None:
        return ours / theirs if ours is not None and theirs else None

    def cpu(system: str, test: str, size: int) -> float | None:
        r = get(system, test, size)
        return r.cpu_us if r else None

    def rtt(system: str) -> float | None:
        r = get(system, "rtt", RTT_SIZE)
        return r.rtt_us if r else None

    ours = "stockings"
    targets = [
        Target(
            "16 B stream / zmq",
            1.5,
            True,
            ratio(rate(ours, "stream", 16), rate("zmq", "stream", 16)),
        ),
        Target(
            "100 B stream / zmq",
            1.5,
            True,
            ratio(rate(ours, "stream", 100), rate("zmq", "stream", 100)),
        ),
        Target(
            "4 KiB stream / best of zmq and mpc",
            1.5,
            True,
            ratio(rate(ours, "stream", 4096), best_rate(("zmq", "mpc"), "stream", 4096)),
        ),
        Target(
            "4 KiB stream / raw",
            0.5,
            True,
            ratio(rate(ours, "stream", 4096), rate("raw", "stream", 4096)),
        ),
        Target(
            "64 KiB stream / best of zmq and mpc",
            1.0,
            True,
            ratio(rate(ours, "stream", 65536), best_rate(("zmq", "mpc"), "stream", 65536)),
        ),
        Target(
            "1 MiB stream / raw",
            0.9,
            True,
            ratio(rate(ours, "stream", 1 << 20), rate("raw", "stream", 1 << 20)),
        ),
        Target("16 B rtt time / mpc", 0.5, False, ratio(rtt(ours), rtt("mpc"))),
        Target(
            "16 B rtt CPU per round trip / mpc",
            1.0,
            False,
            ratio(cpu(ours, "rtt", 16), cpu("mpc", "rtt", 16)),
        ),
        Target(
            "fan-in / raw",
            0.6,
            True,
            ratio(rate(ours, "fanin", FANIN_SIZE), rate("raw", "fanin", FANIN_SIZE)),
        ),
        Target(
            "fan-in / zmq",
            2.0,
            True,
            ratio(rate(ours, "fanin", FANIN_SIZE), rate("zmq", "fanin", FANIN_SIZE)),
        ),
        Target(
            "fan-in / asyncio",
            2.0,
            True,
            ratio(rate(ours, "fanin", FANIN_SIZE), rate("asyncio", "fanin", FANIN_SIZE)),
        ),
        Target(
            "100 B stream CPU per message / zmq",
            0.8,
            False,
            ratio(cpu(ours, "stream", 100), cpu("zmq", "stream", 100)),
        ),
        Target(
            "TLS 100 B stream / raw over ssl",
            1.0,
            True,
            ratio(rate(ours, "tls", 100), rate("raw", "tls", 100)),
        ),
        Target(
            "TLS 1 MiB stream / raw over ssl",
            0.8,
            True,
            ratio(rate(ours, "tls", 1 << 20), rate("raw", "tls", 1 << 20)),
        ),
    ]
    big = get(ours, "stream", 1 << 20)
    worst = None if big is None else max(big.client_rss, big.server_rss) / (1 << 20)
    targets.append(Target("1 MiB stream: peak MiB above idle, worse side", 64, False, worst))
    return targets


def format_targets(targets: list[Target]) -> str:
    """The targets as a Markdown table: ratio, goal, met or not."""
    lines = ["| target | this run | goal | met |", "| --- | --- | --- | --- |"]
    for t in targets:
        sign = ">=" if t.higher_is_better else "<="
        value = "not measured" if t.value is None else f"{t.value:.2f}"
        met = {None: "", True: "yes", False: "**no**"}[t.met]
        lines.append(f"| {t.label} | {value} | {sign} {t.goal:g} | {met} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison and print the tables; ``python benchmarks/compare.py``.

    Returns:
        0 when every run delivered every message unchanged, 1 otherwise.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("serve", "client"):
        child_main(args)
        return 0
    parser = argparse.ArgumentParser(
        prog="python benchmarks/compare.py",
        description="Compare stockings with a raw socket, multiprocessing.connection, "
        "pyzmq, asyncio streams and Stockings 1.2.3 over TCP loopback.",
    )
    parser.add_argument("--quick", action="store_true", help="smaller runs (a few minutes)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="runs per measure, best kept (default 1 quick, 3 full)",
    )
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"a subset of {','.join(SYSTEMS)}"
    )
    parser.add_argument("--tests", default=",".join(_TESTS), help=f"a subset of {','.join(_TESTS)}")
    parser.add_argument(
        "--old",
        type=Path,
        default=DEFAULT_OLD,
        help=f"the folder holding Stockings 1.2.3 (default {DEFAULT_OLD})",
    )
    parser.add_argument(
        "--lib",
        type=Path,
        default=None,
        help="import stockings from this folder (another checkout's src), not the installed one",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="also measure stockings from this folder (another checkout's src) as stockings-base",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write raw results here")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every message count")
    options = parser.parse_args(args)
    systems = [s.strip() for s in options.systems.split(",") if s.strip()]
    tests = [t.strip() for t in options.tests.split(",") if t.strip()]
    unknown = [s for s in systems if s not in SYSTEMS] + [t for t in tests if t not in _TESTS]
    if unknown:
        print(f"unknown systems or tests: {', '.join(unknown)}", file=sys.stderr)
        return 2
    if "stockings" not in systems:
        systems.insert(0, "stockings")
    if options.baseline is not None and "stockings-base" not in systems:
        systems.insert(1, "stockings-base")
    if options.baseline is None and "stockings-base" in systems:
        systems.remove("stockings-base")
    repeat = options.repeat or (1 if options.quick else 3)
    started = time.monotonic()
    results, unavailable = run_compare(
        systems,
        quick=options.quick,
        repeat=repeat,
        where=Where(old=options.old, lib=options.lib, baseline=options.baseline),
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        scale=options.scale,
        tests=tests,
    )
    print(format_table(results, unavailable))
    print()
    print(format_targets(check_targets(results)))
    print(f"\n({time.monotonic() - started:.0f} s, best of {repeat}, {os.cpu_count()} CPUs)")
    if options.json is not None:
        options.json.write_text(json.dumps([r.__dict__ for r in results.values()], indent=1) + "\n")
    return 0 if all(r.ok for r in results.values()) else 1
