"""A hostile or broken peer ends only its own connection on an asyncio server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Any

import pytest
from aio import LOOPS, run, wait_for_condition

import stockings.asyncio as sa
from stockings import ConnectionClosed, EndReason, IncompleteMessage, MessageTooLarge, encode

LOCAL = ("127.0.0.1", 0)

pytestmark = pytest.mark.timeout(60)


class Recorder:
    """A handler that echoes and records how each connection ended, by peer port."""

    def __init__(self) -> None:
        self.ends: dict[int, tuple[EndReason | None, BaseException | None]] = {}

    async def __call__(self, stocking: sa.Stocking) -> None:
        try:
            async for message in stocking:
                await stocking.write(message)
        except ConnectionClosed:
            pass
        self.ends[stocking.addr[1]] = (stocking.end_reason, stocking.end_exception)


async def still_served(address: Any) -> None:
    """A well-behaved client is answered while the hostile one does its worst."""
    async with await sa.connect(address) as good:
        for i in range(50):
            await good.write(f"fine {i}")
            assert await good.read(timeout=10) == f"fine {i}"


async def hostile(
    address: Any, data: bytes, *, reset: bool = False, trickle: float = 0.0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    """Send a good message, wait for its echo, then ``data``."""
    reader, writer = await asyncio.open_connection(*address)
    port = writer.get_extra_info("sockname")[1]
    writer.write(encode("ok"))
    assert await asyncio.wait_for(reader.readexactly(3), 10) == encode("ok")
    if trickle:
        for byte in data:
            try:
                writer.write(bytes((byte,)))
                await writer.drain()
            except ConnectionError:
                break  # the server gave up on us: that is the point
            await asyncio.sleep(trickle)
    else:
        writer.write(data)
        await writer.drain()
    if reset:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    return reader, writer, port


CASES = {
    "oversize header": (encode(b"x" * 2000)[:8], EndReason.MESSAGE_TOO_LARGE),
    "endless header": (b"\x00" * 20, EndReason.PROTOCOL_ERROR),
    "bad utf-8": (b"\x83\xff\xfe\xfd", EndReason.PROTOCOL_ERROR),
}


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_broken_stream_ends_only_its_connection(case: str, loop: str) -> None:
    data, reason = CASES[case]

    async def main() -> None:
        recorder = Recorder()
        async with sa.serve(recorder, LOCAL, max_message_size=1000) as server:
            reader, writer, port = await hostile(server.address, data)
            await still_served(server.address)
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
            await writer.wait_closed()
            await wait_for_condition(lambda: port in recorder.ends)
        end, exc = recorder.ends[port]
        assert end is reason
        if reason is EndReason.MESSAGE_TOO_LARGE:
            assert isinstance(exc, MessageTooLarge)

    run(main, loop=loop)


def test_reset_mid_message() -> None:
    async def main() -> None:
        recorder = Recorder()
        async with sa.serve(recorder, LOCAL) as server:
            _, writer, port = await hostile(server.address, encode(b"y" * 1000)[:300], reset=True)
            await still_served(server.address)
            await wait_for_condition(lambda: port in recorder.ends)
            writer.close()
        end, _ = recorder.ends[port]
        assert end in (EndReason.RESET, EndReason.PROTOCOL_ERROR)

    run(main)


def test_cut_inside_a_message() -> None:
    async def main() -> None:
        recorder = Recorder()
        async with sa.serve(recorder, LOCAL) as server:
            _, writer, port = await hostile(server.address, encode(b"y" * 1000)[:300])
            writer.close()
            await writer.wait_closed()
            await wait_for_condition(lambda: port in recorder.ends)
        end, exc = recorder.ends[port]
        assert end is EndReason.PROTOCOL_ERROR
        assert isinstance(exc, IncompleteMessage)

    run(main)


def test_slowloris_header_holds_up_no_one() -> None:
    async def main() -> None:
        recorder = Recorder()
        async with sa.serve(recorder, LOCAL) as server:
            slow = asyncio.ensure_future(hostile(server.address, b"\x00" * 12, trickle=0.02))
            await still_served(server.address)
            _, writer, port = await slow
            await wait_for_condition(lambda: port in recorder.ends)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        assert recorder.ends[port][0] is EndReason.PROTOCOL_ERROR

    run(main)


def test_silent_slowloris_is_cut_by_the_idle_timeout() -> None:
    async def main() -> None:
        recorder = Recorder()
        async with sa.serve(recorder, LOCAL, idle_timeout=0.3) as server:
            reader, writer, port = await hostile(server.address, b"\x00")
            assert await asyncio.wait_for(reader.read(), 10) == b""
            await wait_for_condition(lambda: port in recorder.ends)
            writer.close()
            await writer.wait_closed()
        assert recorder.ends[port][0] is EndReason.TIMEOUT

    run(main)


def test_replies_queued_before_a_half_close_still_arrive() -> None:
    replies = [bytes([i]) * 100_000 for i in range(100)]  # 10 MB: more than the kernel takes

    async def answer(stocking: sa.Stocking) -> None:
        await stocking.read()
        for reply in replies:
            await stocking.write(reply)
        assert stocking.queued_bytes > 0

    async def main() -> None:
        async with sa.serve(answer, LOCAL, write_high_water=64 << 20) as server:
            reader, writer = await asyncio.open_connection(*server.address)
            writer.write(encode("q"))
            first = await asyncio.wait_for(reader.readexactly(1), 10)
            writer.write_eof()  # the replies are all queued by now
            rest = await asyncio.wait_for(reader.read(), 10)
            assert first + rest == b"".join(encode(reply) for reply in replies)
            writer.close()
            await writer.wait_closed()

    run(main)
