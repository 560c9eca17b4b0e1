"""The child-process side of the comparison benchmark: one server or one client.

Each measurement runs :func:`child_main` in two fresh interpreters, one
serving and one driving, so that each reports its own peak memory for that
run alone. Both print one line of JSON for the parent: the server its counts
of messages and bytes, the client its time and the server's answer.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Sequence
from typing import Any

from ._compare_peers import BATCH, Endpoint, StockingsEnd, client_endpoint, server_endpoint

__all__ = ["BATCH_BYTES", "child_main"]

#: Roughly how many bytes one ``write_many`` call of the batch runs carries.
BATCH_BYTES = 256 * 1024


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _maxrss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return rss if sys.platform == "darwin" else rss * 1024


def _serve(system: str, test: str, size: int, count: int) -> dict[str, Any]:
    steps = server_endpoint(system, size)
    port = next(steps)
    print(json.dumps({"port": port}), flush=True)
    end: Endpoint = next(steps)
    recv, send, flush = end.recv, end.send, end.flush
    # Warm-up: one round trip, so both ends are fully set up before timing.
    send(bytes(recv()))
    flush()
    idle = _maxrss_bytes()
    cpu = _cpu_seconds()
    received = 0
    total = 0
    if test == "stream" and isinstance(end, StockingsEnd) and system == BATCH:
        read_all = end.stocking.read_all
        while received < count:
            messages = read_all(None)
            if not messages:
                raise EOFError("the stocking ended")
            total += sum(map(len, messages))
            received += len(messages)
        send(f"{received} {total}".encode())
    elif test == "stream":
        while received < count:
            total += len(recv())
            received += 1
        send(f"{received} {total}".encode())
    else:
        while received < count:
            message = recv()
            total += len(message)
            received += 1
            send(message)
            flush()
    flush()
    recv()  # the client's goodbye: it has all it needs, closing cannot lose data
    end.close()
    return {
        "received": received,
        "bytes": total,
        "idle_rss": idle,
        "peak_rss": _maxrss_bytes(),
        "cpu": _cpu_seconds() - cpu,
    }


def _client(system: str, test: str, size: int, count: int, port: int) -> dict[str, Any]:
    end = client_endpoint(system, port, size)
    recv, send, flush = end.recv, end.send, end.flush
    payload = b"x" * size
    send(b"warm-up")
    flush()
    recv()
    idle = _maxrss_bytes()
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
        answer = bytes(recv())
        seconds = clock() - started
        got = answer.decode()
    elif test == "stream":
        started = clock()
        for _ in range(count):
            send(payload)
        flush()
        answer = bytes(recv())
        seconds = clock() - started
        got = answer.decode()
    else:
        echoed = 0
        started = clock()
        for _ in range(count):
            send(payload)
            flush()
            echoed += len(recv())
        seconds = clock() - started
        got = f"{count} {echoed}"
    send(b"bye")
    flush()
    end.close()
    return {
        "seconds": seconds,
        "answer": got,
        "idle_rss": idle,
        "peak_rss": _maxrss_bytes(),
        "cpu": _cpu_seconds() - cpu,
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
