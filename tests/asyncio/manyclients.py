"""Open many asyncio stockings to one server, from a process of their own.

Usage: ``python manyclients.py PORT COUNT``. Each connection writes one
message and waits for its echo; once all are answered the script prints
``ready``, waits for a line on stdin, closes them all and prints ``done``.
"""

from __future__ import annotations

import asyncio
import resource
import sys

import stockings.asyncio as sa

BATCH = 500


async def main(port: int, count: int) -> None:
    opened: list[sa.Stocking] = []

    async def one(i: int) -> None:
        stocking = await sa.connect(("127.0.0.1", port), timeout=60)
        opened.append(stocking)
        await stocking.write(b"%d" % i)
        reply = await stocking.read(timeout=60)
        if reply != b"%d" % i:
            raise SystemExit(f"manyclients: connection {i} got {reply!r}")

    for start in range(0, count, BATCH):
        await asyncio.gather(*(one(i) for i in range(start, min(count, start + BATCH))))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await asyncio.gather(*(stocking.close() for stocking in opened))
    print("done", flush=True)


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
