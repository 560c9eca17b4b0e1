"""Ten thousand connections on one event loop."""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aio import run, wait_for_condition

import stockings.asyncio as sa
from stockings import EndReason

COUNT = 10_000
CLIENTS = Path(__file__).resolve().parent / "manyclients.py"
ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def enough_descriptors() -> Iterator[None]:
    """Raise the soft descriptor limit to the hard one for the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < COUNT + 200:
        pytest.skip(f"the descriptor limit ({hard}) is below {COUNT + 200}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("enough_descriptors")
def test_ten_thousand_connections_on_one_loop() -> None:
    async def main() -> None:
        ends: list[EndReason | None] = []

        async def echo(stocking: sa.Stocking) -> None:
            async for message in stocking:
                await stocking.write(message)
            ends.append(stocking.end_reason)

        async with sa.serve(echo, ("127.0.0.1", 0), backlog=4096) as server:
            env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
            clients = await asyncio.create_subprocess_exec(
                sys.executable,
                str(CLIENTS),
                str(server.address[1]),
                str(COUNT),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
            try:
                assert clients.stdout is not None and clients.stdin is not None
                line = await asyncio.wait_for(clients.stdout.readline(), 240)
                assert line == b"ready\n", line
                assert len(server.stockings) == COUNT
                clients.stdin.write(b"go\n")
                await clients.stdin.drain()
                assert await asyncio.wait_for(clients.stdout.readline(), 60) == b"done\n"
                await wait_for_condition(lambda: len(ends) == COUNT, 60)
            finally:
                if clients.returncode is None:
                    clients.kill()
                await clients.wait()
        assert set(ends) == {EndReason.PEER_CLOSED}

    # Debug mode would triple the time; every other test runs in it.
    run(main, timeout=290, debug=False)
