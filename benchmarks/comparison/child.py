"""The child-process side of the comparison benchmark: one server or one client.

Each measurement runs :func:`child_main` in two fresh interpreters, one
serving and one driving, so that each reports its own peak memory for that
run alone. Both print one line of JSON for the parent: the server its counts
of messages, bytes and messages unlike what was sent, the client its time and
the server's answer; both the CPU time (user and system, every thread) they
spent in the timed part.

The tests: ``stream`` (one client writes ``count`` messages, the server
reads them), ``tls`` (the same over TLS), ``rtt`` (request, answer, again)
and ``fanin`` (:mod:`comparison.fanin`).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from .fanin import FAN_IN, FAN_IN_BURST, serve_fanin
from .peers import BATCH, Endpoint, StockingsEnd, client_endpoint, server_endpoint

__all__ = ["BATCH_BYTES", "CORRUPT_ENV", "child_main", "payload_of"]

#: Set in the environment, the client changes one byte of its last message:
#: the benchmark's own tests check that such a run fails.
CORRUPT_ENV = "STOCKINGS_BENCH_CORRUPT"

#: Roughly how many bytes one ``write_many`` call of the batch runs carries.
BATCH_BYTES = 256 * 1024


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _status_bytes(field: str) -> int | None:
    """A size from ``/proc/self/status`` (``VmRSS``, ``VmHWM``), or ``None`` off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _idle_rss_bytes() -> int:
    """The resident size now, with the peak reset to it where the system allows.

    Importing and setting up can leave a peak higher than anything the run
    reaches, which would hide the run's own growth: on Linux, writing 5 to
    ``clear_refs`` starts the peak (``VmHWM``) afresh from here.
    """
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return _maxrss_bytes()
    rss = _status_bytes("VmRSS")
    return _maxrss_bytes() if rss is None else rss


def _maxrss_bytes() -> int:
    """The peak resident size: since the last reset on Linux, else since the start."""
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return rss if sys.platform == "darwin" else rss * 1024


def payload_of(size: int) -> bytes:
    """The message every run of ``size`` bytes sends: not all alike, so a shift shows."""
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def _received(recv: Callable[[], Any]) -> Any:
    """One message from ``recv``, outside the timed loops, which test for the end inline."""
    message = recv()
    if message is None:
        raise EOFError("the peer has gone")
    return message


def _serve(system: str, test: str, size: int, count: int) -> dict[str, Any]:
    if test == "fanin":
        idle = _idle_rss_bytes()
        report = serve_fanin(system, count, payload_of(size), _cpu_seconds)
        report.update(idle_rss=idle, peak_rss=_maxrss_bytes())
        return report
    steps = server_endpoint(system, size)
    port = next(steps)
    print(json.dumps({"port": port}), flush=True)
    end: Endpoint = next(steps)
    recv, send, flush = end.recv, end.send, end.flush
    # Warm-up: one round trip, so both ends are fully set up before timing.
    send(bytes(_received(recv)))
    flush()
    # Compared as a bytearray: its comparison takes any buffer at memcmp speed.
    expected = bytearray(payload_of(size))
    idle = _idle_rss_bytes()
    cpu = _cpu_seconds()
    received = total = bad = 0
    if test == "stream" and isinstance(end, StockingsEnd) and system == BATCH:
        read_all = end.stocking.read_all
        while received < count:
            messages = read_all(None)
            if not messages:
                raise EOFError("the stocking ended")
            for message in messages:
                total += len(message)
                if expected != message:
                    bad += 1
            received += len(messages)
        send(f"{received} {total} {bad}".encode())
    elif test in ("stream", "tls"):
        while received < count:
            message = recv()
            if message is None:
                raise EOFError("the peer has gone")
            total += len(message)
            if expected != message:
                bad += 1
            received += 1
        send(f"{received} {total} {bad}".encode())
    else:
        while received < count:
            message = recv()
            if message is None:
                raise EOFError("the peer has gone")
            total += len(message)
            if expected != message:
                bad += 1
            received += 1
            send(message)
            flush()
    flush()
    cpu = _cpu_seconds() - cpu
    _received(recv)  # the client's goodbye: it has all it needs, closing cannot lose data
    end.close()
    return {
        "received": received,
        "bytes": total,
        "bad": bad,
        "idle_rss": idle,
        "peak_rss": _maxrss_bytes(),
        "cpu": cpu,
    }


def _last(payload: bytes) -> bytes:
    """The last message of a run: the payload, unless a test asked to corrupt it."""
    if not os.environ.get(CORRUPT_ENV) or not payload:
        return payload
    return payload[:-1] + bytes([payload[-1] ^ 1])


def _fanin_client(system: str, size: int, count: int, port: int) -> dict[str, Any]:
    ends = [client_endpoint(system, port, size, kind="dealer") for _ in range(FAN_IN)]
    payload = payload_of(size)
    for end in ends:
        end.send(b"warm-up")
        end.flush()
    for end in ends:
        _received(end.recv)
    idle = _idle_rss_bytes()
    cpu = _cpu_seconds()
    sends = [end.send for end in ends]
    clock = time.perf_counter
    rounds, rest = divmod(count, FAN_IN * FAN_IN_BURST)
    started = clock()
    for _ in range(rounds):
        for send in sends:
            for _ in range(FAN_IN_BURST):
                send(payload)
    for i in range(rest):
        sends[i % FAN_IN](payload)
    for end in ends:
        end.flush()
    answers = {bytes(_received(end.recv)).decode() for end in ends}
    seconds = clock() - started
    cpu = _cpu_seconds() - cpu
    for end in ends:
        end.send(b"bye")
        end.flush()
    for end in ends:
        end.close()
    got = answers.pop() if len(answers) == 1 else f"different answers: {sorted(answers)}"
    return {
        "seconds": seconds,
        "answer": got,
        "idle_rss": idle,
        "peak_rss": _maxrss_bytes(),
        "cpu": cpu,
    }


def _client(system: str, test: str, size: int, count: int, port: int) -> dict[str, Any]:
    if test == "fanin":
        return _fanin_client(system, size, count, port)
    end = client_endpoint(system, port, size)
    recv, send, flush = end.recv, end.send, end.flush
    payload = payload_of(size)
    send(b"warm-up")
    flush()
    _received(recv)
    idle = _idle_rss_bytes()
    cpu = _cpu_seconds()
    clock = time.perf_counter
    if test == "stream" and isinstance(end, StockingsEnd) and system == BATCH:
        per_call = max(1, BATCH_BYTES // max(1, size))
        batch = [payload] * per_call
        write_many = end.stocking.write_many
        started = clock()
        left = count
        while left >= per_call:
            write_many(batch)
            left -= per_call
        write_many(batch[:left])
        answer = bytes(_received(recv))
        seconds = clock() - started
        got = answer.decode()
    elif test in ("stream", "tls"):
        started = clock()
        for _ in range(count - 1):
            send(payload)
        send(_last(payload))
        flush()
        answer = bytes(_received(recv))
        seconds = clock() - started
        got = answer.decode()
    else:
        echoed = bad = 0
        expected = bytearray(payload)
        last = _last(payload)
        started = clock()
        for i in range(count):
            send(payload if i < count - 1 else last)
            flush()
            message = recv()
            if message is None:
                raise EOFError("the peer has gone")
            echoed += len(message)
            if expected != message:
                bad += 1
        seconds = clock() - started
        got = f"{count} {echoed} {bad}"
    cpu = _cpu_seconds() - cpu
    send(b"bye")
    flush()
    end.close()
    return {
        "seconds": seconds,
        "answer": got,
        "idle_rss": idle,
        "peak_rss": _maxrss_bytes(),
        "cpu": cpu,
    }


def child_main(argv: Sequence[str]) -> None:
    """Run one side of one measurement and print its report as one JSON line.

    Args:
        argv: ``serve SYSTEM TEST SIZE COUNT`` or
            ``client SYSTEM TEST SIZE COUNT PORT``.

    Raises:
        EOFError: the peer went away before the run was done.
        ValueError: an unknown system, or a malformed number.
    """
    role, system, test, size, count = argv[:5]
    if role == "serve":
        report = _serve(system, test, int(size), int(count))
    else:
        report = _client(system, test, int(size), int(count), int(argv[5]))
    print(json.dumps(report), flush=True)
