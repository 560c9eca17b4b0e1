"""Scale benchmark: thousands of client stockings against an echo server.

Runs an echo server in one process and N client stockings in another (both
children of this script), then reports how long connecting took, how long
one echo round for all N took, the threads and descriptors each process
holds, and memory per connection. Then does the same with Stockings 1.2.3
(installed with ``pip install --no-deps --target .stockings123
stockings==1.2.3``) at growing counts, up to the largest it survives.

    python benchmarks/scale.py                 # 10,000 connections, and 1.2.3
    python benchmarks/scale.py --count 2000 --no-compare

Targets (issue 5): 10,000 connections, at most 4 threads in the server
process, at most 10 KiB per idle stocking, every echo back within 10 s.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
OLD_TARGET = ROOT / ".stockings123"
RUN_TIMEOUT = 300.0


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard limit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def process_stats() -> dict[str, int]:
    """Threads (from the kernel's view), descriptors and resident memory of this process."""
    rss_kib = 0
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
    return {
        "threads": len(os.listdir("/proc/self/task")),
        "fds": len(os.listdir("/proc/self/fd")),
        "rss_kib": rss_kib,
    }


# ------------------------------------------------------------------ servers


def serve_ours() -> None:
    """An echo server on one hub thread; the main thread runs the Waiter loop."""
    import stockings

    raise_fd_limit()
    server = stockings.Server(("127.0.0.1", 0))
    baseline = process_stats()
    print(f"PORT {server.address[1]}", flush=True)
    waiter = stockings.Waiter([server])
    clients = 0
    while True:
        for ready in waiter.wait():
            if ready is server:
                while (stocking := server.accept(timeout=0)) is not None:
                    waiter.add(stocking)
                    clients += 1
                continue
            while (message := ready.read()) is not None:
                if message == "stats?":
                    stats = process_stats()
                    stats.update(baseline_rss_kib=baseline["rss_kib"], clients=clients)
                    ready.write(json.dumps(stats))
                elif message == "quit":
                    waiter.close()
                    server.close()
                    return
                else:
                    ready.write(message)
            if ready.ended:
                waiter.discard(ready)
                ready.close()


def serve_old() -> None:
    """The same echo server with Stockings 1.2.3: a thread and four pipe ends per client."""
    import Stockings

    raise_fd_limit()
    listener = socket.create_server(("127.0.0.1", 0), backlog=socket.SOMAXCONN)
    listener.setblocking(False)
    baseline = process_stats()
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    clients = 0
    while True:
        for key, _ in selector.select():
            if key.data is None:
                while True:
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        break
                    stocking = Stockings.Stocking(conn)
                    selector.register(stocking.fileno(), selectors.EVENT_READ, stocking)
                    clients += 1
                continue
            stocking = key.data
            try:
                message = stocking.read()
            except Stockings.NotReady:
                continue
            if message is None:
                if not stocking.active:
                    selector.unregister(key.fd)
                continue
            if message == "stats?":
                stats = process_stats()
                stats.update(baseline_rss_kib=baseline["rss_kib"], clients=clients)
                stocking.write(json.dumps(stats))
            elif message == "quit":
                return
            else:
                stocking.write(message)


# ------------------------------------------------------------------ clients


def clients_ours(port: int, count: int) -> dict[str, Any]:
    """Connect ``count`` stockings, echo one message on each, measure."""
    import stockings

    raise_fd_limit()
    gc.collect()
    base = process_stats()
    start = time.perf_counter()
    clients = [stockings.connect(("127.0.0.1", port), timeout=30) for _ in range(count)]
    connect_s = time.perf_counter() - start
    gc.collect()
    idle = process_stats()

    expected = {id(c): f"echo {i}" for i, c in enumerate(clients)}
    waiter = stockings.Waiter(clients)
    start = time.perf_counter()
    for client in clients:
        client.write(expected[id(client)])
    echoed = 0
    while echoed < count:
        ready = waiter.wait(timeout=30)
        if not ready:
            break
        for client in ready:
            while (message := client.read()) is not None:
                if message != expected[id(client)]:
                    raise AssertionError(f"wrong echo {message!r}")
                echoed += 1
            if client.ended:
                raise AssertionError(f"{client} ended: {client.end_reason}")
    echo_s = time.perf_counter() - start
    waiter.close()
    busy = process_stats()

    clients[0].write("stats?")
    server = json.loads(clients[0].read(timeout=30))
    start = time.perf_counter()
    for client in clients[1:]:
        client.close()
    close_s = time.perf_counter() - start
    clients[0].write("quit")
    clients[0].close()
    return _result(count, echoed, connect_s, echo_s, close_s, busy, idle, base, server)


def clients_old(port: int, count: int) -> dict[str, Any]:
    """The same with Stockings 1.2.3."""
    import Stockings

    raise_fd_limit()
    gc.collect()
    base = process_stats()
    start = time.perf_counter()
    clients = [
        Stockings.Stocking(socket.create_connection(("127.0.0.1", port), timeout=30))
        for _ in range(count)
    ]
    deadline = time.monotonic() + 60
    for client in clients:
        while not client.handshakeComplete:
            if time.monotonic() > deadline:
                raise AssertionError("handshakes did not complete")
            time.sleep(0.001)
    connect_s = time.perf_counter() - start
    gc.collect()
    idle = process_stats()

    expected = {c.fileno(): f"echo {i}" for i, c in enumerate(clients)}
    selector = selectors.DefaultSelector()
    for client in clients:
        selector.register(client.fileno(), selectors.EVENT_READ, client)
    start = time.perf_counter()
    for client in clients:
        client.write(expected[client.fileno()])
    echoed = 0
    while echoed < count:
        events = selector.select(30)
        if not events:
            break
        for key, _ in events:
            message = key.data.read()
            if message is None:
                continue
            if message != expected[key.fd]:
                raise AssertionError(f"wrong echo {message!r}")
            selector.unregister(key.fd)
            echoed += 1
    echo_s = time.perf_counter() - start
    busy = process_stats()

    clients[0].write("stats?")
    reply = None
    deadline = time.monotonic() + 30
    while reply is None and time.monotonic() < deadline:
        reply = clients[0].read()
        time.sleep(0.001)
    server = json.loads(reply) if reply else {}
    start = time.perf_counter()
    for client in clients[1:]:
        client.close()
    close_s = time.perf_counter() - start
    clients[0].write("quit")
    try:
        while clients[0].writeDataQueued():
            time.sleep(0.001)
    except OSError:
        pass  # the server already left, and 1.2.3 closed the pipes
    clients[0].close()
    return _result(count, echoed, connect_s, echo_s, close_s, busy, idle, base, server)


def _result(
    count: int,
    echoed: int,
    connect_s: float,
    echo_s: float,
    close_s: float,
    busy: dict[str, Any],
    idle: dict[str, Any],
    base: dict[str, Any],
    server: dict[str, Any],
) -> dict[str, Any]:
    """One run's numbers; a server that died early (1.2.3) reports no memory."""
    server_rss = server.get("rss_kib", 0) - server.get("baseline_rss_kib", 0)
    return {
        "count": count,
        "echoed": echoed,
        "connect_s": connect_s,
        "echo_s": echo_s,
        "close_s": close_s,
        "client": {**busy, "rss_per_conn_b": (idle["rss_kib"] - base["rss_kib"]) * 1024 / count},
        "server": {**server, "rss_per_conn_b": server_rss * 1024 / count},
    }


# ------------------------------------------------------------- orchestration


def _child_env(impl: str) -> dict[str, str]:
    env = dict(os.environ)
    if impl == "old":
        # 1.2.3's package is named like our compatibility module: put it first.
        env["PYTHONPATH"] = str(OLD_TARGET)
    return env


def run_pair(impl: str, count: int, timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
    """Run a server child and a client child; return the client's report."""
    me = [sys.executable, str(Path(__file__).resolve())]
    env = _child_env(impl)
    server = subprocess.Popen(
        [*me, "--role", f"server-{impl}"],
        stdout=subprocess.PIPE,
        # 1.2.3's threads die noisily when their peers leave; ours stay quiet.
        stderr=subprocess.DEVNULL if impl == "old" else None,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"server did not start: {line!r}")
        port = int(line.split()[1])
        client = subprocess.run(
            [*me, "--role", f"client-{impl}", "--port", str(port), "--count", str(count)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        if client.returncode:
            raise RuntimeError(client.stderr.strip().splitlines()[-1:] or "client failed")
        report: dict[str, Any] = json.loads(client.stdout)
        server.wait(timeout=60)
        return report
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def traced_bytes_per_idle_stocking(count: int = 2000) -> float:
    """Python heap per idle stocking (tracemalloc), socket pairs made beforehand."""
    import stockings

    raise_fd_limit()
    pairs = [socket.socketpair() for _ in range(count // 2)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    made = []
    for a, b in pairs:
        made.append(stockings.Stocking(a))
        made.append(stockings.Stocking(b))
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    for stocking in made:
        stocking.close()
    return (after - before) / len(made)


def _row(name: str, r: dict[str, Any]) -> str:
    c, s = r["client"], r["server"]
    return (
        f"| {name} | {r['count']:,} | {r['echoed']:,} | {r['connect_s']:.2f} | {r['echo_s']:.2f}"
        f" | {r['close_s']:.2f} | {s.get('threads', '?')} | {c['threads']}"
        f" | {s.get('fds', '?')} | {c['fds']}"
        f" | {s['rss_per_conn_b'] / 1024:.1f} | {c['rss_per_conn_b'] / 1024:.1f} |"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or one of its child roles) and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--no-compare", action="store_true", help="skip Stockings 1.2.3")
    parser.add_argument(
        "--old-counts",
        default="1000,2000,3000,3900",
        help="connection counts to try with 1.2.3, smallest first",
    )
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.role == "server-ours":
        serve_ours()
        return 0
    if args.role == "server-old":
        serve_old()
        return 0
    if args.role in ("client-ours", "client-old"):
        run = clients_ours if args.role == "client-ours" else clients_old
        print(json.dumps(run(args.port, args.count)))
        return 0

    raise_fd_limit()
    rows = []
    ours = run_pair("ours", args.count)
    rows.append(_row("stockings 2", ours))
    old_best: dict[str, Any] | None = None
    old_failure = ""
    if not args.no_compare:
        if not (OLD_TARGET / "Stockings").is_dir():
            old_failure = f"not installed in {OLD_TARGET}"
        for count in [int(n) for n in args.old_counts.split(",")] if not old_failure else []:
            try:
                report = run_pair("old", count, timeout=180)
            except Exception as exc:
                old_failure = f"failed at {count:,}: {exc}"
                break
            if report["echoed"] != count:
                old_failure = f"at {count:,} only {report['echoed']:,} echoes came back"
                break
            old_best = report
            rows.append(_row("stockings 1.2.3", report))
    traced = traced_bytes_per_idle_stocking()

    print(
        "| version | connections | echoed | connect s | echo round s | close s"
        " | server threads | client threads | server fds | client fds"
        " | server KiB/conn (RSS) | client KiB/conn (RSS) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(row)
    print(f"\nPython heap per idle stocking (tracemalloc, 2,000 stockings): {traced:,.0f} B")
    if old_failure:
        print(f"stockings 1.2.3: {old_failure}")
    elif old_best is not None:
        print(f"stockings 1.2.3 survived every count tried, up to {old_best['count']:,}")
    ok = (
        ours["echoed"] == args.count
        and ours["server"]["threads"] <= 4
        and ours["echo_s"] <= 10
        and traced <= 10 * 1024
    )
    print("targets:", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
