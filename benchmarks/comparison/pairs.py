"""Before and after, in pairs: stockings against another checkout of it, run by run.

On a shared machine one run of a measure can be 30% off the next, so the
best of three of each side, taken minutes apart, can call noise a change.
Here each measure runs as pairs, the two sides one right after the other,
which goes first alternating, and the report gives each side's median and
how many pairs each side won: a change is real when the medians differ
and the pairs agree.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .peers import BASE
from .result import Result, describe, size_name
from .run import (
    FANIN_SIZE,
    RTT_SIZE,
    SIZES,
    TLS_SIZES,
    Where,
    make_certificates,
    message_count,
    run_one,
    tls_unavailable,
)

__all__ = ["Pairs", "format_pairs", "measures_for", "run_pairs"]

_OURS = "stockings"


@dataclass
class Pairs:
    """The runs of one measure, ours and the baseline's, in the order they paired up."""

    test: str
    size: int
    ours: list[Result] = field(default_factory=list)
    base: list[Result] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every run of both sides delivered every message."""
        return all(r.ok for r in self.ours + self.base)

    def _per_message(self, results: list[Result], cpu: bool) -> list[float]:
        return [(r.cpu if cpu else r.seconds) / r.count * 1e6 for r in results if r.ok]

    def medians(self, cpu: bool = False) -> tuple[float, float]:
        """Median µs per message (or per round trip), of time or of CPU: (ours, base)."""
        return (
            statistics.median(self._per_message(self.ours, cpu)),
            statistics.median(self._per_message(self.base, cpu)),
        )

    def wins(self, cpu: bool = False) -> int:
        """In how many pairs ours took less time (or CPU) than the baseline."""
        ours = self._per_message(self.ours, cpu)
        base = self._per_message(self.base, cpu)
        return sum(1 for a, b in zip(ours, base, strict=False) if a < b)


def measures_for(tests: Sequence[str]) -> list[tuple[str, int]]:
    """The (test, size) measures of ``tests``, in the comparison's order."""
    order = [("stream", size) for size in SIZES] + [("rtt", RTT_SIZE), ("fanin", FANIN_SIZE)]
    order += [("tls", size) for size in TLS_SIZES]
    return [(test, size) for test, size in order if test in tests]


def run_pairs(
    where: Where,
    rounds: int,
    tests: Sequence[str],
    quick: bool = False,
    scale: float = 1.0,
    progress: Callable[[str], None] | None = None,
    sizes: Sequence[int] | None = None,
) -> list[Pairs]:
    """Run ``rounds`` pairs of every measure of ``tests``, ours and ``where.baseline``'s.

    ``sizes``, if given, keeps only the measures of those message sizes;
    a stream size the comparison does not have is measured too, with as
    many bytes as the next larger size it has (see ``message_count``).

    Raises:
        ValueError: ``where`` names no baseline.
    """
    if where.baseline is None:
        raise ValueError("pairs need a baseline: another checkout's src folder")
    measures = measures_for(tests)
    if sizes is not None:
        measures = [m for m in measures if m[1] in sizes]
        if "stream" in tests:
            measures += [("stream", size) for size in sizes if ("stream", size) not in measures]
    if ("tls", TLS_SIZES[0]) in measures and tls_unavailable():
        measures = [m for m in measures if m[0] != "tls"]
    found = {measure: Pairs(*measure) for measure in measures}
    with tempfile.TemporaryDirectory(prefix="stockings-pairs-") as folder:
        if where.tls is None and any(test == "tls" for test, _ in measures):
            make_certificates(Path(folder))
            where = Where(old=where.old, lib=where.lib, tls=Path(folder), baseline=where.baseline)
        for round_ in range(rounds):
            order = (_OURS, BASE) if round_ % 2 == 0 else (BASE, _OURS)
            for (test, size), pairs in found.items():
                for system in order:
                    count = message_count(system, test, size, quick, scale)
                    result = run_one(system, test, size, count, where)
                    (pairs.ours if system == _OURS else pairs.base).append(result)
                    if progress is not None:
                        progress(describe(result))
    return list(found.values())


def format_pairs(found: list[Pairs]) -> str:
    """A markdown table: each side's medians, their ratios and the pairs each side won."""
    lines = [
        "| measure | pairs | time: ours | base | ours ÷ base | won | "
        "CPU: ours | base | ours ÷ base | won |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for pairs in found:
        name = f"{pairs.test} {size_name(pairs.size)}"
        if not pairs.ok:
            failed = next(r for r in pairs.ours + pairs.base if not r.ok)
            lines.append(f"| {name} | failed: {failed.system}: {failed.error} |")
            continue
        count = min(len(pairs.ours), len(pairs.base))
        cells = [name, str(count)]
        for cpu in (False, True):
            ours, base = pairs.medians(cpu)
            cells += [f"{ours:,.2f}", f"{base:,.2f}", f"{ours / base:.2f}", f"{pairs.wins(cpu)}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Medians in µs per message (rtt: per round trip; CPU: both processes). "
        "ours ÷ base below 1 is faster or cheaper; won: pairs in which ours took less."
    )
    return "\n".join(lines)
