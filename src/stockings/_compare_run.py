"""The orchestration of the comparison benchmark: launch, check, keep the best.

:func:`run_one` starts the two child processes of one measurement (the server
first, then the client on the port it announces), collects their JSON
reports and checks that every message arrived; a run that fails, or outlasts
:data:`RUN_TIMEOUT`, becomes a failed :class:`Result`, never a number, and
leaves no child behind. :func:`run_compare` plans the measurements of every
system, including installing Stockings 1.2.3 on demand.
"""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._compare_peers import BATCH, NOSPIN, OLD, SYSTEMS
from ._compare_result import Result, describe

__all__ = [
    "BATCH_SIZES",
    "RTT_SIZE",
    "RUN_TIMEOUT",
    "SIZES",
    "ensure_old",
    "run_compare",
    "run_one",
    "zmq_unavailable",
]

#: The stream sizes the batch calls are measured at (where they can help).
BATCH_SIZES = (16, 100, 4096)
#: Stream message sizes in bytes.
SIZES = (16, 100, 4096, 65536, 1048576)
RTT_SIZE = 16
#: How long one child process may run before it is killed and the run failed.
RUN_TIMEOUT = 60.0

# Messages per stream run, by size: (full, quick). The 1 MiB full run sends
# 1 GiB, which is also the memory measurement.
_COUNTS = {
    16: (400_000, 150_000),
    100: (400_000, 150_000),
    4096: (100_000, 30_000),
    65536: (10_000, 3_000),
    1048576: (1024, 256),
}
_RTT_COUNTS = (20_000, 5_000)
# 1.2.3 moves every message through a pipe and reads headers one byte per
# recv, so it is slow: its runs are a quarter the size. It is known to
# deadlock on bursts of large messages in both directions at once; these
# one-way bursts (up to 256 MiB) have not, and a stuck run would be killed
# after RUN_TIMEOUT and reported as failed, never counted.
_OLD_COUNTS = {size: (full // 4, quick // 4) for size, (full, quick) in _COUNTS.items()}
_OLD_RTT_COUNTS = (_RTT_COUNTS[0] // 4, _RTT_COUNTS[1] // 4)


def _child_command(system: str, cache: Path) -> list[str]:
    here = str(Path(__file__).resolve().parent.parent)
    paths = [here]
    if system == OLD:
        # 1.2.3 first on the path, so ``import Stockings`` finds it, not ours.
        paths.insert(0, str(_old_target(cache).resolve()))
    code = (
        f"import sys; sys.path[:0] = {paths!r}; "
        "from stockings._compare_child import child_main; child_main(sys.argv[1:])"
    )
    return [sys.executable, "-c", code]


def _old_target(cache: Path) -> Path:
    return cache / "stockings123"


def ensure_old(cache: Path) -> str:
    """Install Stockings 1.2.3 into the cache if needed; return why not, or ``""``."""
    target = _old_target(cache)
    if (target / "Stockings" / "__init__.py").exists():
        return ""
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    command += ["--target", str(target), "stockings==1.2.3"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"pip failed: {exc}"
    if done.returncode or not (target / "Stockings" / "__init__.py").exists():
        return f"pip install stockings==1.2.3 failed: {done.stderr.strip()[-200:]}"
    return ""


def zmq_unavailable() -> str:
    """Why pyzmq cannot run here, or ``""`` if it can."""
    try:
        import zmq  # noqa: F401
    except ImportError as exc:
        return f"pyzmq not installed ({exc}); pip install stockings[bench]"
    return ""


def _read_json_line(proc: subprocess.Popen[str], deadline: float) -> dict[str, Any]:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(max(0.0, deadline - time.monotonic())):
            raise TimeoutError("the server did not start in time")
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("the server exited before listening")
    return dict(json.loads(line))


def _stop(proc: subprocess.Popen[str] | None) -> str:
    """Make sure a child is gone and reaped; return its stderr tail."""
    if proc is None:
        return ""
    if proc.poll() is None:
        proc.kill()
    try:
        _, err = proc.communicate(timeout=10)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        proc.kill()
        proc.wait()
        err = ""
    return (err or "").strip()[-300:]


def run_one(system: str, test: str, size: int, count: int, cache: Path) -> Result:
    """Run one measurement in two child processes and check its counts."""
    result = Result(system, test, size, count)
    command = _child_command(system, cache)
    args = [test, str(size), str(count)]
    deadline = time.monotonic() + RUN_TIMEOUT
    server = client = None
    try:
        server = subprocess.Popen(
            [*command, "serve", system, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        port = _read_json_line(server, deadline)["port"]
        client = subprocess.Popen(
            [*command, "client", system, *args, str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        out, err = client.communicate(timeout=max(1.0, deadline - time.monotonic()))
        if client.returncode:
            raise RuntimeError(f"client failed: {err.strip()[-300:]}")
        report = json.loads(out.strip().splitlines()[-1])
        sout, serr = server.communicate(timeout=max(1.0, deadline - time.monotonic()))
        if server.returncode:
            raise RuntimeError(f"server failed: {serr.strip()[-300:]}")
        served = json.loads(sout.strip().splitlines()[-1])
        expected = f"{count} {count * size}"
        if report["answer"] != expected or served["received"] != count:
            raise RuntimeError(f"delivery check failed: got {report['answer']}, sent {expected}")
        result.seconds = report["seconds"]
        result.client_rss = report["peak_rss"] - report["idle_rss"]
        result.server_rss = served["peak_rss"] - served["idle_rss"]
        result.extra = {
            "client_idle": report["idle_rss"],
            "server_idle": served["idle_rss"],
            # CPU seconds per side (both threads), for reading where time goes.
            "client_cpu": report["cpu"],
            "server_cpu": served["cpu"],
        }
    except subprocess.TimeoutExpired:
        result.error = f"timed out after {RUN_TIMEOUT:.0f} s"
    except Exception as exc:
        result.error = str(exc) or type(exc).__name__
    finally:
        _stop(client)
        _stop(server)
    return result


def _counts(system: str, quick: bool, scale: float = 1.0) -> tuple[dict[int, int], int]:
    pick = 1 if quick else 0
    table = _OLD_COUNTS if system == OLD else _COUNTS
    rtt = _OLD_RTT_COUNTS if system == OLD else _RTT_COUNTS
    sizes = {size: max(1, int(table[size][pick] * scale)) for size in SIZES}
    return sizes, max(1, int(rtt[pick] * scale))


def run_compare(
    systems: Sequence[str] = SYSTEMS,
    quick: bool = False,
    repeat: int = 1,
    cache: Path = Path(".bench"),
    progress: Callable[[str], None] | None = None,
    scale: float = 1.0,
) -> tuple[dict[tuple[str, str, int], Result], dict[str, str]]:
    """Measure every system; keep the best of ``repeat`` runs of each measure.

    Args:
        systems: which of :data:`SYSTEMS` to run.
        quick: use the smaller message counts.
        repeat: runs per measure; the fastest is kept.
        cache: where Stockings 1.2.3 is installed on demand.
        progress: called with one line per finished run.
        scale: multiplies every message count (for short trial runs).

    Returns:
        ``(results, unavailable)``: results keyed by ``(system, test, size)``
        (test ``"stream"`` or ``"rtt"``), and why each skipped system could not run.
    """
    unavailable: dict[str, str] = {}
    if "zmq" in systems and (why := zmq_unavailable()):
        unavailable["zmq"] = why
    if OLD in systems and (why := ensure_old(cache)):
        unavailable[OLD] = why
    results: dict[tuple[str, str, int], Result] = {}
    plan = [("stream", size) for size in SIZES] + [("rtt", RTT_SIZE)]
    # The batch calls change nothing for one round trip or for large messages:
    # they run the small streams only.
    for _ in range(repeat):
        for test, size in plan:
            for system in systems:
                if system in unavailable or (system == BATCH and size not in BATCH_SIZES):
                    continue
                if system == NOSPIN and test != "rtt":
                    # Spinning changes nothing for a stream.
                    continue
                sizes, rtt_count = _counts(system, quick, scale)
                count = sizes[size] if test == "stream" else rtt_count
                result = run_one(system, test, size, count, cache)
                if progress is not None:
                    progress(describe(result))
                key = (system, test, size)
                best = results.get(key)
                if best is None or not best.ok or (result.ok and result.seconds < best.seconds):
                    results[key] = result
    return results, unavailable
