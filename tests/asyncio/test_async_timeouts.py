"""Asyncio waits: no bound as ``None``, ``inf`` or a huge number; the rest is refused."""

from __future__ import annotations

import math

import pytest
from aio import run

import stockings.asyncio as sa
from stockings import EndReason

LOCAL = ("127.0.0.1", 0)


async def echo(stocking: sa.Stocking) -> None:
    async for message in stocking:
        await stocking.write(message)


@pytest.mark.parametrize("no_bound", [math.inf, 1e300])
def test_connect_read_and_close_without_bound(no_bound: float) -> None:
    async def main() -> None:
        async with sa.serve(echo, LOCAL) as server:
            stocking = await sa.connect(server.address, timeout=no_bound)
            await stocking.write(b"echo me")
            assert await stocking.read(no_bound) == b"echo me"
            await stocking.close(timeout=no_bound)
            assert stocking.end_reason is EndReason.CLOSED

    run(main)


def test_a_timeout_that_is_no_number_of_seconds_is_refused_before_anything_happens() -> None:
    async def main() -> None:
        async with sa.serve(echo, LOCAL) as server:
            with pytest.raises(ValueError, match="not NaN"):
                await sa.connect(server.address, timeout=math.nan)
            stocking = await sa.connect(server.address)
            with pytest.raises(
                ValueError, match=r"^timeout must be a number of seconds or None, not NaN$"
            ):
                await stocking.read(math.nan)
            with pytest.raises(TypeError, match="not str"):
                await stocking.read("1")  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="not str"):
                await stocking.close(timeout="1")  # type: ignore[arg-type]
            assert stocking.active
            await stocking.write(b"still open")
            assert await stocking.read(10) == b"still open"
            await stocking.close()
            assert stocking.end_reason is EndReason.CLOSED

    run(main)


def test_an_idle_timeout_of_inf_is_none() -> None:
    async def main() -> None:
        async with sa.serve(echo, LOCAL) as server:
            stocking = await sa.connect(server.address, idle_timeout=math.inf)
            await stocking.write(b"x")
            assert await stocking.read(10) == b"x"
            await stocking.close()
            assert stocking.end_reason is EndReason.CLOSED

    run(main)
