"""The ``stockings`` command line, run as users run it: in a child process."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from cli_helpers import one_line_error, server, terminal
from conftest import FLAVOURS
from stockings import Stocking, _cli, _cli_bench, _cli_measure

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
    assert result.stdout.strip() == "stockings 2.1.0"


def test_no_command_is_a_usage_error() -> None:
    result = run_cli()
    assert result.returncode == 2
    assert "COMMAND" in one_line_error(result.stderr)
    assert "stockings --help" in result.stderr


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
def test_run_bench_counts_every_message(flavour: type[Stocking]) -> None:
    result = _cli_measure.run_bench(
        flavour, "socketpair", _cli_measure.transports()["socketpair"], 50, 2, 3, 20
    )
    assert (result.small_count, result.large_count, result.rtt_count) == (50, 2, 3)
    assert result.flavour == flavour.__name__
    assert min(result.small_rate, result.large_rate, result.rtt_us) > 0


def test_stream_stops_at_the_duration_and_counts_what_it_sent() -> None:
    elapsed, count = _cli_measure.stream(
        Stocking, _cli_measure.transports()["socketpair"], 10, 10_000_000, 0.001
    )
    assert 0 < count < 10_000_000
    assert elapsed > 0


def test_table_columns_line_up() -> None:
    rows = [
        _cli_measure.BenchResult("Stocking", "tcp", 123456.7, 12.3, 1000.0, 1048.6, 45.6, 1, 1, 1),
        _cli_measure.BenchResult(
            "SelectStocking", "socketpair", 1.0, 0.1, 2.0, 2.1, 1234.5, 1, 1, 1
        ),
    ]
    lines = _cli_bench.format_table(rows).splitlines()
    assert len(lines) == 3
    assert len({len(line) for line in lines}) == 1
    assert lines[1].split()[2] == "123,457"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("as_bytes", [False, True], ids=["text", "bytes"])
def test_serve_and_cat_round_trip(as_bytes: bool) -> None:
    with server("--once") as (serve, address):
        lines = ["hello", "wörld", "", "x" * 10_000]
        extra = ["--bytes"] if as_bytes else []
        result = run_cli(
            "cat", address, "--expect", str(len(lines)), *extra, stdin="\n".join(lines) + "\n"
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split("\n") == [*lines, ""]
        assert serve.wait() == 0
        log = serve.err.until_closed().decode()
    stamp = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\]"
    assert re.search(rf"^{stamp} 127\.0\.0\.1:\d+ connected$", log, re.M), log
    assert re.search(
        rf"^{stamp} 127\.0\.0\.1:\d+ left after [\d.]+ s: peer closed \(4 messages in, 4 out\)$",
        log,
        re.M,
    ), log


def test_cat_reports_a_refused_connection() -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as spare:
        port = spare.getsockname()[1]
    result = run_cli("cat", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert "refused" in one_line_error(result.stderr).lower()


def test_cat_rejects_a_bad_address() -> None:
    result = run_cli("cat", "no-port-here")
    assert result.returncode == 2
    assert "HOST:PORT" in one_line_error(result.stderr)


def test_bench_has_no_compare_option() -> None:
    # The cross-library comparison lives in benchmarks/, outside the package.
    result = run_cli("bench", "--compare")
    assert result.returncode == 2
    assert "--compare" in one_line_error(result.stderr)


@pytest.mark.timeout(60)
def test_bench_shows_no_progress_in_a_pipe() -> None:
    result = run_cli("bench", *TINY_BENCH, "--flavour", "Stocking", "--transport", "socketpair")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "\r" not in result.stdout


@pytest.mark.timeout(60)
def test_bench_shows_live_progress_on_a_terminal() -> None:
    args = ["bench", *TINY_BENCH, "--flavour", "Stocking", "--transport", "socketpair"]
    with terminal(*args, stdin_tty=False) as term:
        term.screen.expect(rb"\r\x1b\[K\[1/1\] Stocking over socketpair: ")
        term.screen.expect(rb"round trips arrived intact")
        assert term.wait() == 0
    screen = term.screen.data
    assert b"100 B stream" in screen and b"1 MiB stream" in screen
    # The progress line is wiped before the table is printed.
    assert screen.index(b"flavour ") > screen.rindex(b"\x1b[K")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = _cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: sub for name, sub in action.choices.items() if name != "send"}


@pytest.mark.parametrize("command", ["bench", "serve", "cat"])
def test_help_has_examples_and_describes_every_option(command: str) -> None:
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert f"examples:\n  stockings {command}" in result.stdout
    for action in _subparsers()[command]._actions:
        assert action.help, f"{command} {action.option_strings or action.dest} has no help"


@pytest.mark.parametrize(
    ("command", "default"),
    [
        ("bench", "(default: 0.5)"),
        ("serve", "(default: 127.0.0.1)"),
        ("serve", "(default: 8765)"),
        ("cat", "(default: 10.0)"),
        ("cat", "(default: 67108864)"),
    ],
)
def test_help_gives_the_defaults(command: str, default: str) -> None:
    result = run_cli(command, "--help")
    assert default in " ".join(result.stdout.split())


@pytest.mark.parametrize("command", ["bench", "serve", "cat"])
def test_every_connection_option_is_offered(command: str) -> None:
    result = run_cli(command, "--help")
    wanted = [
        "--tls",
        "--cafile",
        "--certfile",
        "--keyfile",
        "--authkey-file",
        "--max-message-size",
    ]
    if command != "serve":
        wanted.append("--insecure")
    for option in wanted:
        assert option in result.stdout


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", ["tcp", "socketpair"])
def test_bench_over_tls_and_with_an_authkey(tmp_path: Path, transport: str) -> None:
    ca = trustme.CA()
    pem, ca_pem, key = tmp_path / "server.pem", tmp_path / "ca.pem", tmp_path / "secret.key"
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(pem))
    ca.cert_pem.write_to_path(str(ca_pem))
    key.write_bytes(b"s" * 32)
    options = ["--certfile", str(pem), "--cafile", str(ca_pem), "--authkey-file", str(key)]
    args = [*TINY_BENCH, "--flavour", "SelectStocking", "--transport", transport, *options]
    result = run_cli("bench", *args)
    assert result.returncode == 0, result.stderr
    assert "with TLS and an authkey" in result.stdout
    assert [row[:2] for row in table_rows(result.stdout)] == [["SelectStocking", transport]]


def test_bench_needs_room_for_its_large_messages() -> None:
    result = run_cli("bench", "--max-message-size", "1K")
    assert result.returncode == 2
    assert "--max-message-size must be at least 1048576" in one_line_error(result.stderr)


_STOP_THAT_HANGS = """\
import os, signal, threading
from stockings import _cli
_cli.STOP_GRACE = 0.3
with _cli._stop_on_sigterm():
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # its handler runs before kill returns
    except KeyboardInterrupt:
        print("cleaning up", flush=True)
        stuck = threading.Lock()
        stuck.acquire()
        stuck.acquire()  # a cleanup that never ends
"""

_STOP_THAT_ENDS = """\
import os, signal, sys
from stockings import _cli
_cli.STOP_GRACE = 0.3
try:
    with _cli._stop_on_sigterm():
        os.kill(os.getpid(), signal.SIGTERM)
except KeyboardInterrupt:
    print("stopped", flush=True)
sys.stdin.read()  # until the test closes stdin, well past the grace
print("still here", flush=True)
"""


def test_a_stop_that_hangs_after_sigterm_shows_its_threads_and_exits_1() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _STOP_THAT_HANGS], capture_output=True, timeout=60, check=False
    )
    assert result.stdout == b"cleaning up\n"
    assert result.returncode == 1, result.stderr
    assert b"Timeout (0:00:00.300000)!" in result.stderr
    assert b"most recent call first" in result.stderr


def test_the_bound_on_the_stop_ends_with_the_command() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _STOP_THAT_ENDS],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    try:
        assert child.stdout.readline() == b"stopped\n"
        # Five times the grace: a watchdog left armed would have ended it.
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=1.5)
        child.stdin.close()
        assert child.wait(timeout=60) == 0, child.stderr.read()
        assert child.stdout.read() == b"still here\n"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
