"""The comparison benchmark's harness (benchmarks/comparison): delivery checks, failures, tables."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from comparison import child, report, run
from comparison.peers import BATCH, NOSPIN, OLD
from comparison.result import Result, describe
from comparison.run import Where, run_one


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


# Every system, whatever this machine has: one that cannot run here is
# reported as skipped, with why, rather than left out of the run unseen.
SYSTEMS = ["stockings", BATCH, NOSPIN, "raw", "mpc", "zmq", OLD]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    run.make_certificates(folder)
    return folder


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="counts children through /proc")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("system", SYSTEMS)
def test_every_system_delivers_every_message(system: str, request: pytest.FixtureRequest) -> None:
    if system == "zmq" and (why := run.zmq_unavailable()):
        pytest.skip(why)
    if system == OLD:
        # Installed where the benchmark looks for it by default.
        assert request.getfixturevalue("stockings123") == run.DEFAULT_OLD.resolve()
    for test, size, count in (("stream", 100, 300), ("stream", 1 << 20, 3), ("rtt", 16, 30)):
        result = run_one(system, test, size, count)
        assert result.ok, result.error
        assert result.count == count
        assert result.seconds > 0
        assert result.cpu > 0
        assert "client_cpu" in result.extra
    assert _children() == []


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="counts children through /proc")
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "system", [s for s in run.FANIN_SYSTEMS if s != "zmq" or not run.zmq_unavailable()]
)
def test_every_fan_in_server_takes_every_message(system: str) -> None:
    result = run_one(system, "fanin", 100, 2 * 32 * 32 + 5)
    assert result.ok, result.error
    assert result.seconds > 0
    assert _children() == []


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="counts children through /proc")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("system", run.TLS_SYSTEMS)
def test_tls_runs_deliver_every_message(system: str, certificates: Path) -> None:
    for size, count in ((100, 200), (1 << 20, 2)):
        result = run_one(system, "tls", size, count, Where(tls=certificates))
        assert result.ok, result.error
    assert _children() == []


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="counts children through /proc")
@pytest.mark.timeout(60)
def test_a_broken_run_is_a_failure_and_leaves_no_children() -> None:
    result = run_one("no-such-system", "stream", 100, 10)
    assert not result.ok
    assert result.seconds == 0
    assert _children() == []


@pytest.mark.timeout(60)
def test_a_corrupted_message_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # The client sends one message changed in its last byte: same count, same bytes.
    monkeypatch.setenv(child.CORRUPT_ENV, "1")
    for test in ("stream", "rtt"):
        result = run_one("raw", test, 100, 50)
        assert not result.ok
        assert "got 50 5000 1 (count, bytes, corrupt), sent 50 5000 0" in result.error


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="counts children through /proc")
@pytest.mark.timeout(60)
def test_a_stuck_run_is_killed_after_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "RUN_TIMEOUT", 1.0)
    # Far more than one second's worth of messages.
    result = run_one("raw", "rtt", 16, 10_000_000)
    assert not result.ok
    assert "timed out" in result.error
    assert _children() == []


def _result(system: str, test: str, size: int, seconds: float, cpu: float = 1.0) -> Result:
    return Result(system, test, size, 1000, seconds=seconds, cpu=cpu, client_rss=1 << 20)


def test_the_table_shows_rates_cpu_and_ratios_and_the_targets_say_met_or_not() -> None:
    results = {}
    for size in run.SIZES:
        results[("stockings", "stream", size)] = _result("stockings", "stream", size, 1.0)
        results[("zmq", "stream", size)] = _result("zmq", "stream", size, 2.0, cpu=2.0)
        results[("raw", "stream", size)] = _result("raw", "stream", size, 0.5)
    results[("stockings", "rtt", 16)] = _result("stockings", "rtt", 16, 0.03)
    results[("mpc", "rtt", 16)] = _result("mpc", "rtt", 16, 0.06, cpu=0.5)
    results[(NOSPIN, "rtt", 16)] = _result(NOSPIN, "rtt", 16, 0.045)
    results[("stockings", "fanin", 100)] = _result("stockings", "fanin", 100, 1.0)
    results[("raw", "fanin", 100)] = _result("raw", "fanin", 100, 0.5)
    failed = Result("mpc", "stream", 100, 10, error="delivery check failed")
    results[("mpc", "stream", 100)] = failed
    table = report.format_table(results, {OLD: "not found"})
    assert "| stream 100 B | zmq | 500 |  | 2000.00 | 2.00 | 0.50 |" in table
    assert "| stream 100 B | mpc | failed |" in table
    assert "| rtt 16 B | mpc | 60.0 |  | 500.00 | 0.50 | 2.00 |" in table
    assert "| fan-in 32 x 100 B | raw | 2,000 |  | 1000.00 | 0.50 | 1.00 |" in table
    assert f"{OLD}: unavailable: not found" in table
    assert "FAILED: mpc stream 100 B: delivery check failed" in table
    verdicts = report.format_targets(report.check_targets(results))
    assert "| 100 B stream / zmq | 2.00 | >= 1.5 | yes |" in verdicts
    assert "| 1 MiB stream / raw | 0.50 | >= 0.9 | **no** |" in verdicts
    assert "| 16 B rtt time / mpc | 0.50 | <= 0.5 | yes |" in verdicts
    assert "| 16 B rtt CPU per round trip / mpc | 2.00 | <= 1 | **no** |" in verdicts
    assert "| 100 B stream CPU per message / zmq | 0.50 | <= 0.8 | yes |" in verdicts
    assert "| fan-in / raw | 0.50 | >= 0.6 | **no** |" in verdicts
    assert "| fan-in / zmq | not measured | >= 2 |  |" in verdicts


def test_a_progress_line_splits_the_cpu_between_the_two_processes() -> None:
    stream = _result("stockings", "stream", 65536, 1.0, cpu=0.03)
    stream.extra = {"client_cpu": 0.012, "server_cpu": 0.018}
    line = describe(stream)
    assert "CPU 30.00 us/msg (writer 12.00, reader 18.00)" in line
    rtt = _result("mpc", "rtt", 16, 0.05, cpu=0.08)
    rtt.extra = {"client_cpu": 0.05, "server_cpu": 0.03}
    assert "CPU 80.00 us/msg (client 50.00, server 30.00)" in describe(rtt)
    # A run that could not say (an older JSON, say) shows the total alone.
    assert describe(_result("raw", "stream", 100, 1.0)).endswith("CPU 1000.00 us/msg")


@pytest.mark.timeout(120)
def test_the_command_runs_and_fails_on_a_failed_run(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--quick", "--scale", "0.002", "--systems", "raw", "--tests", "stream"]
    assert report.main(args) == 0
    out = capsys.readouterr().out
    assert "| measure | system | msg/s (rtt: us) | MB/s | CPU us/msg | x rate | x CPU |" in out
    assert "| 1 MiB stream / raw |" in out
    assert report.main(["--systems", "nothing"]) == 2


@pytest.mark.timeout(120)
def test_pairs_alternate_the_sides_and_report_medians_and_wins() -> None:
    from comparison import pairs

    source = Path(__file__).resolve().parents[2] / "src"
    where = Where(baseline=source)
    lines: list[str] = []
    found = pairs.run_pairs(where, 3, ["stream", "rtt"], scale=0.001, progress=lines.append)
    assert [(p.test, p.size) for p in found] == pairs.measures_for(["stream", "rtt"])
    for measure in found:
        assert measure.ok
        assert len(measure.ours) == len(measure.base) == 3
        ours, base = measure.medians()
        assert ours > 0 and base > 0
        assert 0 <= measure.wins() <= 3
    # Each round runs every measure once per side, the first side alternating.
    per_round = 2 * len(found)
    firsts = [lines[i].split()[0] for i in range(0, 3 * per_round, per_round)]
    assert firsts == ["stockings", "stockings-base", "stockings"]
    table = pairs.format_pairs(found)
    assert "| stream 16 B | 3 |" in table
    assert "| rtt 16 B | 3 |" in table


@pytest.mark.timeout(120)
def test_pairs_measure_a_stream_size_the_comparison_lacks() -> None:
    from comparison import pairs, run

    source = Path(__file__).resolve().parents[2] / "src"
    found = pairs.run_pairs(Where(baseline=source), 1, ["stream"], scale=0.001, sizes=[100, 16384])
    assert [(p.test, p.size) for p in found] == [("stream", 100), ("stream", 16384)]
    assert all(measure.ok for measure in found)
    assert "| stream 16 KiB | 1 |" in pairs.format_pairs(found)
    # As many bytes as the next size up: 64 KiB.
    assert run.message_count("stockings", "stream", 16384, False, 1.0) == 4 * run.message_count(
        "stockings", "stream", 65536, False, 1.0
    )


def test_pairs_need_a_baseline() -> None:
    from comparison import pairs

    with pytest.raises(ValueError, match="baseline"):
        pairs.run_pairs(Where(), 1, ["rtt"])


def test_a_failed_pair_is_reported_as_failed() -> None:
    from comparison import pairs

    broken = pairs.Pairs("stream", 100, [Result("stockings", "stream", 100, 10, 1.0, 1.0)])
    broken.base.append(Result("stockings-base", "stream", 100, 10, error="boom"))
    assert not broken.ok
    assert "failed: stockings-base: boom" in pairs.format_pairs([broken])


def test_the_before_after_command_refuses_a_folder_without_stockings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import before_after

    assert before_after.main([str(tmp_path), "--rounds", "1"]) == 2
    assert "no stockings package" in capsys.readouterr().err
    assert before_after.main([str(tmp_path), "--tests", "nope"]) == 2


def test_the_bytecode_count_is_the_same_each_run_and_tells_sizes_apart(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import bytecodes

    runs = []
    for _ in range(2):
        assert bytecodes.main(["--sizes", "100,65536"]) == 0
        lines = capsys.readouterr().out.splitlines()
        rows = [line.split("|") for line in lines if line[:3] in ("| 1", "| 6")]
        runs.append({row[1].strip(): [float(cell) for cell in row[2:4]] for row in rows})
    first, second = runs
    assert set(first) == {"100", "65536"}
    for size, counts in first.items():
        # Within a percent: the hub thread's start may meet the first writes.
        assert counts == pytest.approx(second[size], rel=0.01)
    # A large write does more than a small one that joins the batch.
    assert first["65536"][0] > first["100"][0] > 50
    assert first["65536"][1] > first["100"][1] > 0
