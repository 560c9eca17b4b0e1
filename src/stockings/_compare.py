"""The comparison benchmark: stockings against its peers, in one run, one table.

Each measurement runs a server and a client in two fresh child processes
talking over TCP loopback, so that each reports its own peak memory
(``ru_maxrss``) for that run alone; this process only orchestrates, checks
and prints. Every system must deliver every message: the server counts
messages and bytes and answers with the counts, and a run whose counts are
wrong is reported as failed, never as a number.

Systems:

- ``stockings``: this library, ``write`` / ``read(timeout=None)``.
- ``raw``: a hand-written framed socket (4-byte length, writes batched into
  one ``sendall``, ``recv_into`` a large buffer): the practical limit.
- ``mpc``: :mod:`multiprocessing.connection`, ``send_bytes`` / ``recv_bytes``.
- ``zmq``: pyzmq ``PAIR`` sockets, ``copy=False`` for messages of 64 KiB and up.
- ``stockings-1.2.3``: the last release from PyPI, installed on demand with
  ``pip install --no-deps --target`` into a cache directory and run from it
  (its ``Stockings`` package would clash with our compatibility module).
  Its runs are smaller: it deadlocks on bursts of large messages.

Measures: ``stream`` (N messages of S bytes one by one, then one answer) and
``rtt`` (16-byte request/response round trips).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SIZES", "SYSTEMS", "Result", "main", "run_compare"]

#: The systems compared, in table order; ``stockings`` is the one measured.
SYSTEMS = ("stockings", "raw", "mpc", "zmq", "stockings-1.2.3", "stockings-batch")
OLD = "stockings-1.2.3"
#: stockings again, through its batch calls (``write_many`` / ``read_all``):
#: not a peer, shown beside the one-message calls the targets are about.
BATCH = "stockings-batch"
#: Roughly how many bytes one ``write_many`` call of the batch runs carries.
BATCH_BYTES = 256 * 1024
#: The stream sizes the batch calls are measured at (where they can help).
BATCH_SIZES = (16, 100, 4096)
#: Stream message sizes in bytes.
SIZES = (16, 100, 4096, 65536, 1048576)
RTT_SIZE = 16
#: Messages this large go to pyzmq with ``copy=False``.
ZMQ_NOCOPY = 65536
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

_LEN = struct.Struct("!I")
_RAW_BATCH = 64 * 1024
_RAW_LARGE = 64 * 1024
_RAW_BUFFER = 256 * 1024


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _maxrss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return rss if sys.platform == "darwin" else rss * 1024


# --------------------------------------------------------------------- peers
#
# Each peer is a pair of plain functions with one shape: ``send(bytes)``,
# ``recv() -> bytes-like`` (blocking), ``close()``. The drivers below use only
# those, so every system runs the very same loop.


class _Endpoint:
    send: Callable[[bytes], None]
    recv: Callable[[], Any]
    flush: Callable[[], None]

    def __init__(self) -> None:
        self.flush = _nothing

    def close(self) -> None:
        """Release the connection."""


def _nothing() -> None:
    return None


def _connect_tcp(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _listen_tcp() -> tuple[socket.socket, int]:
    listener = socket.create_server(("127.0.0.1", 0))
    return listener, listener.getsockname()[1]


def _accept(listener: socket.socket) -> socket.socket:
    sock, _ = listener.accept()
    listener.close()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _StockingsEnd(_Endpoint):
    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        from stockings import Stocking

        self.stocking = Stocking(sock)
        self.send = self.stocking.write
        read = self.stocking.read

        def recv() -> Any:
            message = read(None)
            if message is None:
                raise EOFError("the stocking ended")
            return message

        self.recv = recv

    def close(self) -> None:
        self.stocking.close()


class _RawEnd(_Endpoint):
    """A framed socket written by hand: the practical limit of the loopback."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self.batch = bytearray()
        self.buffer = bytearray(_RAW_BUFFER)
        self.view = memoryview(self.buffer)
        self.start = self.end = 0
        self.send = self._send
        self.flush = self._flush
        self.recv = self._recv

    def _send(self, payload: bytes) -> None:
        if len(payload) >= _RAW_LARGE:
            self._flush()
            self.sock.sendall(_LEN.pack(len(payload)))
            self.sock.sendall(payload)
            return
        batch = self.batch
        batch += _LEN.pack(len(payload))
        batch += payload
        if len(batch) >= _RAW_BATCH:
            self.sock.sendall(batch)
            batch.clear()

    def _flush(self) -> None:
        if self.batch:
            self.sock.sendall(self.batch)
            self.batch.clear()

    def _fill(self) -> None:
        """Receive more into the buffer, moving a partial message to its front."""
        if self.start:
            left = self.end - self.start
            self.buffer[:left] = self.view[self.start : self.end]
            self.start, self.end = 0, left
        received = self.sock.recv_into(self.view[self.end :])
        if not received:
            raise EOFError("peer closed")
        self.end += received

    def _recv(self) -> Any:
        while self.end - self.start < 4:
            self._fill()
        (length,) = _LEN.unpack_from(self.buffer, self.start)
        begin = self.start + 4
        stop = begin + length
        if stop <= self.end:
            self.start = stop
            return bytes(self.view[begin:stop])
        if length + 4 <= _RAW_BUFFER and length < _RAW_LARGE:
            while self.end < stop:
                self._fill()
                begin, stop = self.start + 4, self.start + 4 + length
            self.start = stop
            return bytes(self.view[begin:stop])
        # A large payload: receive its rest straight into its own buffer.
        message = bytearray(length)
        have = self.end - begin
        message[:have] = self.view[begin : self.end]
        self.start = self.end = 0
        view = memoryview(message)
        while have < length:
            received = self.sock.recv_into(view[have:])
            if not received:
                raise EOFError("peer closed")
            have += received
        return message

    def close(self) -> None:
        self._flush()
        self.sock.close()


class _MpcEnd(_Endpoint):
    def __init__(self, conn: Any) -> None:
        super().__init__()
        self.conn = conn
        self.send = conn.send_bytes
        self.recv = conn.recv_bytes

    def close(self) -> None:
        self.conn.close()


class _ZmqEnd(_Endpoint):
    def __init__(self, zsock: Any, context: Any, size: int) -> None:
        super().__init__()
        self.zsock = zsock
        self.context = context
        copy = size < ZMQ_NOCOPY
        zsend, zrecv = zsock.send, zsock.recv

        def send(payload: bytes) -> None:
            zsend(payload, copy=copy)

        def recv() -> Any:
            return zrecv(copy=copy)

        self.send = send
        self.recv = recv

    def close(self) -> None:
        self.zsock.close(linger=1000)
        self.context.term()


class _OldEnd(_Endpoint):
    """Stockings 1.2.3: ``read()`` never blocks, so wait on its ``fileno()``."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        import Stockings  # the 1.2.3 package, first on sys.path in this child

        self.stocking = Stockings.Stocking(sock)
        deadline = time.monotonic() + 10
        while not self.stocking.handshakeComplete:
            if time.monotonic() > deadline:
                raise RuntimeError("1.2.3 handshake did not complete")
            time.sleep(0.001)  # 1.2.3 offers nothing to wait on
        self.send = self.stocking.write
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.stocking.fileno(), selectors.EVENT_READ)
        read = self.stocking.read
        select = self.selector.select

        def recv() -> Any:
            while True:
                message = read()
                if message is not None:
                    return message
                if not self.stocking.active:
                    raise EOFError("1.2.3 stocking ended")
                select(RUN_TIMEOUT)

        self.recv = recv

    def close(self) -> None:
        # 1.2.3 drops what is queued when closed: let its thread send it first.
        deadline = time.monotonic() + 10
        while self.stocking.active and time.monotonic() < deadline:
            try:
                if not self.stocking.writeDataQueued():
                    break
            except OSError:  # its thread ended and closed its pipes
                break
            time.sleep(0.001)
        self.selector.close()
        self.stocking.close()


def _server_endpoint(system: str, size: int) -> Iterator[Any]:
    """Yield the port to announce, then the connected endpoint."""
    if system == "mpc":
        from multiprocessing.connection import Listener

        with Listener(("127.0.0.1", 0)) as mpc_listener:
            yield mpc_listener.address[1]
            yield _MpcEnd(mpc_listener.accept())
    elif system == "zmq":
        import zmq

        context = zmq.Context()
        zsock = context.socket(zmq.PAIR)
        yield zsock.bind_to_random_port("tcp://127.0.0.1")
        yield _ZmqEnd(zsock, context, size)
    else:
        listener, port = _listen_tcp()
        yield port
        sock = _accept(listener)
        if system == "raw":
            yield _RawEnd(sock)
        elif system == OLD:
            yield _OldEnd(sock)
        elif system in ("stockings", BATCH):
            yield _StockingsEnd(sock)
        else:
            raise ValueError(f"unknown system {system!r}")


def _client_endpoint(system: str, port: int, size: int) -> _Endpoint:
    if system == "mpc":
        from multiprocessing.connection import Client

        return _MpcEnd(Client(("127.0.0.1", port)))
    if system == "zmq":
        import zmq

        context = zmq.Context()
        zsock = context.socket(zmq.PAIR)
        zsock.connect(f"tcp://127.0.0.1:{port}")
        return _ZmqEnd(zsock, context, size)
    sock = _connect_tcp(port)
    if system == "raw":
        return _RawEnd(sock)
    if system == OLD:
        return _OldEnd(sock)
    if system in ("stockings", BATCH):
        return _StockingsEnd(sock)
    raise ValueError(f"unknown system {system!r}")


# ------------------------------------------------------------------- drivers


def _serve(system: str, test: str, size: int, count: int) -> dict[str, Any]:
    steps = _server_endpoint(system, size)
    port = next(steps)
    print(json.dumps({"port": port}), flush=True)
    end: _Endpoint = next(steps)
    recv, send, flush = end.recv, end.send, end.flush
    # Warm-up: one round trip, so both ends are fully set up before timing.
    send(bytes(recv()))
    flush()
    idle = _maxrss_bytes()
    cpu = _cpu_seconds()
    received = 0
    total = 0
    if test == "stream" and isinstance(end, _StockingsEnd) and system == BATCH:
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
    end = _client_endpoint(system, port, size)
    recv, send, flush = end.recv, end.send, end.flush
    payload = b"x" * size
    send(b"warm-up")
    flush()
    recv()
    idle = _maxrss_bytes()
    cpu = _cpu_seconds()
    clock = time.perf_counter
    if test == "stream" and isinstance(end, _StockingsEnd) and system == BATCH:
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


def _child_main(argv: Sequence[str]) -> None:
    role, system, test, size, count = argv[:5]
    if role == "serve":
        report = _serve(system, test, int(size), int(count))
    else:
        report = _client(system, test, int(size), int(count), int(argv[5]))
    print(json.dumps(report), flush=True)


# -------------------------------------------------------------- orchestrator


@dataclass
class Result:
    """One measurement of one system: a rate or a round trip, and memory."""

    system: str
    test: str
    size: int
    count: int
    seconds: float = 0.0
    client_rss: int = 0
    server_rss: int = 0
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the run delivered every message."""
        return not self.error

    @property
    def rate(self) -> float:
        """Messages per second (stream)."""
        return self.count / self.seconds if self.seconds else 0.0

    @property
    def mbps(self) -> float:
        """Payload megabytes (10**6) per second (stream)."""
        return self.rate * self.size / 1e6

    @property
    def rtt_us(self) -> float:
        """Mean round trip in microseconds (rtt)."""
        return self.seconds / self.count * 1e6 if self.count else 0.0


def _child_command(system: str, cache: Path) -> list[str]:
    here = str(Path(__file__).resolve().parent.parent)
    paths = [here]
    if system == OLD:
        # 1.2.3 first on the path, so ``import Stockings`` finds it, not ours.
        paths.insert(0, str(_old_target(cache).resolve()))
    code = (
        f"import sys; sys.path[:0] = {paths!r}; "
        "from stockings._compare import _child_main; _child_main(sys.argv[1:])"
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
                sizes, rtt_count = _counts(system, quick, scale)
                count = sizes[size] if test == "stream" else rtt_count
                result = run_one(system, test, size, count, cache)
                if progress is not None:
                    progress(_describe(result))
                key = (system, test, size)
                best = results.get(key)
                if best is None or not best.ok or (result.ok and result.seconds < best.seconds):
                    results[key] = result
    return results, unavailable


# ------------------------------------------------------------------- report


def _describe(result: Result) -> str:
    what = f"{result.system:16} {result.test:6} {_size_name(result.size):>6} x{result.count}"
    if not result.ok:
        return f"{what}: FAILED: {result.error}"
    if result.test == "rtt":
        return f"{what}: {result.rtt_us:.1f} us"
    return f"{what}: {result.rate:,.0f} msg/s {result.mbps:,.1f} MB/s"


def _size_name(size: int) -> str:
    if size >= 1 << 20:
        return f"{size >> 20} MiB"
    if size >= 1024:
        return f"{size >> 10} KiB"
    return f"{size} B"


def _mib(value: int) -> str:
    return f"{value / (1 << 20):.0f}"


def format_table(results: dict[tuple[str, str, int], Result], unavailable: dict[str, str]) -> str:
    """The results as a Markdown table, with stockings' ratio to every peer."""
    systems = [s for s in SYSTEMS if any(k[0] == s for k in results)]
    peers = [s for s in systems if s not in ("stockings", BATCH)]
    head = ["measure", *systems, *(f"x {p}" for p in peers)]
    rows = [head, ["---"] * len(head)]

    def cell(system: str, test: str, size: int, value: Callable[[Result], float]) -> str:
        r = results.get((system, test, size))
        if r is None:
            return "n/a"
        return f"{value(r):,.0f}" if r.ok else "failed"

    def ratio(peer: str, test: str, size: int, value: Callable[[Result], float]) -> str:
        ours, theirs = results.get(("stockings", test, size)), results.get((peer, test, size))
        if ours is None or theirs is None or not ours.ok or not theirs.ok:
            return "n/a"
        if not value(theirs):
            return "n/a"
        return f"{value(ours) / value(theirs):.2f}"

    def rate(r: Result) -> float:
        return r.rate

    def mbps(r: Result) -> float:
        return r.mbps

    def rtt(r: Result) -> float:
        return r.rtt_us

    for size in SIZES:
        for label, value in (("msg/s", rate), ("MB/s", mbps)):
            if label == "MB/s" and size < 4096:
                continue
            name = f"stream {_size_name(size)}, {label}"
            rows.append(
                [name]
                + [cell(s, "stream", size, value) for s in systems]
                + [ratio(p, "stream", size, value) for p in peers]
            )
    rows.append(
        [f"rtt {RTT_SIZE} B, us"]
        + [cell(s, "rtt", RTT_SIZE, rtt) for s in systems]
        + [ratio(p, "rtt", RTT_SIZE, rtt) for p in peers]
    )
    big = SIZES[-1]
    rows.append(
        [f"peak MiB above idle, {_size_name(big)} stream (client/server)"]
        + [_rss_cell(results.get((s, "stream", big))) for s in systems]
        + [""] * len(peers)
    )
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")
    for system in ("stockings", OLD):
        counts = ", ".join(
            f"{_size_name(size)} x{results[(system, 'stream', size)].count}"
            for size in SIZES
            if (system, "stream", size) in results
        )
        rtt_run = results.get((system, "rtt", RTT_SIZE))
        if rtt_run is not None:
            counts += f"; rtt x{rtt_run.count}"
        if counts:
            who = "every system but 1.2.3" if system == "stockings" else "1.2.3 (slower, so fewer)"
            lines.append(f"Messages per run, {who}: {counts}.")
    lines.append("Ratios are stockings / peer: above 1 is better for rates, below 1 for rtt.")
    gains = []
    for size in SIZES:
        ours, batched = (
            results.get(("stockings", "stream", size)),
            results.get((BATCH, "stream", size)),
        )
        if ours is not None and batched is not None and ours.ok and batched.ok and ours.rate:
            gains.append(f"{_size_name(size)} {batched.rate / ours.rate:.2f}")
    if gains:
        lines.append(
            f"{BATCH} (write_many/read_all) against the one-message calls: {', '.join(gains)}."
        )
    for system, why in unavailable.items():
        lines.append(f"{system}: unavailable: {why}")
    for r in results.values():
        if not r.ok:
            lines.append(f"{r.system} {r.test} {_size_name(r.size)}: failed: {r.error}")
    return "\n".join(lines)


def _rss_cell(result: Result | None) -> str:
    if result is None or not result.ok:
        return "n/a"
    return f"{_mib(result.client_rss)} / {_mib(result.server_rss)}"


def check_targets(results: dict[tuple[str, str, int], Result]) -> list[str]:
    """One line per target of the performance issue: met or not, and by how much."""

    def get(system: str, test: str, size: int) -> Result | None:
        r = results.get((system, test, size))
        return r if r is not None and r.ok else None

    lines = []

    def compare(
        label: str, ours: float | None, theirs: float | None, goal: float, hi: bool
    ) -> None:
        if ours is None or theirs is None or not theirs:
            lines.append(f"- {label}: not measured")
            return
        value = ours / theirs
        met = value >= goal if hi else value <= goal
        sign = ">=" if hi else "<="
        verdict = "met" if met else "NOT met"
        lines.append(f"- {label}: {value:.2f} (target {sign} {goal}): {verdict}")

    def rate_of(system: str, size: int) -> float | None:
        r = get(system, "stream", size)
        return r.rate if r else None

    def rtt_of(system: str) -> float | None:
        r = get(system, "rtt", RTT_SIZE)
        return r.rtt_us if r else None

    ours100 = rate_of("stockings", 100)
    compare("100 B msg/s vs zmq", ours100, rate_of("zmq", 100), 1.0, True)
    compare("100 B msg/s vs mpc", ours100, rate_of("mpc", 100), 2.0, True)
    compare("100 B msg/s vs 1.2.3", ours100, rate_of(OLD, 100), 10.0, True)
    compare("16 B msg/s vs zmq", rate_of("stockings", 16), rate_of("zmq", 16), 1.0, True)
    compare("1 MiB MB/s vs raw", rate_of("stockings", 1 << 20), rate_of("raw", 1 << 20), 0.8, True)
    compare("16 B rtt vs mpc", rtt_of("stockings"), rtt_of("mpc"), 1.0, False)
    compare("16 B rtt vs zmq", rtt_of("stockings"), rtt_of("zmq"), 0.7, False)
    big = get("stockings", "stream", 1 << 20)
    if big is None:
        lines.append("- memory: not measured")
    else:
        worst = max(big.client_rss, big.server_rss)
        sent = big.count * big.size
        verdict = "met" if worst < 64 << 20 else "NOT met"
        lines.append(
            f"- memory, {sent >> 20} MiB as 1 MiB messages: worst side {_mib(worst)} MiB"
            f" above idle (target < 64): {verdict}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison and print the table; ``python -m stockings._compare``.

    Returns:
        0 when every run delivered every message, 1 otherwise.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("serve", "client"):
        _child_main(args)
        return 0
    parser = argparse.ArgumentParser(
        prog="stockings bench --compare",
        description="Compare stockings with a raw socket, multiprocessing.connection, "
        "pyzmq and Stockings 1.2.3 over TCP loopback.",
    )
    add_arguments(parser)
    options = parser.parse_args(args)
    return run_from_options(options)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the comparison's options to ``parser`` (shared with the ``bench`` command)."""
    parser.add_argument("--quick", action="store_true", help="smaller runs (under 2 minutes)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="runs per measure, best kept (default 1 quick, 3 full)",
    )
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated subset of {','.join(SYSTEMS)}",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("STOCKINGS_BENCH_CACHE", ".bench")),
        help="where Stockings 1.2.3 is installed on demand (default ./.bench)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write raw results here")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every message count (default 1)"
    )


def run_from_options(options: argparse.Namespace) -> int:
    """Run the comparison the parsed options describe; print progress and the table."""
    systems = [s.strip() for s in options.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        print(f"unknown systems: {', '.join(unknown)}", file=sys.stderr)
        return 2
    if "stockings" not in systems:
        systems.insert(0, "stockings")
    repeat = options.repeat or (1 if options.quick else 3)
    started = time.monotonic()
    results, unavailable = run_compare(
        systems,
        quick=options.quick,
        repeat=repeat,
        cache=options.cache,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        scale=options.scale,
    )
    print(format_table(results, unavailable))
    print()
    print("\n".join(check_targets(results)))
    print(f"\n({time.monotonic() - started:.0f} s, best of {repeat}, {os.cpu_count()} CPUs)")
    if options.json is not None:
        options.json.write_text(json.dumps([r.__dict__ for r in results.values()], indent=1) + "\n")
    return 0 if all(r.ok for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
