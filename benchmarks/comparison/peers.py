"""The peers of the comparison benchmark: one endpoint per system, one shape.

Every system (stockings, a hand-written framed socket,
:mod:`multiprocessing.connection`, pyzmq and Stockings 1.2.3) is wrapped in an
:class:`Endpoint` offering ``send(bytes)``, a blocking ``recv()``, ``flush()``
and ``close()``, so that the drivers in :mod:`comparison.child` run the
very same loop for every system. :func:`server_endpoint` and
:func:`client_endpoint` say how each system listens and connects over TCP
loopback, plain or (stockings and raw only) over TLS.
"""

from __future__ import annotations

import functools
import os
import selectors
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "BASE",
    "BATCH",
    "NOSPIN",
    "OLD",
    "SYSTEMS",
    "TLS_ENV",
    "ZMQ_NOCOPY",
    "Endpoint",
    "StockingsEnd",
    "client_endpoint",
    "server_endpoint",
    "tls_contexts",
]

#: The systems compared, in table order; ``stockings`` is the one measured.
SYSTEMS = (
    "stockings",
    "raw",
    "mpc",
    "zmq",
    "asyncio",
    "stockings-1.2.3",
    "stockings-batch",
    "stockings-nospin",
    "stockings-base",
)
OLD = "stockings-1.2.3"
#: stockings again, through its batch calls (``write_many`` / ``read_all``):
#: not a peer, shown beside the one-message calls the targets are about.
BATCH = "stockings-batch"
#: stockings again with ``read_spin=0``: a waiting read sleeps at once, as a
#: blocking socket does. Shown for round trips, beside the default.
NOSPIN = "stockings-nospin"
#: The environment variable naming the folder of a TLS run's certificates.
TLS_ENV = "STOCKINGS_BENCH_TLS"
#: stockings from another checkout (``--baseline``), measured beside this one.
BASE = "stockings-base"
#: Messages this large go to pyzmq with ``copy=False``.
ZMQ_NOCOPY = 65536

_LEN = struct.Struct("!I")
_RAW_BATCH = 64 * 1024
_RAW_LARGE = 64 * 1024
_RAW_BUFFER = 256 * 1024
# The longest one wait on 1.2.3's fileno lasts before its state is checked
# again. The parent kills a run that takes as long as this, so it only bounds
# a wait that would end anyway.
_OLD_WAIT = 60.0


class Endpoint:
    """One end of a connection of any system, reduced to what the drivers use.

    ``send`` may batch, so a driver calls ``flush`` before it waits for an
    answer; ``recv`` blocks until a whole message has arrived, and returns
    ``None`` or raises :class:`EOFError` when the peer has gone. Both are
    each system's own calls wherever it allows, not wrapped in a function
    of ours: a wrapper's call would cost as much as some systems' reads.
    """

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


class StockingsEnd(Endpoint):
    """This library: ``write`` / ``read(timeout=None)``; ``stocking`` for the batch calls."""

    def __init__(self, sock: socket.socket, **options: Any) -> None:
        super().__init__()
        from stockings import Stocking

        self.stocking = Stocking(sock, **options)
        self.send = self.stocking.write
        # read(None) returns None once the stocking has ended.
        self.recv = functools.partial(self.stocking.read, None)

    def close(self) -> None:
        self.stocking.close()


class _RawEnd(Endpoint):
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


class _MpcEnd(Endpoint):
    def __init__(self, conn: Any) -> None:
        super().__init__()
        self.conn = conn
        self.send = conn.send_bytes
        self.recv = conn.recv_bytes

    def close(self) -> None:
        self.conn.close()


class _ZmqEnd(Endpoint):
    def __init__(self, zsock: Any, context: Any, size: int) -> None:
        super().__init__()
        self.zsock = zsock
        self.context = context
        if size < ZMQ_NOCOPY:
            # Copying is pyzmq's default: its own calls, as they are.
            self.send = zsock.send
            self.recv = zsock.recv
        else:
            # A closure: faster than a partial with a keyword.
            zsend, zrecv = zsock.send, zsock.recv

            def send(payload: bytes) -> None:
                zsend(payload, copy=False)

            def recv() -> Any:
                return zrecv(copy=False)

            self.send = send
            self.recv = recv

    def close(self) -> None:
        self.zsock.close(linger=1000)
        self.context.term()


class _OldEnd(Endpoint):
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
                select(_OLD_WAIT)

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


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext] | None:
    """The server and client TLS contexts of this run, or ``None`` for plain TCP.

    The parent makes a throwaway CA and a certificate for ``localhost``
    (:func:`comparison.tls.make_certificates`) and names their folder in
    :data:`TLS_ENV`; both children load them from there.
    """
    folder = os.environ.get(TLS_ENV)
    if not folder:
        return None
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(os.path.join(folder, "server.pem"))
    client = ssl.create_default_context(cafile=os.path.join(folder, "ca.pem"))
    return server, client


def server_endpoint(system: str, size: int, kind: str = "pair") -> Iterator[Any]:
    """Listen for one connection of ``system``; a generator in two steps.

    Args:
        system: one of :data:`SYSTEMS`.
        size: the message size of the run (pyzmq copies below
            :data:`ZMQ_NOCOPY` only).
        kind: ``"pair"``; only the fan-in server (:mod:`comparison.fanin`)
            listens otherwise.

    Returns:
        A generator yielding the port to announce to the client, then, once
        the client has connected, its :class:`Endpoint`.

    Raises:
        ValueError: ``system`` is unknown (when the second step is taken).
    """
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
        tls = tls_contexts()
        if tls is not None:
            # stockings handshakes in the background; the raw loop blocks for it.
            blocking = system == "raw"
            sock = tls[0].wrap_socket(sock, server_side=True, do_handshake_on_connect=blocking)
        yield _socket_endpoint(system, sock)


def client_endpoint(system: str, port: int, size: int, kind: str = "pair") -> Endpoint:
    """Connect to the server of ``system`` listening on loopback ``port``.

    Args:
        system: one of :data:`SYSTEMS`.
        port: the port the server announced.
        size: the message size of the run.
        kind: ``"pair"``, or ``"dealer"`` for pyzmq's side of a fan-in.

    Returns:
        The connected :class:`Endpoint`.

    Raises:
        ValueError: ``system`` is unknown.
    """
    if system == "mpc":
        from multiprocessing.connection import Client

        return _MpcEnd(Client(("127.0.0.1", port)))
    if system == "zmq":
        import zmq

        context = zmq.Context()
        zsock = context.socket(zmq.DEALER if kind == "dealer" else zmq.PAIR)
        zsock.connect(f"tcp://127.0.0.1:{port}")
        return _ZmqEnd(zsock, context, size)
    sock = _connect_tcp(port)
    tls = tls_contexts()
    if tls is not None:
        blocking = system == "raw"
        sock = tls[1].wrap_socket(
            sock, server_hostname="localhost", do_handshake_on_connect=blocking
        )
    if system == "asyncio":
        # The asyncio server's wire is the raw loop's: its client is the raw one.
        return _RawEnd(sock)
    return _socket_endpoint(system, sock)


def _socket_endpoint(system: str, sock: socket.socket) -> Endpoint:
    """The endpoint of a system that speaks over a plain connected socket."""
    if system == "raw":
        return _RawEnd(sock)
    if system == OLD:
        return _OldEnd(sock)
    if system in ("stockings", BATCH, BASE):
        return StockingsEnd(sock)
    if system == NOSPIN:
        return StockingsEnd(sock, read_spin=0)
    sock.close()
    raise ValueError(f"unknown system {system!r}")
