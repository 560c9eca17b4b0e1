"""The ``stockings`` command line, run as users run it: in a child process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from collections.abc import Iterator, Sequence

import pytest

from conftest import FLAVOURS
from stockings import _cli

ENV = {**os.environ, "PYTHONIOENCODING": "utf-8"}
TINY_BENCH = ["--count", "300", "--large-count", "3", "--rtt-count", "5", "--duration", "20"]
NUMBER = re.compile(r"^[\d,]+(\.\d)?$")


def run_cli(*args: str, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m stockings ARGS`` and capture what it prints."""
    return subprocess.run(
        [sys.executable, "-m", "stockings", *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=ENV,
        timeout=timeout,
        check=False,
    )


def table_rows(output: str) -> list[list[str]]:
    """The rows of the bench table (header excluded), split into cells."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("flavour "))
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def test_help_lists_the_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for command in ("bench", "serve", "cat"):
        assert command in result.stdout


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == "stockings 2.0.0"


def test_no_command_is_a_usage_error() -> None:
    result = run_cli()
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_unknown_option_is_a_usage_error() -> None:
    result = run_cli("bench", "--no-such-option")
    assert result.returncode == 2
    assert "unrecognized arguments: --no-such-option" in result.stderr


@pytest.mark.timeout(120)
def test_bench_prints_a_row_per_flavour_and_transport() -> None:
    result = run_cli("bench", *TINY_BENCH, timeout=110)
    assert result.returncode == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if line.startswith("flavour"))
    assert header.split() == [
        "flavour",
        "transport",
        "100",
        "B",
        "msg/s",
        "100",
        "B",
        "MB/s",
        "1",
        "MiB",
        "msg/s",
        "1",
        "MiB",
        "MB/s",
        "rtt",
        "µs",
    ]
    rows = table_rows(result.stdout)
    expected = {(f.__name__, t) for f in FLAVOURS for t in ("tcp", "socketpair")}
    assert {(row[0], row[1]) for row in rows} == expected
    assert len(rows) == len(expected)
    for row in rows:
        assert len(row) == 7
        for cell in row[2:]:
            assert NUMBER.match(cell), row
            assert float(cell.replace(",", "")) > 0, row
    # Every row is as wide as the header: the table is aligned.
    lines = result.stdout.splitlines()
    start = lines.index(header)
    assert {len(line) for line in lines[start : start + 1 + len(rows)]} == {len(header)}
    # Nothing was cut short by --duration, so every message was counted.
    per_row = 300 + 3
    assert f"all {per_row * len(rows):,} streamed messages" in result.stdout
    assert f"{5 * len(rows):,} round trips arrived intact" in result.stdout


@pytest.mark.timeout(60)
def test_bench_one_flavour_one_transport() -> None:
    result = run_cli(
        "bench", *TINY_BENCH, "--flavour", "SelectStocking", "--transport", "tcp", timeout=50
    )
    assert result.returncode == 0, result.stderr
    assert [row[:2] for row in table_rows(result.stdout)] == [["SelectStocking", "tcp"]]


def test_bench_rejects_an_unknown_flavour() -> None:
    result = run_cli("bench", "--flavour", "NoSuchStocking")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


@pytest.mark.timeout(30)
@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
@pytest.mark.usefixtures("no_leaks")
def test_run_bench_counts_every_message(flavour: type[_cli.Stocking]) -> None:
    result = _cli.run_bench(flavour, "socketpair", _cli._transports()["socketpair"], 50, 2, 3, 20)
    assert (result.small_count, result.large_count, result.rtt_count) == (50, 2, 3)
    assert result.flavour == flavour.__name__
    assert min(result.small_rate, result.large_rate, result.rtt_us) > 0


def test_stream_stops_at_the_duration_and_counts_what_it_sent() -> None:
    elapsed, count = _cli._stream(
        _cli.Stocking, _cli._transports()["socketpair"], 10, 10_000_000, 0.001
    )
    assert 0 < count < 10_000_000
    assert elapsed > 0


def test_table_columns_line_up() -> None:
    rows = [
        _cli.BenchResult("Stocking", "tcp", 123456.7, 12.3, 1000.0, 1048.6, 45.6, 1, 1, 1),
        _cli.BenchResult("SelectStocking", "socketpair", 1.0, 0.1, 2.0, 2.1, 1234.5, 1, 1, 1),
    ]
    lines = _cli.format_table(rows).splitlines()
    assert len(lines) == 3
    assert len({len(line) for line in lines}) == 1
    assert lines[1].split()[2] == "123,457"


@pytest.fixture
def fake_compare(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Sequence[str]]]:
    calls: list[Sequence[str]] = []

    def compare_main(argv: Sequence[str]) -> int:
        calls.append(list(argv))
        return 7

    module = types.ModuleType("stockings._compare")
    module.main = compare_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "stockings._compare", module)
    yield calls


def test_bench_compare_hands_over_to_the_comparison(fake_compare: list[Sequence[str]]) -> None:
    assert _cli.main(["bench", "--compare", "--sizes", "16"]) == 7
    assert fake_compare == [["--sizes", "16"]]


def test_bench_compare_passes_every_other_word_on(fake_compare: list[Sequence[str]]) -> None:
    assert _cli.main(["bench", "--quick", "--compare", "--help"]) == 7
    assert fake_compare == [["--quick", "--help"]]


def test_bench_compare_says_when_it_is_not_installed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "stockings._compare", None)
    assert _cli.main(["bench", "--compare"]) == 2
    assert "not available in this install" in capsys.readouterr().err


def test_bench_compare_reports_what_it_lacks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def missing_dependency(name: str) -> types.ModuleType:
        raise ModuleNotFoundError("No module named 'resource'", name="resource")

    monkeypatch.setattr(_cli.importlib, "import_module", missing_dependency)
    assert _cli.main(["bench", "--compare"]) == 2
    assert "not available here (No module named 'resource')" in capsys.readouterr().err


@pytest.mark.timeout(60)
@pytest.mark.parametrize("as_bytes", [False, True], ids=["text", "bytes"])
def test_serve_and_cat_round_trip(as_bytes: bool) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "stockings", "serve", "--port", "0", "--once"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        env=ENV,
    )
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        match = re.fullmatch(r"listening on (127\.0\.0\.1:\d+)\n", first)
        assert match, first
        lines = ["hello", "wörld", "", "x" * 10_000]
        extra = ["--bytes"] if as_bytes else []
        result = run_cli(
            "cat",
            match.group(1),
            "--expect",
            str(len(lines)),
            *extra,
            stdin="\n".join(lines) + "\n",
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split("\n") == [*lines, ""]
        out, err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 0, err
    assert re.search(r"^\+ 127\.0\.0\.1:\d+$", out, re.M), out
    assert re.search(r"^- 127\.0\.0\.1:\d+ \(peer closed\)$", out, re.M), out


def test_cat_reports_a_refused_connection() -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as spare:
        port = spare.getsockname()[1]
    result = run_cli("cat", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert "refused" in result.stderr.lower()


def test_cat_rejects_a_bad_address() -> None:
    result = run_cli("cat", "no-port-here")
    assert result.returncode == 2
    assert "HOST:PORT" in result.stderr
