"""The asyncio stocking against itself: messages, hooks, end reasons, options."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
from typing import Any

import pytest
from aio import LOOPS, run, wait_for_condition

import stockings
import stockings.asyncio as sa
from stockings import ConnectionClosed, EndReason, HandshakeFailed, MessageTooLarge, NotReady

LOCAL = ("127.0.0.1", 0)


async def echo(stocking: sa.Stocking) -> None:
    async for message in stocking:
        await stocking.write(message)


def test_import_is_a_subpackage_loaded_only_on_demand() -> None:
    code = (
        "import sys, stockings; assert 'stockings.asyncio' not in sys.modules; "
        "import stockings.asyncio; print(stockings.asyncio.Stocking.__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Stocking"


def test_the_leak_checks_catch_an_open_stocking_and_a_stray_task() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:

        async def leaves_a_stocking_open() -> None:
            stocking = await sa.connect(listener.getsockname())
            await stocking.write("never closed")

        with pytest.raises(AssertionError, match="leaked"):
            run(leaves_a_stocking_open)

    stray: list[asyncio.Future[None]] = []

    async def leaves_a_task() -> None:
        stray.append(asyncio.ensure_future(asyncio.sleep(60)))

    with pytest.raises(AssertionError, match="left running"):
        run(leaves_a_task)


@pytest.mark.parametrize("loop", LOOPS)
def test_echo_every_kind_of_message(loop: str) -> None:
    messages: list[Any] = ["text", b"\x00bytes", "", b"", "ж" * 5000, b"x" * 300_000]

    async def main() -> None:
        async with sa.serve(echo, LOCAL) as server:
            async with await sa.connect(server.address) as stocking:
                for message in messages:
                    await stocking.write(message)
                got = [await stocking.read(timeout=10) for _ in messages]
                assert got == messages
                assert [type(m) for m in got] == [type(m) for m in messages]
                assert stocking.read_nowait() is None
            assert stocking.end_reason is EndReason.CLOSED

    run(main, loop=loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_burst_arrives_in_order(loop: str) -> None:
    async def main() -> None:
        async with sa.serve(echo, LOCAL) as server:
            stocking = await sa.connect(server.address)
            for i in range(20_000):
                await stocking.write(b"%d" % i)
            for i in range(20_000):
                assert await stocking.read(timeout=10) == b"%d" % i
            await stocking.close()

    run(main, loop=loop)


def test_close_flushes_and_the_peer_sees_a_clean_end() -> None:
    async def main() -> None:
        received: list[Any] = []
        done = asyncio.Event()
        ends: list[Any] = []

        async def collect(stocking: sa.Stocking) -> None:
            async for message in stocking:
                received.append(message)
            ends.append(stocking.end_reason)
            done.set()

        async with sa.serve(collect, LOCAL) as server:
            stocking = await sa.connect(server.address)
            for i in range(1000):
                await stocking.write(f"m{i}")
            await stocking.close()
            assert stocking.end_reason is EndReason.CLOSED
            assert stocking.ended and not stocking.active
            with pytest.raises(ConnectionClosed):
                await stocking.write("late")
            assert await stocking.read() is None
            await asyncio.wait_for(done.wait(), 10)
        assert received == [f"m{i}" for i in range(1000)]
        assert ends == [EndReason.PEER_CLOSED]

    run(main)


def test_handler_return_closes_and_replies_are_flushed() -> None:
    async def answer_then_return(stocking: sa.Stocking) -> None:
        question = await stocking.read()
        for i in range(100):
            await stocking.write(f"{question} {i}")

    async def main() -> None:
        async with sa.serve(answer_then_return, LOCAL) as server:
            stocking = await sa.connect(server.address)
            await stocking.write("q")
            got = [m async for m in stocking]
            assert got == [f"q {i}" for i in range(100)]
            assert stocking.end_reason is EndReason.PEER_CLOSED
            await stocking.close()

    run(main)


def test_abort_resets_the_peer() -> None:
    async def main() -> None:
        peer_end: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def watch(stocking: sa.Stocking) -> None:
            while await stocking.read() is not None:
                pass
            peer_end.set_result(stocking.end_reason)

        async with sa.serve(watch, LOCAL) as server:
            stocking = await sa.connect(server.address)
            await stocking.write(b"x" * 100)
            stocking.abort()
            assert stocking.end_reason is EndReason.ABORTED
            await stocking.wait_closed()
            assert await asyncio.wait_for(peer_end, 10) is EndReason.RESET
            assert [m async for m in stocking] == []  # an abort ends iteration quietly

    run(main)


def test_read_timeout_and_read_nowait() -> None:
    async def silent(stocking: sa.Stocking) -> None:
        await stocking.read()

    async def main() -> None:
        async with sa.serve(silent, LOCAL) as server:
            stocking = await sa.connect(server.address)
            assert await stocking.read(timeout=0.05) is None
            assert stocking.read_nowait() is None
            assert not stocking.ended
            await stocking.close()

    run(main)


def test_hooks() -> None:
    class Pairs(sa.Stocking):
        def pre_write(self, user: str, status: str = "OK") -> str:
            return f"{user}:{status}"

        def post_read(self, message: Any) -> Any:
            return tuple(message.split(":"))

    async def main() -> None:
        async with sa.serve(echo, LOCAL) as server:
            stocking = await sa.connect(server.address, cls=Pairs)
            await stocking.write("user", status="ERROR")
            assert await stocking.read(timeout=10) == ("user", "ERROR")
            await stocking.write("again")
            assert await stocking.read(timeout=10) == ("again", "OK")
            await stocking.close()

    run(main)


class Hello(sa.Stocking):
    async def handshake(self) -> Any:
        with pytest.raises(NotReady):
            await self.write("too early")
        await self._write("hello from " + ("server" if self.server_side else "client"))
        return await self._read(timeout=10)


def test_custom_handshake_runs_before_any_message() -> None:
    async def main() -> None:
        seen: list[Any] = []

        async def handler(stocking: sa.Stocking) -> None:
            seen.append(stocking.handshake_complete)
            await echo(stocking)

        async with sa.serve(handler, LOCAL, cls=Hello) as server:
            stocking = await sa.connect(server.address, cls=Hello)
            assert stocking.handshake_complete == "hello from server"
            await stocking.write("app")
            assert await stocking.read(timeout=10) == "app"
            await stocking.close()
        assert seen == ["hello from client"]

    run(main)


def test_failed_handshake_raises_from_connect() -> None:
    class Refuses(sa.Stocking):
        async def handshake(self) -> bool:
            return False

    async def never_called(stocking: sa.Stocking) -> None:
        raise AssertionError("the handler ran after a failed handshake")

    async def main() -> None:
        async with sa.serve(never_called, LOCAL, cls=Refuses) as server:
            with pytest.raises(HandshakeFailed, match="false value"):
                await sa.connect(server.address, cls=Refuses)

    run(main)


def test_message_limits() -> None:
    async def main() -> None:
        ends: list[Any] = []

        async def strict(stocking: sa.Stocking) -> None:
            async for _ in stocking:
                pass

        async def handler(stocking: sa.Stocking) -> None:
            try:
                await strict(stocking)
            except ConnectionClosed:
                pass
            ends.append((stocking.end_reason, type(stocking.end_exception)))

        async with sa.serve(handler, LOCAL, max_message_size=100) as server:
            stocking = await sa.connect(server.address, max_message_size=10)
            with pytest.raises(MessageTooLarge):
                await stocking.write(b"x" * 11)
            await stocking.write(b"x" * 10)
            big = await sa.connect(server.address)
            await big.write(b"y" * 101)
            assert await big.read(timeout=10) is None
            assert big.end_reason is EndReason.RESET or big.end_reason is EndReason.PEER_CLOSED
            await stocking.close()
            await big.close()
        assert (EndReason.MESSAGE_TOO_LARGE, MessageTooLarge) in ends

    run(main)


def test_idle_timeout() -> None:
    async def main() -> None:
        async with sa.serve(echo, LOCAL) as server:
            stocking = await sa.connect(server.address, idle_timeout=0.2)
            assert await stocking.read() is None
            assert stocking.end_reason is EndReason.TIMEOUT
            assert isinstance(stocking.end_exception, TimeoutError)

    run(main)


def test_options_are_checked() -> None:
    async def main() -> None:
        with pytest.raises(ValueError):
            sa.serve(echo, LOCAL, write_high_water=10, write_low_water=20)
        with pytest.raises(ValueError):
            await sa.connect(("127.0.0.1", 1), idle_timeout=0)
        with pytest.raises(ValueError):
            await sa.connect(("127.0.0.1", 1), keepalive=-1)

    run(main)


def test_connect_errors_name_the_address() -> None:
    async def main() -> None:
        with pytest.raises(ConnectionRefusedError, match=r"127\.0\.0\.1"):
            async with sa.serve(echo, LOCAL) as server:
                address = server.address
            await sa.connect(address)

    run(main)


def test_unix_socket_and_keepalive() -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "s")
            async with sa.serve(echo, path) as server:
                assert server.address == path
                stocking = await sa.connect(path, keepalive=5)
                await stocking.write("over unix")
                assert await stocking.read(timeout=10) == "over unix"
                await stocking.close()

    run(main)


def test_keepalive_and_nodelay_on_tcp() -> None:
    import socket

    async def main() -> None:
        async with sa.serve(echo, LOCAL) as server:
            stocking = await sa.connect(server.address, keepalive=30, nodelay=False)
            sock = stocking.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
            assert not sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            await stocking.close()

    run(main)


def test_server_close_ends_handlers() -> None:
    async def main() -> None:
        server = await sa.serve(echo, LOCAL)
        stockings_ = [await sa.connect(server.address) for _ in range(5)]
        await wait_for_condition(lambda: len(server.stockings) == 5)
        server.close()
        await server.wait_closed()
        for stocking in stockings_:
            assert await stocking.read(timeout=10) is None
            assert stocking.end_reason is EndReason.PEER_CLOSED

    run(main)


def test_serve_forever_is_cancellable() -> None:
    async def main() -> None:
        async with sa.serve(echo, LOCAL) as server:
            task = asyncio.ensure_future(server.serve_forever())
            stocking = await sa.connect(server.address)
            await stocking.write("x")
            assert await stocking.read(timeout=10) == "x"
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await stocking.read(timeout=10) is None
            await stocking.close()

    run(main)


@pytest.mark.parametrize("loop", LOOPS)
def test_many_connections_at_once_keep_their_bytes_apart(loop: str) -> None:
    # Every connection of a loop receives into one shared buffer.
    def messages(seed: int) -> list[Any]:
        out: list[Any] = []
        for i in range(30):
            size = (seed * 7919 + i * 104729) % 200_000 if i % 5 == 0 else (seed + i) % 300
            out.append(bytes([seed]) * size if i % 2 else chr(0x400 + seed) * (size // 2))
        return out

    async def main() -> None:
        async with sa.serve(echo, LOCAL) as server:

            async def one(seed: int) -> None:
                async with await sa.connect(server.address) as stocking:
                    mine = messages(seed)
                    for message in mine:
                        await stocking.write(message)
                    assert [await stocking.read(timeout=20) for _ in mine] == mine

            await asyncio.gather(*(one(seed) for seed in range(1, 21)))

    run(main, loop=loop)


def test_a_burst_of_writes_leaves_in_a_few_sends_and_a_lone_write_at_once() -> None:
    async def main() -> None:
        async with sa.serve(echo, LOCAL) as server:
            stocking = await sa.connect(server.address)
            transport = stocking._connection.transport
            assert transport is not None
            writes: list[int] = []
            real_write = transport.write

            def counting_write(data: Any) -> None:
                writes.append(len(data))
                real_write(data)

            transport.write = counting_write  # type: ignore[method-assign]
            await asyncio.sleep(0.01)
            await stocking.write(b"lone")
            assert writes == [5], writes  # sent within the call, not at the end of the turn
            for i in range(1000):
                await stocking.write(b"%04d" % i)
            await asyncio.sleep(0)
            # The burst went out in a handful of sends (a preempted writer
            # may split it), not one per message.
            assert sum(writes) == 5 + 1000 * 5, writes
            assert len(writes) < 50, len(writes)
            for _ in range(1001):
                assert await stocking.read(timeout=10) is not None
            await stocking.close()

    run(main)


def test_a_failing_handler_is_logged_and_ends_only_its_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def picky(stocking: sa.Stocking) -> None:
        async for message in stocking:
            if message == "boom":
                raise ValueError("boom")
            await stocking.write(message)

    async def main() -> None:
        async with sa.serve(picky, LOCAL) as server:
            bad = await sa.connect(server.address)
            good = await sa.connect(server.address)
            await bad.write("boom")
            assert await bad.read(timeout=10) is None
            assert bad.end_reason is EndReason.RESET  # the failed handler's stocking aborts
            await good.write("fine")
            assert await good.read(timeout=10) == "fine"
            await good.close()
            await bad.close()

    with caplog.at_level("ERROR", logger="stockings.asyncio"):
        run(main)
    assert any("handler of the connection" in r.message for r in caplog.records)


def test_a_threaded_class_or_no_handler_is_named_before_anything_is_made() -> None:
    async def main() -> None:
        with pytest.raises(
            TypeError, match=r"^connect\(\): cls must be stockings\.asyncio\.Stocking"
        ):
            await sa.connect(LOCAL, cls=stockings.Stocking)  # type: ignore[arg-type]
        with pytest.raises(
            TypeError, match=r"^serve\(\): cls must be stockings\.asyncio\.Stocking"
        ):
            sa.serve(echo, LOCAL, cls=stockings.Stocking)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^serve\(\): handler must be callable, not str$"):
            sa.serve("echo", LOCAL)  # type: ignore[arg-type]

    run(main)
