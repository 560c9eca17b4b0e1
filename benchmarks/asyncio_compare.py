"""The asyncio stocking beside asyncio streams, websockets and zmq.asyncio.

Each contender runs the same four workloads, its server in a process of
its own and its client in this one, over loopback:

- ``100 B stream``: one connection sends 100-byte messages as fast as it
  can; the server answers once it has them all;
- ``16 B round trip``: send 16 bytes, wait for them to come back, repeat;
- ``1 MiB stream``: as the first, with 1 MiB messages;
- ``fan-in x32``: 32 connections each stream 100-byte messages into one server.

Contenders:

- ``stockings``: ``stockings.asyncio`` (``await write``, ``async for``);
- ``streams``: ``asyncio.open_connection`` with a 4-byte length prefix,
  ``write`` + ``drain`` per message, ``readexactly`` to read;
- ``websockets``: its asyncio server and client (compression off);
- ``zmq``: ``zmq.asyncio`` DEALER sockets into one ROUTER.

Usage::

    python benchmarks/asyncio_compare.py [--scale 0.2] [--rounds 3] [--uvloop]
                                         [--only streams,zmq]

Within each round the contenders take turns at a workload, and the best
round counts. Prints messages per second per workload and contender, the ratios of
stockings to each other contender, and the targets: at least 2x streams on
the 100 B stream and on fan-in, at least 1.0x zmq.asyncio, and a round trip
no slower than streams'.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_LENGTH = struct.Struct("!I")
END = b"END"
ACK = b"ACK"
ROUND = b"R" * 16
FAN_IN = 32

WORKLOADS = ["100 B stream", "16 B round trip", "1 MiB stream", f"fan-in x{FAN_IN}"]
CONTENDERS = ["stockings", "streams", "websockets", "zmq"]


# --------------------------------------------------------------- servers
#
# Every server answers ROUND with itself, END with ACK, and takes anything
# else silently.


async def serve_stockings(ready: Callable[[int], None]) -> None:
    import stockings.asyncio as sa

    async def handler(stocking: sa.Stocking) -> None:
        async for message in stocking:
            if message in (ROUND, END):
                await stocking.write(ROUND if message == ROUND else ACK)

    async with sa.serve(handler, ("127.0.0.1", 0), max_message_size=None) as server:
        ready(server.address[1])
        await server.serve_forever()


async def serve_streams(ready: Callable[[int], None]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (size,) = _LENGTH.unpack(await reader.readexactly(4))
                message = await reader.readexactly(size)
                if message in (ROUND, END):
                    reply = ROUND if message == ROUND else ACK
                    writer.write(_LENGTH.pack(len(reply)) + reply)
                    await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    ready(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


async def serve_websockets(ready: Callable[[int], None]) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(websocket: ServerConnection) -> None:
        async for message in websocket:
            if message in (ROUND, END):
                await websocket.send(ROUND if message == ROUND else ACK)

    async with serve(handler, "127.0.0.1", 0, max_size=None, compression=None) as server:
        ready(next(iter(server.sockets)).getsockname()[1])
        await server.serve_forever()


async def serve_zmq(ready: Callable[[int], None]) -> None:
    import zmq
    import zmq.asyncio

    context = zmq.asyncio.Context()
    router = context.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    ready(port)
    while True:
        identity, message = await router.recv_multipart()
        if message in (ROUND, END):
            await router.send_multipart([identity, ROUND if message == ROUND else ACK])


SERVERS: dict[str, Callable[[Callable[[int], None]], Awaitable[None]]] = {
    "stockings": serve_stockings,
    "streams": serve_streams,
    "websockets": serve_websockets,
    "zmq": serve_zmq,
}


# --------------------------------------------------------------- clients
#
# A client is (send, receive, close) over one connection.

Client = tuple[Callable[[bytes], Awaitable[None]], Callable[[], Awaitable[Any]], Any]


async def client_stockings(port: int) -> Client:
    import stockings.asyncio as sa

    stocking = await sa.connect(("127.0.0.1", port), max_message_size=None)
    return stocking.write, stocking.read, stocking.close


async def client_streams(port: int) -> Client:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    pack = _LENGTH.pack

    async def send(message: bytes) -> None:
        writer.write(pack(len(message)) + message)
        await writer.drain()

    async def receive() -> bytes:
        (size,) = _LENGTH.unpack(await reader.readexactly(4))
        return await reader.readexactly(size)

    async def close() -> None:
        writer.close()
        await writer.wait_closed()

    return send, receive, close


async def client_websockets(port: int) -> Client:
    from websockets.asyncio.client import connect

    websocket = await connect(f"ws://127.0.0.1:{port}", max_size=None, compression=None)
    return websocket.send, websocket.recv, websocket.close


async def client_zmq(port: int) -> Client:
    import zmq
    import zmq.asyncio

    context = zmq.asyncio.Context.instance()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.SNDHWM, 0)
    dealer.connect(f"tcp://127.0.0.1:{port}")

    async def close() -> None:
        dealer.close(linger=0)

    return dealer.send, dealer.recv, close


CLIENTS: dict[str, Callable[[int], Awaitable[Client]]] = {
    "stockings": client_stockings,
    "streams": client_streams,
    "websockets": client_websockets,
    "zmq": client_zmq,
}


# --------------------------------------------------------------- workloads


async def stream(client: Client, size: int, count: int) -> None:
    send, receive, _ = client
    message = b"x" * size
    for _ in range(count):
        await send(message)
    await send(END)
    assert await receive() == ACK


async def round_trips(client: Client, count: int) -> None:
    send, receive, _ = client
    for _ in range(count):
        await send(ROUND)
        assert await receive() == ROUND


async def measure(kind: str, port: int, workload: str, scale: float) -> float:
    """Messages per second for one workload."""
    connect = CLIENTS[kind]
    if workload.startswith("fan-in"):
        clients = [await connect(port) for _ in range(FAN_IN)]
        each = max(1, int(20_000 * scale))
        await asyncio.gather(*(stream(c, 100, 10) for c in clients))  # warm up
        start = time.perf_counter()
        await asyncio.gather(*(stream(c, 100, each) for c in clients))
        elapsed = time.perf_counter() - start
        count = each * FAN_IN
    else:
        clients = [await connect(port)]
        client = clients[0]
        if workload == "100 B stream":
            count = max(1, int(500_000 * scale))
            await stream(client, 100, 100)
            start = time.perf_counter()
            await stream(client, 100, count)
        elif workload == "16 B round trip":
            count = max(1, int(20_000 * scale))
            await round_trips(client, 100)
            start = time.perf_counter()
            await round_trips(client, count)
        else:
            count = max(1, int(500 * scale))
            await stream(client, 1 << 20, 2)
            start = time.perf_counter()
            await stream(client, 1 << 20, count)
        elapsed = time.perf_counter() - start
    for _, _, close in clients:
        await close()
    return count / elapsed


# --------------------------------------------------------------- driver


def run_server(kind: str, use_uvloop: bool) -> None:
    def ready(port: int) -> None:
        print(port, flush=True)

    if use_uvloop:
        import uvloop

        uvloop.run(SERVERS[kind](ready))
    else:
        asyncio.run(SERVERS[kind](ready))


def start_server(kind: str, use_uvloop: bool) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, __file__, "--server", kind] + (["--uvloop"] if use_uvloop else [])
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait()
        raise RuntimeError(f"the {kind} server did not start")
    return process, int(line)


def available(kind: str) -> bool:
    module = {"websockets": "websockets", "zmq": "zmq"}.get(kind)
    if module is None:
        return True
    try:
        __import__(module)
    except ImportError:
        return False
    return True


async def bench(
    kinds: list[str], scale: float, use_uvloop: bool, rounds: int
) -> dict[str, dict[str, float]]:
    """Best of ``rounds`` per workload, the contenders taking turns within each round.

    Taking turns keeps a change in the machine's load from favouring one
    contender: every contender runs each workload close in time to the others.
    """
    servers = {kind: start_server(kind, use_uvloop) for kind in kinds}
    results: dict[str, dict[str, float]] = {kind: {} for kind in kinds}
    try:
        for workload in WORKLOADS:
            for _ in range(rounds):
                for kind in kinds:
                    rate = await measure(kind, servers[kind][1], workload, scale)
                    results[kind][workload] = max(rate, results[kind].get(workload, 0.0))
            line = "  ".join(f"{kind} {results[kind][workload]:,.0f}" for kind in kinds)
            print(f"  {workload:<16} {line}  (msg/s)", flush=True)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait()
    return results


def table(results: dict[str, dict[str, float]]) -> str:
    kinds = list(results)
    head = f"| workload | {' | '.join(kinds)} |"
    for other in kinds[1:]:
        head += f" stockings / {other} |"
    lines = [head, "|" + "---|" * (1 + len(kinds) + len(kinds) - 1)]
    for workload in WORKLOADS:
        row = f"| {workload} | " + " | ".join(f"{results[k][workload]:,.0f}" for k in kinds) + " |"
        for other in kinds[1:]:
            row += f" {results['stockings'][workload] / results[other][workload]:.2f}x |"
        lines.append(row)
    return "\n".join(lines)


def targets(results: dict[str, dict[str, float]]) -> list[str]:
    ours = results["stockings"]
    checks = []

    def check(label: str, ratio: float, goal: float) -> None:
        verdict = "met" if ratio >= goal else "NOT met"
        checks.append(f"- {label}: {ratio:.2f}x (target >= {goal:.1f}x): {verdict}")

    if "streams" in results:
        streams = results["streams"]
        check("100 B stream vs streams", ours["100 B stream"] / streams["100 B stream"], 2.0)
        fan = f"fan-in x{FAN_IN}"
        check("fan-in vs streams", ours[fan] / streams[fan], 2.0)
        trip = "16 B round trip"
        check("round trip vs streams", ours[trip] / streams[trip], 1.0)
    if "zmq" in results:
        for workload in WORKLOADS:
            check(f"{workload} vs zmq.asyncio", ours[workload] / results["zmq"][workload], 1.0)
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=float, default=1.0, help="workload size factor")
    parser.add_argument("--uvloop", action="store_true", help="run both ends under uvloop")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many runs")
    parser.add_argument("--only", help="comma-separated contenders (stockings always runs)")
    args = parser.parse_args()
    if args.server:
        run_server(args.server, args.uvloop)
        return
    kinds = CONTENDERS if not args.only else ["stockings", *args.only.split(",")]
    kinds = list(dict.fromkeys(k for k in kinds if available(k)))
    loop = "uvloop" if args.uvloop else "asyncio"
    print(
        f"asyncio comparison, {loop} loop, scale {args.scale}, best of {args.rounds},"
        f" Python {sys.version.split()[0]}"
    )
    if args.uvloop:
        import uvloop

        results = uvloop.run(bench(kinds, args.scale, True, args.rounds))
    else:
        results = asyncio.run(bench(kinds, args.scale, False, args.rounds))
    print()
    print(table(results))
    print()
    print("\n".join(targets(results)))


if __name__ == "__main__":
    main()
