"""A fault-injecting TCP proxy for tests: chops, delays, cuts, resets and half-closes.

One :class:`FaultProxy` carries one connection between a client and an
upstream server over loopback. Each direction is forwarded by its own thread
according to a :class:`Faults` plan: pieces of a chosen size, a bounded random
delay before each piece, and optionally, once a given number of bytes has
passed, a clean cut (FIN both ways), a reset (``SO_LINGER`` 0, so the kernel
sends RST both ways) or a half-close (FIN toward the receiving side only).

Threads are named ``faultproxy-...`` so the library's leak checks (which look
for ``stockings-...``) do not count them, and :meth:`FaultProxy.close`
releases every descriptor the proxy holds.
"""

from __future__ import annotations

import random
import select
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["FaultProxy", "Faults", "proxied_pair", "reset_socket"]


@dataclass
class Faults:
    """What one direction of the proxy does to the bytes it forwards.

    Attributes:
        chunk: ``(smallest, largest)`` piece forwarded at once; ``(1, 1)``
            trickles one byte per ``send``.
        delay: ``(shortest, longest)`` pause in seconds before each piece.
        after: how many bytes to forward before ``action`` (``None``: never).
        action: ``"cut"`` (FIN both ways), ``"reset"`` (RST both ways) or
            ``"half_close"`` (FIN toward the receiver; the other direction
            keeps flowing).
    """

    chunk: tuple[int, int] = (65536, 65536)
    delay: tuple[float, float] = (0.0, 0.0)
    after: int | None = None
    action: str = "cut"


def reset_socket(sock: socket.socket) -> None:
    """Close ``sock`` so that the kernel answers with RST rather than FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class FaultProxy:
    """Forward one TCP connection to ``upstream``, misbehaving as planned.

    Args:
        upstream: the address of the server to connect to.
        to_server: faults applied to client -> server bytes.
        to_client: faults applied to server -> client bytes.
        seed: seeds the random chunk sizes and delays, for reproducible runs.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        to_server: Faults | None = None,
        to_client: Faults | None = None,
        seed: int = 0,
    ) -> None:
        self.upstream = upstream
        self.plans = {"to_server": to_server or Faults(), "to_client": to_client or Faults()}
        self._random = random.Random(seed)
        self._random_lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address: tuple[str, int] = self._listener.getsockname()
        self._stop_r, self._stop_w = socket.socketpair()
        self._client: socket.socket | None = None
        self._server: socket.socket | None = None
        self._lock = threading.Lock()
        self._dead = False
        self._threads: list[threading.Thread] = []
        #: Bytes forwarded so far, per direction.
        self.forwarded = {"to_server": 0, "to_client": 0}
        #: Set once a planned action (cut, reset, half-close) has been taken.
        self.acted = threading.Event()

    def accept(self) -> None:
        """Accept the client that connected to :attr:`address` and start forwarding."""
        self._listener.settimeout(10)
        client, _ = self._listener.accept()
        self._listener.close()
        server = socket.create_connection(self.upstream, timeout=10)
        for sock in (client, server):
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client, self._server = client, server
        for name, src, dst in (
            ("to_server", client, server),
            ("to_client", server, client),
        ):
            thread = threading.Thread(
                target=self._forward, args=(name, src, dst), name=f"faultproxy-{name}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _uniform_int(self, bounds: tuple[int, int]) -> int:
        with self._random_lock:
            return self._random.randint(*bounds)

    def _uniform(self, bounds: tuple[float, float]) -> float:
        with self._random_lock:
            return self._random.uniform(*bounds)

    def _stopped(self, delay: float) -> bool:
        # Waits on the stop socket, so close() interrupts a delay at once.
        ready, _, _ = select.select([self._stop_r], [], [], delay)
        return bool(ready)

    def _forward(self, name: str, src: socket.socket, dst: socket.socket) -> None:
        plan = self.plans[name]
        try:
            while True:
                ready, _, _ = select.select([src, self._stop_r], [], [])
                if self._stop_r in ready:
                    return
                limit = plan.chunk[1]
                if plan.after is not None:
                    limit = min(limit, plan.after - self.forwarded[name])
                    if limit <= 0:
                        self._act(name, plan.action, dst)
                        return
                data = src.recv(limit)
                if not data:
                    # The sender's clean FIN travels on.
                    dst.shutdown(socket.SHUT_WR)
                    return
                view = memoryview(data)
                while view:
                    piece = self._uniform_int(plan.chunk)
                    delay = self._uniform(plan.delay)
                    if delay and self._stopped(delay):
                        return
                    dst.sendall(view[:piece])
                    self.forwarded[name] += len(view[:piece])
                    view = view[piece:]
                if plan.after is not None and self.forwarded[name] >= plan.after:
                    self._act(name, plan.action, dst)
                    return
        except (OSError, ValueError):
            # The other direction reset or closed the sockets under us
            # (select() on a socket closed meanwhile raises ValueError).
            return

    def _act(self, name: str, action: str, dst: socket.socket) -> None:
        if action == "half_close":
            dst.shutdown(socket.SHUT_WR)
        elif action == "reset":
            self._kill(reset=True)
        elif action == "cut":
            self._kill(reset=False)
        else:
            raise ValueError(f"unknown action {action!r}")
        self.acted.set()

    def _kill(self, reset: bool) -> None:
        with self._lock:
            if self._dead:
                return
            self._dead = True
            self._stop_w.send(b"x")
            for sock in (self._client, self._server):
                if sock is None:
                    continue
                if reset:
                    reset_socket(sock)
                else:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    sock.close()

    def reset(self) -> None:
        """Reset both connections now (RST to client and server)."""
        self._kill(reset=True)

    def cut(self) -> None:
        """Close both connections cleanly now (FIN to client and server)."""
        self._kill(reset=False)

    def close(self) -> None:
        """Stop forwarding and release every descriptor the proxy holds."""
        self._kill(reset=False)
        for thread in self._threads:
            thread.join(10)
        self._listener.close()
        self._stop_r.close()
        self._stop_w.close()


@contextmanager
def proxied_pair(
    to_server: Faults | None = None, to_client: Faults | None = None, seed: int = 0
) -> Iterator[tuple[socket.socket, socket.socket, FaultProxy]]:
    """Yield ``(client, server, proxy)``: two connected sockets joined through a proxy."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        proxy = FaultProxy(listener.getsockname(), to_server, to_client, seed)
        try:
            client = socket.create_connection(proxy.address, timeout=10)
            proxy.accept()
            listener.settimeout(10)
            server, _ = listener.accept()
            client.settimeout(None)
            server.settimeout(None)
            try:
                yield client, server, proxy
            finally:
                client.close()
                server.close()
        finally:
            proxy.close()
