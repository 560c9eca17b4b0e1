"""The orchestration of the comparison benchmark: launch, check, keep the best.

:func:`run_one` starts the two child processes of one measurement (the server
first, then the client on the port it announces), collects their JSON
reports and checks that every message arrived intact; a run that fails, or
outlasts :data:`RUN_TIMEOUT`, becomes a failed :class:`Result`, never a
number, and leaves no child behind. :func:`run_compare` plans the
measurements of every system.

Nothing is installed here: Stockings 1.2.3 runs from a folder that
``pip install --no-deps --target .stockings123 stockings==1.2.3`` filled
(``--old``), and TLS runs need ``trustme`` (the ``bench`` extra).
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .fanin import FAN_IN
from .peers import BASE, BATCH, NOSPIN, OLD, SYSTEMS, TLS_ENV
from .result import Result, describe

__all__ = [
    "BATCH_SIZES",
    "DEFAULT_OLD",
    "FANIN_SIZE",
    "FANIN_SYSTEMS",
    "RTT_SIZE",
    "RUN_TIMEOUT",
    "SIZES",
    "TLS_SIZES",
    "TLS_SYSTEMS",
    "Where",
    "make_certificates",
    "message_count",
    "old_unavailable",
    "run_compare",
    "run_one",
    "tls_unavailable",
    "zmq_unavailable",
]

_BENCHMARKS = Path(__file__).resolve().parent.parent
#: Where ``.ci/run`` (and the README's setup) put Stockings 1.2.3.
DEFAULT_OLD = _BENCHMARKS.parent / ".stockings123"

#: The stream sizes the batch calls are measured at (where they can help).
BATCH_SIZES = (16, 100, 4096)
#: Stream message sizes in bytes.
SIZES = (16, 100, 4096, 65536, 1048576)
RTT_SIZE = 16
#: Fan-in message size, and the systems with a fan-in server.
FANIN_SIZE = 100
FANIN_SYSTEMS = ("stockings", "raw", "mpc", "zmq", "asyncio", BASE)
#: TLS stream sizes, and the systems measured over TLS.
TLS_SIZES = (100, 1048576)
TLS_SYSTEMS = ("stockings", "raw", BASE)
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
_FANIN_COUNTS = (FAN_IN * 6_000, FAN_IN * 2_000)
_TLS_COUNTS = {100: (200_000, 60_000), 1048576: (512, 128)}
# 1.2.3 moves every message through a pipe and reads headers one byte per
# recv, so it is slow: its runs are a quarter the size. It is known to
# deadlock on bursts of large messages in both directions at once; these
# one-way bursts (up to 256 MiB) have not, and a stuck run would be killed
# after RUN_TIMEOUT and reported as failed, never counted.
_OLD_COUNTS = {size: (full // 4, quick // 4) for size, (full, quick) in _COUNTS.items()}
_OLD_RTT_COUNTS = (_RTT_COUNTS[0] // 4, _RTT_COUNTS[1] // 4)


@dataclass(frozen=True)
class Where:
    """Where the children find what they run.

    Attributes:
        old: the folder holding Stockings 1.2.3's ``Stockings`` package.
        lib: a folder to import ``stockings`` from instead of the installed
            one (another checkout's ``src``), or ``None``.
        tls: the folder of the TLS certificates, or ``None`` (no TLS runs).
        baseline: the folder ``stockings-base`` imports ``stockings`` from.
    """

    old: Path = DEFAULT_OLD
    lib: Path | None = None
    tls: Path | None = None
    baseline: Path | None = None


def _child_command(system: str, where: Where) -> list[str]:
    paths = [str(_BENCHMARKS)]
    if where.lib is not None:
        paths.insert(0, str(where.lib.resolve()))
    if system == OLD:
        # 1.2.3 first on the path, so ``import Stockings`` finds it, not ours.
        paths.insert(0, str(where.old.resolve()))
    if system == BASE and where.baseline is not None:
        paths.insert(0, str(where.baseline.resolve()))
    code = (
        f"import sys; sys.path[:0] = {paths!r}; "
        "from comparison.child import child_main; child_main(sys.argv[1:])"
    )
    return [sys.executable, "-c", code]


def old_unavailable(folder: Path) -> str:
    """Why Stockings 1.2.3 cannot run from ``folder``, or ``""`` if it can."""
    if (folder / "Stockings" / "__init__.py").exists():
        return ""
    return f"not found in {folder}; pip install --no-deps --target {folder} stockings==1.2.3"


def tls_unavailable() -> str:
    """Why the TLS runs cannot be made here, or ``""`` if they can."""
    try:
        import trustme  # noqa: F401
    except ImportError as exc:
        return f"trustme not installed ({exc}); pip install stockings[bench]"
    return ""


def make_certificates(folder: Path) -> None:
    """Write a throwaway CA (``ca.pem``) and a ``localhost`` certificate (``server.pem``)."""
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(
        str(folder / "server.pem")
    )


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


def run_one(system: str, test: str, size: int, count: int, where: Where | None = None) -> Result:
    """Run one measurement in two child processes and check its counts.

    Args:
        system: one of :data:`SYSTEMS`.
        test: ``stream``, ``tls``, ``rtt`` or ``fanin``.
        size: the message size.
        count: how many messages (round trips for ``rtt``).
        where: where the children find 1.2.3, the library and the certificates.

    Returns:
        The result; failed (``error`` set, no numbers) unless every message
        arrived whole and unchanged.
    """
    where = where or Where()
    result = Result(system, test, size, count)
    command = _child_command(system, where)
    args = [test, str(size), str(count)]
    env = dict(os.environ)
    env.pop(TLS_ENV, None)
    if test == "tls":
        if where.tls is None:
            result.error = "no TLS certificates"
            return result
        env[TLS_ENV] = str(where.tls)
    deadline = time.monotonic() + RUN_TIMEOUT
    server = client = None
    try:
        server = subprocess.Popen(
            [*command, "serve", system, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        port = _read_json_line(server, deadline)["port"]
        client = subprocess.Popen(
            [*command, "client", system, *args, str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        out, err = client.communicate(timeout=max(1.0, deadline - time.monotonic()))
        if client.returncode:
            raise RuntimeError(f"client failed: {err.strip()[-300:]}")
        report = json.loads(out.strip().splitlines()[-1])
        sout, serr = server.communicate(timeout=max(1.0, deadline - time.monotonic()))
        if server.returncode:
            raise RuntimeError(f"server failed: {serr.strip()[-300:]}")
        served = json.loads(sout.strip().splitlines()[-1])
        expected = f"{count} {count * size} 0"
        if report["answer"] != expected or served["received"] != count or served["bad"]:
            raise RuntimeError(
                f"delivery check failed: got {report['answer']} (count, bytes, corrupt),"
                f" sent {expected}"
            )
        result.seconds = report["seconds"]
        result.client_rss = report["peak_rss"] - report["idle_rss"]
        result.server_rss = served["peak_rss"] - served["idle_rss"]
        result.cpu = report["cpu"] + served["cpu"]
        result.extra = {
            "client_idle": report["idle_rss"],
            "server_idle": served["idle_rss"],
            # CPU seconds per side (every thread), for reading where time goes.
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


def _plan(systems: Sequence[str], unavailable: dict[str, str]) -> list[tuple[str, str, int]]:
    """Every ``(system, test, size)`` to measure, in the order they run."""
    plan = []
    for size in SIZES:
        for system in systems:
            if system == NOSPIN or (system == BATCH and size not in BATCH_SIZES):
                # Spinning changes nothing for a stream; batching nothing for large ones.
                continue
            if system != "asyncio":
                plan.append((system, "stream", size))
    plan += [(s, "rtt", RTT_SIZE) for s in systems if s not in (BATCH, "asyncio")]
    plan += [(s, "fanin", FANIN_SIZE) for s in systems if s in FANIN_SYSTEMS]
    if "tls" not in unavailable:
        plan += [(s, "tls", size) for size in TLS_SIZES for s in systems if s in TLS_SYSTEMS]
    return [step for step in plan if step[0] not in unavailable]


def _stream_counts(size: int, table: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """Counts for a stream size not in ``table``: the bytes of the next larger size listed."""
    larger = [listed for listed in sorted(table) if listed >= size] or [max(table)]
    full, quick = table[larger[0]]
    scale = larger[0] / size
    return max(1, int(full * scale)), max(1, int(quick * scale))


def message_count(system: str, test: str, size: int, quick: bool, scale: float) -> int:
    """How many messages (round trips for rtt) one run of a measure takes."""
    pick = 1 if quick else 0
    if test == "rtt":
        counts = _OLD_RTT_COUNTS if system == OLD else _RTT_COUNTS
    elif test == "fanin":
        counts = _FANIN_COUNTS
    elif test == "tls":
        counts = _TLS_COUNTS[size]
    else:
        table = _OLD_COUNTS if system == OLD else _COUNTS
        counts = table.get(size) or _stream_counts(size, table)
    return max(FAN_IN if test == "fanin" else 1, int(counts[pick] * scale))


def run_compare(
    systems: Sequence[str] = SYSTEMS,
    quick: bool = False,
    repeat: int = 1,
    where: Where | None = None,
    progress: Callable[[str], None] | None = None,
    scale: float = 1.0,
    tests: Sequence[str] = ("stream", "rtt", "fanin", "tls"),
) -> tuple[dict[tuple[str, str, int], Result], dict[str, str]]:
    """Measure every system; keep the best of ``repeat`` runs of each measure.

    Args:
        systems: which of :data:`SYSTEMS` to run.
        quick: use the smaller message counts.
        repeat: runs per measure; the fastest is kept.
        where: where the children find 1.2.3 and the library; TLS
            certificates are made here for the run when ``where.tls`` is unset.
        progress: called with one line per finished run.
        scale: multiplies every message count (for short trial runs).
        tests: which tests to run.

    Returns:
        ``(results, unavailable)``: results keyed by ``(system, test, size)``,
        and why each skipped system (or ``tls``) could not run.
    """
    where = where or Where()
    unavailable: dict[str, str] = {}
    if "zmq" in systems and (why := zmq_unavailable()):
        unavailable["zmq"] = why
    if OLD in systems and (why := old_unavailable(where.old)):
        unavailable[OLD] = why
    if BASE in systems and where.baseline is None:
        unavailable[BASE] = "no --baseline folder given"
    if "tls" in tests and where.tls is None and (why := tls_unavailable()):
        unavailable["tls"] = why
    results: dict[tuple[str, str, int], Result] = {}
    plan = [step for step in _plan(systems, unavailable) if step[1] in tests]
    with tempfile.TemporaryDirectory(prefix="stockings-bench-") as folder:
        if "tls" not in unavailable and where.tls is None and "tls" in tests:
            make_certificates(Path(folder))
            where = Where(old=where.old, lib=where.lib, tls=Path(folder), baseline=where.baseline)
        for _ in range(repeat):
            for system, test, size in plan:
                count = message_count(system, test, size, quick, scale)
                result = run_one(system, test, size, count, where)
                if progress is not None:
                    progress(describe(result))
                key = (system, test, size)
                best = results.get(key)
                if best is None or not best.ok or (result.ok and result.seconds < best.seconds):
                    results[key] = result
    return results, unavailable
