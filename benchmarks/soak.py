"""Soak test: many stocking pairs, many messages of random sizes, nothing lost.

Not part of the unit suite. Run it as::

    python benchmarks/soak.py                      # 8 pairs, 1,000,000 messages
    python benchmarks/soak.py --messages 100000    # a shorter run

Every pair talks both ways at once over loopback TCP, flavours taking turns.
Sizes run from 0 B to 4 MiB, skewed toward small (most messages are under
1 KiB, one in a thousand is over 1 MiB) so that a million messages finish in
minutes on two cores; one message in eight is text. Each direction keeps a
running CRC-32 of the type, length and payload of every message, computed
by the writer and by the reader independently, and the two must agree. At
the end every stocking is closed, and the run fails if a stockings thread or
a descriptor is left behind. Prints the time taken, the throughput and the
peak resident memory (``ru_maxrss``); exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import socket
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field

import stockings
from stockings import EndReason, Stocking

__all__ = ["main"]

MiB = 1024 * 1024
#: (probability, smallest, largest): the size classes messages are drawn from.
SIZE_CLASSES = [
    (0.900, 0, 1024),
    (0.090, 1024, 64 * 1024),
    (0.009, 64 * 1024, MiB),
    (0.001, MiB, 4 * MiB),
]
TEXT_EVERY = 8
#: A read waiting longer than this means something is stuck.
STALL_TIMEOUT = 120.0

_RANDOM_BLOCK = random.Random(1).randbytes(4 * MiB + 1)
# Mixed-width characters, so text lengths in bytes and in characters differ.
_TEXT_BLOCK = "".join(random.Random(2).choices("abcxyz é€𝄞\n", k=64 * 1024)) * 64


def flavours() -> list[type[Stocking]]:
    kinds: list[type[Stocking]] = [stockings.Stocking, stockings.SelectStocking]
    poll = getattr(stockings, "PollStocking", None)
    if poll is not None:
        kinds.insert(1, poll)
    return kinds


def draw_size(rng: random.Random, max_size: int) -> int:
    roll = rng.random()
    for probability, low, high in SIZE_CLASSES:
        if roll < probability:
            return min(rng.randint(low, high), max_size)
        roll -= probability
    return 0


def make_message(rng: random.Random, index: int, max_size: int) -> bytes | str:
    size = draw_size(rng, max_size)
    if index % TEXT_EVERY == 0:
        start = rng.randrange(len(_TEXT_BLOCK) - size + 1)
        # Characters, not bytes: a text message may encode to up to 4x its length.
        return _TEXT_BLOCK[start : start + size // 4]
    start = rng.randrange(len(_RANDOM_BLOCK) - size)
    return _RANDOM_BLOCK[start : start + size]


def fold(crc: int, message: bytes | str) -> int:
    """Fold a message's type, length and payload into a running CRC-32."""
    payload = message.encode() if isinstance(message, str) else message
    tag = b"s" if isinstance(message, str) else b"b"
    crc = zlib.crc32(tag + len(payload).to_bytes(8, "little"), crc)
    return zlib.crc32(payload, crc)


@dataclass
class Direction:
    """One direction of one pair: what was sent, what arrived."""

    name: str
    count: int
    seed: int
    sent_crc: int = 0
    received_crc: int = 0
    sent_bytes: int = 0
    received: int = 0
    errors: list[str] = field(default_factory=list)


def writer(stocking: Stocking, direction: Direction, max_size: int) -> None:
    rng = random.Random(direction.seed)
    try:
        for index in range(direction.count):
            message = make_message(rng, index, max_size)
            direction.sent_crc = fold(direction.sent_crc, message)
            direction.sent_bytes += len(message)
            stocking.write(message)
    except Exception as exc:
        direction.errors.append(f"writer: {exc!r}")


def reader(stocking: Stocking, direction: Direction) -> None:
    try:
        for _ in range(direction.count):
            message = stocking.read(timeout=STALL_TIMEOUT)
            if message is None:
                direction.errors.append(
                    f"reader: nothing for {STALL_TIMEOUT} s after {direction.received} "
                    f"messages (ended: {stocking.end_reason})"
                )
                return
            direction.received_crc = fold(direction.received_crc, message)
            direction.received += 1
    except Exception as exc:
        direction.errors.append(f"reader: {exc!r}")


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


def open_fds() -> int:
    for path in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(path):
            return len(os.listdir(path))
    return -1


def library_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("stockings-")]


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (MiB if sys.platform == "darwin" else 1024)


def run(messages: int, pairs: int, max_size: int, seed: int) -> int:
    fds_before = open_fds()
    rss_before = peak_rss_mib()
    kinds = flavours()
    per_direction = messages // (2 * pairs)
    ends: list[tuple[Stocking, Stocking, type[Stocking]]] = []
    directions: list[Direction] = []
    threads: list[threading.Thread] = []
    for index in range(pairs):
        kind = kinds[index % len(kinds)]
        a, b = tcp_pair()
        left, right = kind(a), kind(b)
        ends.append((left, right, kind))
        for name, src, dst in (("->", left, right), ("<-", right, left)):
            direction = Direction(
                f"pair {index} ({kind.__name__}) {name}",
                per_direction,
                seed * 1000 + len(directions),
            )
            directions.append(direction)
            threads.append(threading.Thread(target=writer, args=(src, direction, max_size)))
            threads.append(threading.Thread(target=reader, args=(dst, direction)))
    total = per_direction * len(directions)
    print(
        f"soak: {pairs} pairs, {total:,} messages of 0 B - {max_size / MiB:g} MiB, "
        f"flavours {', '.join(k.__name__ for k in kinds)}",
        flush=True,
    )
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    while alive := [thread for thread in threads if thread.is_alive()]:
        alive[0].join(10)
        done = sum(d.received for d in directions)
        elapsed = time.perf_counter() - started
        print(f"  {elapsed:7.1f} s  {done:>10,} / {total:,} received", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started

    failures: list[str] = []
    for direction in directions:
        failures += [f"{direction.name}: {error}" for error in direction.errors]
        if direction.received != direction.count:
            failures.append(f"{direction.name}: {direction.received} of {direction.count} arrived")
        elif direction.received_crc != direction.sent_crc:
            failures.append(f"{direction.name}: checksum mismatch")
    for left, right, kind in ends:
        left.close()
        right.close()
        if (
            left.end_reason is not EndReason.CLOSED
            or not right.end_reason
            or (not right.end_reason.clean)
        ):
            failures.append(
                f"{kind.__name__}: ended {left.end_reason} / {right.end_reason}, not cleanly"
            )
    deadline = time.monotonic() + 10
    while (library_threads() or open_fds() > fds_before) and time.monotonic() < deadline:
        threading.Event().wait(0.05)
    if library_threads():
        failures.append(f"threads left behind: {library_threads()}")
    if open_fds() > fds_before:
        failures.append(f"descriptors left behind: {open_fds() - fds_before}")

    payload = sum(d.sent_bytes for d in directions)
    print(f"messages      {total:,} ({payload / MiB:,.0f} MiB of payload, checksummed)")
    print(f"time          {elapsed:,.1f} s")
    print(f"throughput    {total / elapsed:,.0f} messages/s, {payload / MiB / elapsed:,.1f} MiB/s")
    print(f"peak memory   {peak_rss_mib():,.0f} MiB ru_maxrss (before the run: {rss_before:,.0f})")
    print(f"leaks         threads {len(library_threads())}, fds {open_fds() - fds_before:+d}")
    if failures:
        print("FAIL")
        for failure in failures:
            print(f"  {failure}")
        return 1
    print("PASS")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the soak; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000, help="total, both ways")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--max-size", type=int, default=4 * MiB, help="largest message, bytes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return run(args.messages, args.pairs, args.max_size, args.seed)


if __name__ == "__main__":
    sys.exit(main())
