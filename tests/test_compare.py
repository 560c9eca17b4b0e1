"""The comparison benchmark's harness: delivery checks, failures, the table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stockings import _compare, _compare_run
from stockings._compare import OLD, Result, check_targets, format_table, run_one
from stockings._compare_peers import NOSPIN

BENCH_CACHE = Path(__file__).resolve().parent.parent / ".bench"


def _children() -> list[int]:
    """Live (or unreaped) child processes of this one, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            found.append(int(entry))
    return found


def _systems() -> list[str]:
    systems = ["stockings", _compare.BATCH, NOSPIN, "raw", "mpc"]
    if not _compare.zmq_unavailable():
        systems.append("zmq")
    if (BENCH_CACHE / "stockings123" / "Stockings" / "__init__.py").exists():
        systems.append(OLD)
    return systems


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="counts children through /proc")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("system", _systems())
def test_every_system_delivers_every_message(system: str) -> None:
    for test, size, count in (("stream", 100, 300), ("stream", 1 << 20, 3), ("rtt", 16, 30)):
        result = run_one(system, test, size, count, BENCH_CACHE)
        assert result.ok, result.error
        assert result.count == count
        assert result.seconds > 0
        assert "client_cpu" in result.extra
    assert _children() == []


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="counts children through /proc")
@pytest.mark.timeout(60)
def test_a_broken_run_is_a_failure_and_leaves_no_children() -> None:
    result = run_one("no-such-system", "stream", 100, 10, BENCH_CACHE)
    assert not result.ok
    assert result.seconds == 0
    assert _children() == []


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="counts children through /proc")
@pytest.mark.timeout(60)
def test_a_stuck_run_is_killed_after_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_compare_run, "RUN_TIMEOUT", 1.0)
    # Far more than one second's worth of messages.
    result = run_one("raw", "rtt", 16, 10_000_000, BENCH_CACHE)
    assert not result.ok
    assert "timed out" in result.error
    assert _children() == []


def _result(system: str, test: str, size: int, seconds: float, count: int = 1000) -> Result:
    return Result(system, test, size, count, seconds=seconds, client_rss=1 << 20)


def test_the_table_shows_ratios_and_the_targets_say_met_or_not() -> None:
    results = {}
    for size in _compare.SIZES:
        results[("stockings", "stream", size)] = _result("stockings", "stream", size, 1.0)
        results[("zmq", "stream", size)] = _result("zmq", "stream", size, 2.0)
        results[("raw", "stream", size)] = _result("raw", "stream", size, 0.5)
    results[("stockings", "rtt", 16)] = _result("stockings", "rtt", 16, 0.03)
    results[("zmq", "rtt", 16)] = _result("zmq", "rtt", 16, 0.06)
    results[(NOSPIN, "rtt", 16)] = _result(NOSPIN, "rtt", 16, 0.045)
    failed = Result("mpc", "stream", 100, 10, error="delivery check failed")
    results[("mpc", "stream", 100)] = failed
    table = format_table(results, {OLD: "pip failed"})
    row = "| stream 100 B, msg/s | 1,000 | 2,000 | failed | 500 | n/a | 0.50 | n/a | 2.00 |"
    assert row in table
    assert "| rtt 16 B, us | 30 | n/a | n/a | 60 | 45 | n/a | n/a | 0.50 |" in table
    assert f"{OLD}: unavailable: pip failed" in table
    # Not a peer: a column but no ratio column, and a line of its own.
    assert "x stockings-nospin" not in table
    assert (
        f"{NOSPIN} (read_spin=0, a read that waits sleeps at once): rtt 45 us, x zmq 0.75." in table
    )
    assert "mpc stream 100 B: failed: delivery check failed" in table
    verdicts = "\n".join(check_targets(results))
    assert "100 B msg/s vs zmq: 2.00 (target >= 1.0): met" in verdicts
    assert "1 MiB MB/s vs raw: 0.50 (target >= 0.8): NOT met" in verdicts
    assert "16 B rtt vs zmq: 0.50 (target <= 0.7): met" in verdicts
    assert "100 B msg/s vs mpc: not measured" in verdicts
