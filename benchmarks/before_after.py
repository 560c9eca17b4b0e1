"""Before and after: stockings against another checkout of it, in interleaved pairs.

Usage: ``python benchmarks/before_after.py BASELINE_SRC [--rounds N]
[--tests stream,rtt,fanin,tls] [--sizes 100,65536] [--quick] [--scale X]``. Each measure of the
comparison benchmark runs ``N`` times for each side, the two sides back to
back with the first alternating, and one table gives each side's median
time and CPU per message and how many pairs each side won. This is the
measure for a claim that a change made stockings faster, or no slower:
the best of a few runs, minutes apart (``compare.py --baseline``), moves
with the machine's load more than most changes do.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__: list[str] = []

_TESTS = ("stream", "rtt", "fanin", "tls")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the pairs and print the table; 0 when every run delivered every message."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from comparison.pairs import format_pairs, run_pairs
    from comparison.run import Where

    parser = argparse.ArgumentParser(
        prog="python benchmarks/before_after.py",
        description="Stockings against another checkout's src, in interleaved pairs.",
    )
    parser.add_argument("baseline", type=Path, help="the other checkout's src folder")
    parser.add_argument("--rounds", type=int, default=7, help="pairs per measure (default 7)")
    parser.add_argument("--tests", default=",".join(_TESTS), help=f"a subset of {','.join(_TESTS)}")
    parser.add_argument(
        "--sizes",
        default=None,
        help="only these message sizes, in bytes (say 100,65536); other stream sizes are added",
    )
    parser.add_argument("--quick", action="store_true", help="the smaller message counts")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every message count")
    options = parser.parse_args(argv)
    tests = [t.strip() for t in options.tests.split(",") if t.strip()]
    unknown = [t for t in tests if t not in _TESTS]
    if unknown or options.rounds < 1:
        print(
            f"unknown tests: {', '.join(unknown)}" if unknown else "--rounds must be 1 or more",
            file=sys.stderr,
        )
        return 2
    if not (options.baseline / "stockings" / "__init__.py").is_file():
        print(f"no stockings package in {options.baseline}", file=sys.stderr)
        return 2
    started = time.monotonic()
    found = run_pairs(
        Where(baseline=options.baseline),
        options.rounds,
        tests,
        quick=options.quick,
        scale=options.scale,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        sizes=None if options.sizes is None else [int(n) for n in options.sizes.split(",")],
    )
    print(format_pairs(found))
    print(f"\n({time.monotonic() - started:.0f} s, {options.rounds} pairs per measure)")
    return 0 if all(pairs.ok for pairs in found) else 1


if __name__ == "__main__":
    raise SystemExit(main())
