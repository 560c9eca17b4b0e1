"""Back-pressure both ways: a slow reader pushes back through TCP to the writer."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from aio import LOOPS, run, wait_for_condition

import stockings.asyncio as sa
from stockings import EndReason, WriteTimeout

LOCAL = ("127.0.0.1", 0)
MIB = 1 << 20

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_slow_reader_pushes_back_through_tcp(loop: str) -> None:
    messages = [bytes([i % 256]) * (256 * 1024) for i in range(160)]  # 40 MiB

    async def main() -> None:
        served: asyncio.Future[sa.Stocking] = asyncio.get_running_loop().create_future()
        release = asyncio.Event()
        received: list[Any] = []

        async def slow(stocking: sa.Stocking) -> None:
            served.set_result(stocking)
            await release.wait()
            async for message in stocking:
                received.append(message)

        options = {"read_high_water": MIB, "write_high_water": MIB}
        async with sa.serve(slow, LOCAL, **options) as server:
            client = await sa.connect(server.address, **options)

            async def write_all() -> None:
                for message in messages:
                    await client.write(message)
                await client.close(timeout=30)

            writer = asyncio.ensure_future(write_all())
            reader = await served
            # The reader stops reading past its mark, the kernel buffers fill,
            # and the writer ends up waiting with its own queue at its mark.
            await wait_for_condition(lambda: not reader._protocol.reading_wanted)
            await wait_for_condition(lambda: bool(client._connection._writers))
            assert not writer.done()
            assert reader.unread_bytes <= MIB + len(messages[0])
            assert client.queued_bytes > client._protocol.options.write_low_water
            release.set()
            await asyncio.wait_for(writer, 30)
            await wait_for_condition(lambda: len(received) == len(messages), 30)
        assert received == messages

    run(main, loop=loop)


def test_writers_wait_at_the_high_mark_and_go_on_at_the_low_one() -> None:
    async def main() -> None:
        async def never_reads(stocking: sa.Stocking) -> None:
            await stocking.wait_closed()

        async with sa.serve(never_reads, LOCAL, read_high_water=1024) as server:
            client = await sa.connect(
                server.address, write_high_water=64 * 1024, write_low_water=16 * 1024
            )
            chunk = b"x" * 8192
            written = 0
            while True:
                task = asyncio.ensure_future(client.write(chunk))
                await asyncio.sleep(0)
                if not task.done():
                    break
                written += 1
                assert written < 100_000, "write never waited"
            assert client.queued_bytes > 64 * 1024
            client.abort()
            await task  # an abort releases the waiting writer
            await client.wait_closed()

    run(main)


def test_close_gives_up_on_a_peer_that_never_reads() -> None:
    async def main() -> None:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            stocking = await sa.connect(listener.getsockname(), write_high_water=64 * MIB)
            peer, _ = listener.accept()
            with peer:
                for _ in range(40):
                    await stocking.write(b"x" * MIB)  # far more than the kernel buffers
                await asyncio.wait_for(stocking.close(timeout=0.5), 10)
                assert stocking.end_reason is EndReason.TIMEOUT
                assert isinstance(stocking.end_exception, WriteTimeout)

    run(main)
