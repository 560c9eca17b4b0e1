"""Fan-in: one server process takes small messages from many connections at once.

The server of each system takes :data:`FAN_IN` connections, then runs the
same three phases: a warm-up message from every connection (answered with
``go`` on each), the timed ``count`` messages in any order (answered on each
connection with the counts), and a goodbye from every connection. Each system
waits for its connections in its ordinary way:

- ``stockings``: :class:`stockings.Server` accepts, a :class:`stockings.Waiter`
  says which stockings are ready, ``read(0)`` takes their messages;
- ``raw``: a :mod:`selectors` loop over non-blocking sockets, framed by hand
  (a 4-byte length); the practical limit;
- ``mpc``: :func:`multiprocessing.connection.wait`, then ``recv_bytes``;
- ``zmq``: one ``ROUTER`` socket that the clients' ``DEALER`` sockets connect to;
- ``asyncio``: :func:`asyncio.start_server`, a 4-byte prefix and ``readexactly``.

The clients (one process, every connection, in bursts of
:data:`FAN_IN_BURST` messages per connection) use each system's own client,
except asyncio's, whose wire is the raw loop's: the raw client drives it.
"""

from __future__ import annotations

import asyncio
import json
import selectors
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["FAN_IN", "FAN_IN_BURST", "serve_fanin"]

#: Client connections of one fan-in run.
FAN_IN = 32
#: The client process writes this many messages on one connection, then on
#: the next, and so on: bursts that every client can batch, so the clients
#: outpace the server and the server's rate is what is measured.
FAN_IN_BURST = 32

_LEN = struct.Struct("!I")
_BUFFER = 256 * 1024


def serve_fanin(
    system: str, count: int, expected: bytes, clock: Callable[[], float]
) -> dict[str, Any]:
    """Serve one fan-in run of ``system``; print the port first (one JSON line).

    Args:
        system: ``stockings``, ``raw``, ``mpc``, ``zmq`` or ``asyncio``.
        count: the timed messages, from all connections together.
        expected: what every timed message must equal.
        clock: the CPU clock (seconds) to measure the timed phase with.

    Returns:
        ``received``, ``bytes``, ``bad`` (messages unlike ``expected``) and ``cpu``.

    Raises:
        ValueError: ``system`` has no fan-in server.
    """
    if system == "asyncio":
        return asyncio.run(_serve_asyncio(count, expected, clock))
    makers: dict[str, Callable[[], _Fan]] = {
        "stockings": _StockingsFan,
        "stockings-base": _StockingsFan,
        "raw": _RawFan,
        "mpc": _MpcFan,
        "zmq": _ZmqFan,
    }
    if system not in makers:
        raise ValueError(f"no fan-in server for {system!r}")
    fan = makers[system]()
    try:
        return _drive(fan, count, bytearray(expected), clock)
    finally:
        fan.close()


def _announce(port: int) -> None:
    print(json.dumps({"port": port}), flush=True)


class _Fan:
    """A fan-in server: its messages as ``(connection, message)``, and answers."""

    def messages(self) -> Iterator[tuple[Any, Any]]:
        raise NotImplementedError

    def send(self, key: Any, payload: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _drive(
    fan: _Fan, count: int, expected: bytearray, clock: Callable[[], float]
) -> dict[str, Any]:
    messages = fan.messages()
    keys: list[Any] = []
    for key, _ in messages:
        keys.append(key)
        if len(keys) == FAN_IN:
            break
    for key in keys:
        fan.send(key, b"go")
    cpu = clock()
    received = total = bad = 0
    for _, message in messages:
        received += 1
        total += len(message)
        if expected != message:
            bad += 1
        if received == count:
            break
    answer = f"{received} {total} {bad}".encode()
    for key in keys:
        fan.send(key, answer)
    cpu = clock() - cpu
    for byes, _ in enumerate(messages, 1):
        if byes == FAN_IN:
            break
    return {"received": received, "bytes": total, "bad": bad, "cpu": cpu}


class _StockingsFan(_Fan):
    def __init__(self) -> None:
        from stockings import Server, Waiter

        self.server = Server(("127.0.0.1", 0))
        _announce(self.server.address[1])
        self.clients = [self.server.accept(None) for _ in range(FAN_IN)]
        self.waiter = Waiter(self.clients)

    def messages(self) -> Iterator[tuple[Any, Any]]:
        wait = self.waiter.wait
        while True:
            for client in wait(None):
                read = client.read
                message = read(0)
                if message is None:
                    # Ready without a message: it ended (after its goodbye, or
                    # too soon: then the counts tell).
                    self.waiter.discard(client)
                    if not len(self.waiter):
                        raise EOFError("every client went away")
                while message is not None:
                    yield client, message
                    message = read(0)

    def send(self, key: Any, payload: bytes) -> None:
        key.write(payload)

    def close(self) -> None:
        self.waiter.close()
        for client in self.clients:
            client.close()
        self.server.close()


class _RawFan(_Fan):
    def __init__(self) -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        _announce(listener.getsockname()[1])
        self.socks = []
        for _ in range(FAN_IN):
            sock, _ = listener.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.socks.append(sock)
        listener.close()

    def messages(self) -> Iterator[tuple[Any, Any]]:
        unpack = _LEN.unpack_from
        with selectors.DefaultSelector() as selector:
            for sock in self.socks:
                sock.setblocking(False)
                # Each connection's buffer and how much of it is filled.
                selector.register(sock, selectors.EVENT_READ, [bytearray(_BUFFER), 0])
            select = selector.select
            while True:
                for key, _ in select():
                    sock = key.fileobj
                    state = key.data
                    buffer, end = state
                    view = memoryview(buffer)
                    received = sock.recv_into(view[end:])  # type: ignore[union-attr]
                    if not received:
                        view.release()
                        selector.unregister(sock)
                        if not selector.get_map():
                            raise EOFError("every client went away")
                        continue
                    end += received
                    start = 0
                    while end - start >= 4:
                        (length,) = unpack(buffer, start)
                        stop = start + 4 + length
                        if stop > end:
                            break
                        yield sock, bytes(view[start + 4 : stop])
                        start = stop
                    if start:
                        buffer[: end - start] = view[start:end]
                        end -= start
                    view.release()
                    state[1] = end

    def send(self, key: Any, payload: bytes) -> None:
        key.setblocking(True)
        key.sendall(_LEN.pack(len(payload)) + payload)
        key.setblocking(False)

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


class _MpcFan(_Fan):
    def __init__(self) -> None:
        from multiprocessing.connection import Listener

        with Listener(("127.0.0.1", 0)) as listener:
            _announce(listener.address[1])
            self.conns = [listener.accept() for _ in range(FAN_IN)]

    def messages(self) -> Iterator[tuple[Any, Any]]:
        from multiprocessing.connection import wait

        conns = list(self.conns)
        while conns:
            for conn in wait(conns):
                try:
                    message = conn.recv_bytes()  # type: ignore[union-attr]
                except EOFError:
                    conns.remove(conn)
                    continue
                yield conn, message
        raise EOFError("every client went away")

    def send(self, key: Any, payload: bytes) -> None:
        key.send_bytes(payload)

    def close(self) -> None:
        for conn in self.conns:
            conn.close()


class _ZmqFan(_Fan):
    def __init__(self) -> None:
        import zmq

        self.context = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        _announce(self.router.bind_to_random_port("tcp://127.0.0.1"))

    def messages(self) -> Iterator[tuple[Any, Any]]:
        recv = self.router.recv_multipart
        while True:
            identity, message = recv()
            yield identity, message

    def send(self, key: Any, payload: bytes) -> None:
        self.router.send_multipart([key, payload])

    def close(self) -> None:
        self.router.close(linger=1000)
        self.context.term()


async def _serve_asyncio(count: int, expected: bytes, clock: Callable[[], float]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    writers: list[asyncio.StreamWriter] = []
    closed: list[asyncio.StreamWriter] = []
    check = bytearray(expected)
    # warm-ups seen, timed messages, their bytes, bad ones, goodbyes; CPU at the start.
    tally = {"warm": 0, "received": 0, "bytes": 0, "bad": 0, "byes": 0, "cpu": 0.0}

    def answer(payload: bytes) -> None:
        for writer in writers:
            writer.write(_LEN.pack(len(payload)) + payload)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        readexactly = reader.readexactly
        unpack = _LEN.unpack
        try:
            while True:
                (length,) = unpack(await readexactly(4))
                message = await readexactly(length)
                if tally["warm"] < FAN_IN:
                    tally["warm"] += 1
                    if tally["warm"] == FAN_IN:
                        answer(b"go")
                        tally["cpu"] = clock()
                elif tally["received"] < count:
                    tally["received"] += 1
                    tally["bytes"] += len(message)
                    if check != message:
                        tally["bad"] += 1
                    if tally["received"] == count:
                        answer(f"{count} {tally['bytes']} {tally['bad']}".encode())
                        tally["cpu"] = clock() - tally["cpu"]
                else:
                    tally["byes"] += 1
                    if tally["byes"] == FAN_IN and not done.done():
                        done.set_result(None)
        except (asyncio.IncompleteReadError, ConnectionError):
            closed.append(writer)
            if len(closed) == FAN_IN and not done.done():
                done.set_exception(EOFError("every client went away"))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    _announce(server.sockets[0].getsockname()[1])
    async with server:
        await done
        # Inside the block: from Python 3.12 leaving it waits for every
        # connection to end, and these end only once closed here.
        for writer in writers:
            writer.close()
    return {
        "received": tally["received"],
        "bytes": tally["bytes"],
        "bad": tally["bad"],
        "cpu": tally["cpu"],
    }
