"""Cancellation at every await point loses no message and leaks nothing.

``read`` takes a message only when it returns it, so a cancelled ``read``
leaves it for the next one. ``write`` queues its message whole before it
waits, so a cancelled ``write`` has queued it all: it is sent.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from typing import Any

import pytest
from aio import run, wait_for_condition

import stockings.asyncio as sa
from stockings import EndReason, encode

LOCAL = ("127.0.0.1", 0)

pytestmark = pytest.mark.timeout(60)


async def echo(stocking: sa.Stocking) -> None:
    async for message in stocking:
        await stocking.write(message)


async def started(task: asyncio.Task[Any]) -> None:
    """Let ``task`` run up to its first real wait."""
    for _ in range(5):
        await asyncio.sleep(0)
    assert not task.done()


def test_cancelled_read_loses_no_message() -> None:
    async def main() -> None:
        async with sa.serve(echo, LOCAL) as server:
            stocking = await sa.connect(server.address)
            for read in (stocking.read(), stocking.read(timeout=30)):
                task = asyncio.ensure_future(read)
                await started(task)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            await stocking.write("after")
            assert await stocking.read(timeout=10) == "after"
            await stocking.close()

    run(main)


def test_read_cancelled_as_its_message_arrives_leaves_it() -> None:
    async def main() -> None:
        async with sa.serve(echo, LOCAL) as server:
            stocking = await sa.connect(server.address)
            task = asyncio.ensure_future(stocking.read())
            await started(task)
            # The message lands and wakes the reader; the cancel comes first.
            stocking._connection.data_received(encode("kept"))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert stocking.read_nowait() == "kept"
            await stocking.close()

    run(main)


def test_cancelled_async_for_loses_no_message() -> None:
    async def main() -> None:
        async with sa.serve(echo, LOCAL) as server:
            stocking = await sa.connect(server.address)

            async def consume() -> None:
                async for _ in stocking:
                    pass

            task = asyncio.ensure_future(consume())
            await started(task)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await stocking.write(b"still here")
            assert await stocking.read(timeout=10) == b"still here"
            await stocking.close()

    run(main)


def test_cancelled_write_has_queued_its_whole_message() -> None:
    async def main() -> None:
        release = asyncio.Event()
        received: list[Any] = []

        async def slow(stocking: sa.Stocking) -> None:
            await release.wait()
            async for message in stocking:
                received.append(message)

        async with sa.serve(slow, LOCAL, read_high_water=1024) as server:
            client = await sa.connect(server.address, write_high_water=64 * 1024)
            sent = []
            while True:
                message = b"%08d" % len(sent) + b"x" * 8192
                task = asyncio.ensure_future(client.write(message))
                sent.append(message)
                await asyncio.sleep(0)
                if not task.done():
                    break
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            release.set()
            await client.close(timeout=30)
            assert client.end_reason is EndReason.CLOSED
            await wait_for_condition(lambda: len(received) == len(sent))
        assert received == sent

    run(main)


def test_cancelled_close_goes_on() -> None:
    async def main() -> None:
        async with sa.serve(echo, LOCAL) as server:
            stocking = await sa.connect(server.address)
            await stocking.write("bye")
            task = asyncio.ensure_future(stocking.close())
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await stocking.wait_closed()
            assert stocking.end_reason is EndReason.CLOSED

            other = await sa.connect(server.address)
            waiting = asyncio.ensure_future(other.wait_closed())
            await started(waiting)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert not other.ended
            await other.close()

    run(main)


def test_cancelled_connect_leaks_nothing() -> None:
    async def main() -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        try:
            # A peer that accepts (in the kernel) but never speaks: the
            # handshake waits, and is cancelled there.
            task = asyncio.ensure_future(
                sa.connect(
                    listener.getsockname(), cls=sa.AuthStocking, authkey=secrets.token_bytes(32)
                )
            )
            await asyncio.sleep(0.1)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # Cancelled while still connecting.
            task = asyncio.ensure_future(sa.connect(listener.getsockname()))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            listener.close()

    run(main)


def test_cancelled_handlers_and_server() -> None:
    async def main() -> None:
        async with sa.serve(echo, LOCAL) as server:
            forever = asyncio.ensure_future(server.serve_forever())
            stocking = await sa.connect(server.address)
            await stocking.write("x")
            assert await stocking.read(timeout=10) == "x"
            await wait_for_condition(lambda: len(server._tasks) == 1)
            for task in list(server._tasks):
                task.cancel()
            # A cancelled handler aborts its connection.
            assert await stocking.read(timeout=10) is None
            assert stocking.end_reason is EndReason.RESET
            forever.cancel()
            with pytest.raises(asyncio.CancelledError):
                await forever

    run(main)


def test_cancelled_handshake_read_aborts() -> None:
    class Stuck(sa.Stocking):
        async def handshake(self) -> Any:
            return await self._read()

    async def main() -> None:
        async with sa.serve(echo, LOCAL, cls=Stuck) as server:
            task = asyncio.ensure_future(sa.connect(server.address, cls=Stuck))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    run(main)
