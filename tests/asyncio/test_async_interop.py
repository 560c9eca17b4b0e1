"""The asyncio stocking meets the threaded one, Stockings 1.2.3, TLS and the auth handshake."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import trustme
from aio import run

import stockings
import stockings.asyncio as sa
from peer123 import scripted_messages
from stockings import EndReason, HandshakeFailed

LOCAL = ("127.0.0.1", 0)
ROOT = Path(__file__).resolve().parent.parent.parent
PEER = ROOT / "tests" / "peer123.py"
MESSAGES: list[Any] = ["text", b"\x00bytes", "", b"", "ж" * 5000, b"x" * 300_000]

pytestmark = pytest.mark.timeout(60)


async def echo(stocking: sa.Stocking) -> None:
    async for message in stocking:
        await stocking.write(message)


def threaded_client(address: Any, **kwargs: Any) -> tuple[list[Any], Any]:
    """Write MESSAGES from a threaded stocking, read them back, close; in a thread."""
    with stockings.connect(address, timeout=10, **kwargs) as stocking:
        stocking.wait_handshake(10)
        for message in MESSAGES:
            stocking.write(message)
        got = [stocking.read(timeout=20) for _ in MESSAGES]
        stocking.close()
        return got, stocking.end_reason


class ThreadedEchoServer:
    """One threaded stocking serving one connection, echoing, on its own thread."""

    def __init__(self, cls: type[stockings.Stocking] = stockings.Stocking, **kwargs: Any):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        self.end: list[Any] = []
        self.thread = threading.Thread(target=self._serve, args=(cls, kwargs), daemon=True)
        self.thread.start()

    def _serve(self, cls: type[stockings.Stocking], kwargs: dict[str, Any]) -> None:
        self.listener.settimeout(20)
        conn, _ = self.listener.accept()
        self.listener.close()
        with cls(conn, **kwargs) as stocking:
            stocking.wait_handshake(10)
            if stocking.handshake_complete:
                for message in stocking:
                    stocking.write(message)
            self.end.append(stocking.end_reason)

    async def join(self) -> None:
        await asyncio.to_thread(self.thread.join, 20)
        assert not self.thread.is_alive()


def test_async_server_threaded_client() -> None:
    async def main() -> None:
        async with sa.serve(echo, LOCAL) as server:
            got, reason = await asyncio.to_thread(threaded_client, server.address)
        assert got == MESSAGES
        assert reason is EndReason.CLOSED

    run(main)


def test_threaded_server_async_client() -> None:
    async def main() -> None:
        server = ThreadedEchoServer()
        stocking = await sa.connect(server.address)
        for message in MESSAGES:
            await stocking.write(message)
        assert [await stocking.read(timeout=20) for _ in MESSAGES] == MESSAGES
        await stocking.close()
        assert stocking.end_reason is EndReason.CLOSED
        await server.join()
        assert server.end == [EndReason.PEER_CLOSED]

    run(main)


# ------------------------------------------------------------------ 1.2.3


async def run_peer123(part: str, port: int, stockings123: Path) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "PYTHONPATH": str(stockings123),
        "PYTHONDONTWRITEBYTECODE": "1",
        "STOCKING_SELECT_SEND_INTERVAL": "0.005",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(PEER),
        part,
        "PollStocking",
        str(port),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def finished_ok(process: asyncio.subprocess.Process) -> None:
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    assert out.decode().strip() == "peer123: ok", err.decode()


def test_async_server_and_1_2_3_echo(stockings123: Path) -> None:
    async def main() -> None:
        results: list[Any] = []

        async def talk(stocking: sa.Stocking) -> None:
            for message in scripted_messages():
                await stocking.write(message)
                reply = await stocking.read(timeout=20)
                expected = message if len(message) else f"EMPTY {type(message).__name__}"
                results.append(reply == expected and type(reply) is type(expected))

        async with sa.serve(talk, LOCAL) as server:
            process = await run_peer123("echo", server.address[1], stockings123)
            await finished_ok(process)
        assert results and all(results)

    run(main)


def test_1_2_3_writes_to_an_async_server(stockings123: Path) -> None:
    async def main() -> None:
        got: list[Any] = []
        ends: list[Any] = []

        async def listen(stocking: sa.Stocking) -> None:
            while (message := await stocking.read(timeout=20)) != "END":
                assert message is not None
                got.append(message)
            await stocking.write("DONE")
            assert await stocking.read(timeout=20) is None
            ends.append(stocking.end_reason)

        async with sa.serve(listen, LOCAL) as server:
            process = await run_peer123("script", server.address[1], stockings123)
            await finished_ok(process)
        assert got == [m for m in scripted_messages() if len(m)]
        assert ends == [EndReason.PEER_CLOSED]

    run(main)


SERVER_123 = """
import socket, sys
sys.path.insert(0, sys.argv[1])
import Stockings, peer123
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
listener.settimeout(30)
conn, _ = listener.accept()
stocking = Stockings.PollStocking(conn)
peer123._wait(lambda: stocking.handshakeComplete, "the handshake")
try:
    peer123._echo(stocking)
finally:
    stocking.close()
print("peer123: ok", flush=True)
"""


def test_async_client_and_a_1_2_3_server(stockings123: Path) -> None:
    async def main() -> None:
        env = {**os.environ, "PYTHONPATH": str(stockings123), "PYTHONDONTWRITEBYTECODE": "1"}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            SERVER_123,
            str(PEER.parent),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert process.stdout is not None
        port = int(await asyncio.wait_for(process.stdout.readline(), 30))
        stocking = await sa.connect(("127.0.0.1", port))
        for message in scripted_messages():
            await stocking.write(message)
            reply = await stocking.read(timeout=20)
            expected = message if len(message) else f"EMPTY {type(message).__name__}"
            assert reply == expected and type(reply) is type(expected)
        await stocking.close()
        await finished_ok(process)

    run(main)


# ------------------------------------------------------------------ auth

KEY = secrets.token_bytes(32)


def test_auth_async_to_async_and_a_wrong_key() -> None:
    async def main() -> None:
        async with sa.serve(echo, LOCAL, cls=sa.AuthStocking, authkey=KEY) as server:
            stocking = await sa.connect(server.address, cls=sa.AuthStocking, authkey=KEY)
            assert stocking.handshake_complete is True
            await stocking.write("authenticated")
            assert await stocking.read(timeout=10) == "authenticated"
            await stocking.close()
            with pytest.raises(HandshakeFailed) as failed:
                await sa.connect(server.address, cls=sa.AuthStocking, authkey=b"wrong")
            assert "different authkeys" in str(failed.value) or "ended" in str(failed.value)

    run(main)


def test_auth_async_server_threaded_client() -> None:
    async def main() -> None:
        async with sa.serve(echo, LOCAL, cls=sa.AuthStocking, authkey=KEY) as server:
            got, reason = await asyncio.to_thread(
                threaded_client,
                server.address,
                cls=stockings.AuthStocking,
                authkey=KEY,
                server_side=False,
            )
        assert got == MESSAGES
        assert reason is EndReason.CLOSED

    run(main)


def test_auth_threaded_server_async_client() -> None:
    async def main() -> None:
        server = ThreadedEchoServer(stockings.AuthStocking, authkey=KEY, server_side=True)
        stocking = await sa.connect(server.address, cls=sa.AuthStocking, authkey=KEY)
        await stocking.write("hello")
        assert await stocking.read(timeout=10) == "hello"
        await stocking.close()
        await server.join()

        wrong = ThreadedEchoServer(stockings.AuthStocking, authkey=b"other", server_side=True)
        with pytest.raises(HandshakeFailed):
            await sa.connect(wrong.address, cls=sa.AuthStocking, authkey=KEY)
        await wrong.join()

    run(main)


def test_auth_silent_peer_times_out() -> None:
    async def main() -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        try:
            connecting = asyncio.ensure_future(
                sa.connect(
                    listener.getsockname(),
                    cls=sa.AuthStocking,
                    authkey=KEY,
                    handshake_timeout=0.3,
                )
            )
            with pytest.raises(HandshakeFailed, match="handshake timeout"):
                await connecting
        finally:
            listener.close()

    run(main)


# ------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def test_tls_async_to_async(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> None:
    async def main() -> None:
        async with sa.serve(echo, LOCAL, ssl=server_context) as server:
            stocking = await sa.connect(
                server.address, ssl=client_context, server_hostname="localhost"
            )
            assert stocking.get_extra_info("ssl_object") is not None
            for message in MESSAGES:
                await stocking.write(message)
            assert [await stocking.read(timeout=20) for _ in MESSAGES] == MESSAGES
            await stocking.close()
            assert stocking.end_reason is EndReason.CLOSED

    run(main)


def test_tls_wrong_hostname_fails_clearly(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async def main() -> None:
        async with sa.serve(echo, LOCAL, ssl=server_context) as server:
            with pytest.raises(HandshakeFailed, match="TLS handshake failed") as failed:
                await sa.connect(server.address, ssl=client_context, server_hostname="example.org")
            assert isinstance(failed.value.__cause__, ssl.SSLError)

    run(main)


def test_tls_async_server_threaded_client_with_auth(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async def main() -> None:
        async with sa.serve(
            echo, LOCAL, ssl=server_context, cls=sa.AuthStocking, authkey=KEY
        ) as server:
            got, reason = await asyncio.to_thread(
                threaded_client,
                server.address,
                ssl=client_context,
                server_hostname="localhost",
                cls=stockings.AuthStocking,
                authkey=KEY,
            )
        assert got == MESSAGES
        assert reason is EndReason.CLOSED

    run(main)


def test_tls_threaded_server_async_client(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async def main() -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        address = listener.getsockname()
        ends: list[Any] = []

        def serve_one() -> None:
            listener.settimeout(20)
            conn, _ = listener.accept()
            listener.close()
            tls = server_context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            with stockings.Stocking(tls) as stocking:
                for message in stocking:
                    stocking.write(message)
                ends.append(stocking.end_reason)

        thread = threading.Thread(target=serve_one, daemon=True)
        thread.start()
        stocking = await sa.connect(address, ssl=client_context, server_hostname="localhost")
        for message in MESSAGES:
            await stocking.write(message)
        assert [await stocking.read(timeout=20) for _ in MESSAGES] == MESSAGES
        await stocking.close()
        await asyncio.to_thread(thread.join, 20)
        assert ends and ends[0].clean

    run(main)
