"""stockings.Server and stockings.connect over TCP and Unix sockets."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stockings
from conftest import FLAVOURS, library_threads, wait_until
from stockings import EndReason, Server, Stocking

pytestmark = pytest.mark.timeout(20)


@pytest.fixture(params=["tcp", "unix"])
def address(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Where to listen: a free loopback port, or a socket path."""
    if request.param == "tcp":
        return ("127.0.0.1", 0)
    return str(tmp_path / "echo.sock")


@pytest.fixture
def clean(no_leaks: None) -> Iterator[list[Stocking]]:
    """A list to put client stockings in; closed after the test, leaks checked."""
    made: list[Stocking] = []
    yield made
    for stocking in made:
        stocking.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_accept_and_echo(address: Any, clean: list[Stocking]) -> None:
    with Server(address) as server:
        if isinstance(address, str):
            assert server.address == address and os.path.exists(address)
        else:
            assert server.address[1] != 0
        client = stockings.connect(server.address, timeout=5)
        clean.append(client)
        peer = server.accept(timeout=5)
        assert isinstance(peer, Stocking)
        assert server.clients == [peer]
        client.write("ping")
        assert peer.read(timeout=5) == "ping"
        peer.write(b"pong")
        assert client.read(timeout=5) == b"pong"
        if not isinstance(address, str):
            opt = client.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert opt and peer.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    # Closing the server closed its client, cleanly.
    assert peer.ended and peer.end_reason is EndReason.CLOSED
    assert client.read(timeout=5) is None
    assert client.end_reason is EndReason.PEER_CLOSED
    if isinstance(address, str):
        assert not os.path.exists(address)


def test_iteration_until_closed(address: Any, clean: list[Stocking]) -> None:
    server = Server(address)
    got: list[Stocking] = []

    def serve() -> None:
        for stocking in server:
            got.append(stocking)

    thread = threading.Thread(target=serve)
    thread.start()
    clean.extend(stockings.connect(server.address, timeout=5) for _ in range(3))
    wait_until(lambda: len(got) == 3)
    server.close()
    thread.join(5)
    assert not thread.is_alive()
    assert all(s.end_reason is EndReason.CLOSED for s in got)
    assert server.accept(timeout=0) is None and server.closed


def test_handler_callback(address: Any, clean: list[Stocking]) -> None:
    got: list[Stocking] = []

    def handler(stocking: Stocking) -> None:
        # Noted before the write, so a client that has read its welcome
        # knows its stocking is in ``got``.
        got.append(stocking)
        stocking.write("welcome")

    with Server(address, handler=handler) as server:
        assert [t for t in library_threads() if t.name.startswith("stockings-server-")]
        clients = [stockings.connect(server.address, timeout=5) for _ in range(4)]
        clean.extend(clients)
        for client in clients:
            assert client.read(timeout=5) == "welcome"
        assert len(got) == 4
        with pytest.raises(RuntimeError):
            server.accept(timeout=0)


def test_handler_errors_are_reported(
    clean: list[Stocking], caplog: pytest.LogCaptureFixture
) -> None:
    calls = []

    def handler(stocking: Stocking) -> None:
        calls.append(stocking)
        if len(calls) == 1:
            raise ValueError("first one fails")

    with Server(("127.0.0.1", 0), handler=handler) as server:
        clean.extend(stockings.connect(server.address, timeout=5) for _ in range(2))
        wait_until(lambda: len(calls) == 2)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.name for r in errors] == ["stockings.server"]
    assert errors[0].exc_info is not None and isinstance(errors[0].exc_info[1], ValueError)
    assert "the handler raised" in errors[0].getMessage()


def test_close_leaving_clients(address: Any, clean: list[Stocking]) -> None:
    server = Server(address)
    client = stockings.connect(server.address, timeout=5)
    clean.append(client)
    peer = server.accept(timeout=5)
    assert peer is not None
    clean.append(peer)
    server.close(close_clients=False)
    # The listening socket is gone, the established connection lives on.
    with pytest.raises((ConnectionRefusedError, FileNotFoundError)):
        stockings.connect(server.address, timeout=5)
    client.write("still here")
    assert peer.read(timeout=5) == "still here"
    assert peer.active and client.active


def test_close_flushes_what_clients_were_sent(clean: list[Stocking]) -> None:
    server = Server(("127.0.0.1", 0))
    clients = [stockings.connect(server.address, timeout=5) for _ in range(20)]
    clean.extend(clients)
    peers = [server.accept(timeout=5) for _ in clients]
    big = bytes(300_000)
    for peer in peers:
        assert peer is not None
        peer.write("last words")
        peer.write(big)
    server.close(timeout=10)
    for client in clients:
        assert list(client) == ["last words", big]
        assert client.end_reason is EndReason.PEER_CLOSED
    assert server.clients == []


def test_unaccepted_connections_are_dropped_on_close(clean: list[Stocking]) -> None:
    server = Server(("127.0.0.1", 0))
    client = stockings.connect(server.address, timeout=5)
    clean.append(client)
    wait_until(lambda: server.ready)
    server.close()
    assert client.read(timeout=5) is None
    assert client.ended


def test_server_in_wait(clean: list[Stocking]) -> None:
    with Server(("127.0.0.1", 0)) as server:
        assert stockings.wait([server], timeout=0) == []
        clean.append(stockings.connect(server.address, timeout=5))
        assert stockings.wait([server], timeout=5) == [server]
        peer = server.accept(timeout=0)
        assert peer is not None
        assert stockings.wait([server, peer], timeout=0) == []
        clean[0].write("hi")
        assert stockings.wait([server, peer], timeout=5) == [peer]
    assert stockings.wait([server], timeout=0) == [server]


def test_backlog_pushes_back_then_catches_up(clean: list[Stocking]) -> None:
    with Server(("127.0.0.1", 0), backlog=2) as server:
        # More clients than both queues hold: they get in only as we accept.
        connecting = threading.Thread(
            target=lambda: clean.extend(
                stockings.connect(server.address, timeout=10) for _ in range(8)
            )
        )
        connecting.start()
        wait_until(lambda: server._accepted.paused)
        peers = [server.accept(timeout=10) for _ in range(8)]
        connecting.join(10)
        assert len(clean) == 8
        assert all(isinstance(p, Stocking) for p in peers)
        for i, client in enumerate(clean):
            client.write(str(i))
        assert sorted(int(p.read(timeout=5)) for p in peers if p) == list(range(8))


@pytest.mark.parametrize("cls", FLAVOURS, ids=lambda c: c.__name__)
def test_class_and_options_passed_on(cls: type[Stocking], clean: list[Stocking]) -> None:
    class Shouting(cls):  # type: ignore[valid-type,misc]
        def post_read(self, message: Any) -> Any:
            return message.upper()

    with Server(("127.0.0.1", 0), cls=Shouting, max_message_size=10) as server:
        client = stockings.connect(server.address, timeout=5, cls=cls)
        clean.append(client)
        assert type(client) is cls
        peer = server.accept(timeout=5)
        assert type(peer) is Shouting
        client.write("quiet")
        assert peer.read(timeout=5) == "QUIET"
        client.write("far too long for the limit")
        assert peer.read(timeout=5) is None
        wait_until(lambda: peer.ended)
        assert peer.end_reason is EndReason.MESSAGE_TOO_LARGE


def test_custom_handshake_on_both_sides(clean: list[Stocking]) -> None:
    class Greeting(Stocking):
        def handshake(self) -> bool:
            self._write("hello")
            return self._read(timeout=5) == "hello"

    with Server(("127.0.0.1", 0), cls=Greeting) as server:
        client = stockings.connect(server.address, timeout=5, cls=Greeting)
        clean.append(client)
        peer = server.accept(timeout=5)
        assert peer is not None
        assert client.wait_handshake(5) and peer.wait_handshake(5)
        client.write("after")
        assert peer.read(timeout=5) == "after"


def test_connect_refused_names_the_address() -> None:
    port = _free_port()
    with pytest.raises(ConnectionRefusedError, match=f"127.0.0.1:{port}"):
        stockings.connect(("127.0.0.1", port), timeout=5)


def test_connect_to_a_missing_path(tmp_path: Path) -> None:
    path = str(tmp_path / "nobody.sock")
    with pytest.raises(FileNotFoundError, match=r"nobody\.sock"):
        stockings.connect(path, timeout=5)


@pytest.mark.skipif(sys.platform != "linux", reason="relies on Linux dropping SYNs")
def test_connect_timeout(no_leaks: None) -> None:
    # A listener that never accepts, with its queue full: Linux drops
    # further SYNs, so the next connect can only time out.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers: list[socket.socket] = []
    try:
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            fillers.append(filler)
            try:
                filler.connect(listener.getsockname())
            except BlockingIOError:
                pass
        with pytest.raises(TimeoutError, match=r"timed out after 0\.2 s"):
            stockings.connect(listener.getsockname(), timeout=0.2)
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_bad_address() -> None:
    with pytest.raises(TypeError):
        stockings.connect(("127.0.0.1", 1, 2, 3, 4), timeout=1)  # type: ignore[arg-type]


def test_stale_unix_socket_is_replaced(tmp_path: Path, clean: list[Stocking]) -> None:
    path = str(tmp_path / "stale.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.close()
    with Server(path) as server:
        clean.append(stockings.connect(path, timeout=5))
        assert server.accept(timeout=5) is not None


def test_address_in_use() -> None:
    with Server(("127.0.0.1", 0)) as server, pytest.raises(OSError):
        Server(server.address)


def test_no_leaks_after_many_open_and_close(no_leaks: None) -> None:
    for _ in range(5):
        server = Server(("127.0.0.1", 0))
        clients = [stockings.connect(server.address, timeout=5) for _ in range(10)]
        peers = [server.accept(timeout=5) for _ in clients]
        assert all(peers)
        server.close()
        for client in clients:
            client.close()


def test_listener_and_clients_on_a_hub_of_ones_choosing(clean: list[Stocking]) -> None:
    hub = stockings.Hub(name="stockings-hub-test")
    with Server(("127.0.0.1", 0), hub=hub) as server:
        assert hub.running and hub.attached == 1
        clean.append(stockings.connect(server.address, timeout=5, hub=hub))
        peer = server.accept(timeout=5)
        assert peer is not None
        assert hub.attached == 3
        assert {t.name for t in library_threads()} == {"stockings-hub-test"}
        clean[0].write("on my hub")
        assert peer.read(timeout=5) == "on my hub"
    clean[0].close()
    wait_until(lambda: not hub.running)


def test_tls_over_a_unix_path_needs_a_hostname(tmp_path: Path, no_leaks: None) -> None:
    path = str(tmp_path / "tls.sock")
    with Server(path), pytest.raises(ValueError, match="server_hostname"):
        stockings.connect(path, timeout=5, ssl=True)
