"""Bytecodes per message: a count of the hot paths' work that does not move with load.

On a shared machine one timed run can be a third off the next, which hides
a change of a few percent. The number of bytecodes the interpreter runs per
message does not move: this script counts them, with a tracer, for

- **write**: one ``Stocking.write`` in a burst (every write after the first
  joins the batch, as in a stream), over a socket that takes whatever it is
  given, so that the count is the library's and not the kernel's;
- **decode**: one message cut out of a stream fed to the decoder in the
  hub's 256 KiB receives.

Each count runs in a child process, so that another checkout's ``src``
(``--baseline``) can be counted beside this one::

    python benchmarks/bytecodes.py
    python benchmarks/bytecodes.py --sizes 4096,65536 --baseline /tmp/old/src

Counts of writes may differ by a fraction of a percent from run to run
(the hub thread's start may meet the first writes). A bytecode is not a
fixed cost (a call or a copy is one step here), so this tells where a
change cuts the interpreter's work; the comparison benchmark
(``before_after.py``) tells what that buys.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SIZES = (16, 100, 4096, 16384, 65536)
# Messages counted per measure, after as many to warm up.
COUNTED = 200
# What the hub receives at once (``_hub.RECV_BUFFER_SIZE``).
RECEIVE_SIZE = 256 * 1024

Tracer = Callable[[FrameType, str, Any], Any]


class _TakesAll:
    """A socket that takes everything at once: the count is the library's, not the kernel's."""

    def sendmsg(self, buffers: Sequence[bytes]) -> int:
        return sum(map(len, buffers))

    def send(self, data: bytes) -> int:
        return len(data)


class _NoHub:
    """Takes the sender's requests for a flush and drops them.

    The writer sends each full batch itself; a flush on the hub's thread
    could land between any two traced bytecodes (a tracer is a call at
    each one) and make the count depend on timing.
    """

    def call_soon(self, callback: Callable[[], None]) -> None:
        pass

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        pass


def _counting(counts: Counter[str]) -> Tracer:
    def tracer(frame: FrameType, event: str, arg: Any) -> Tracer:
        frame.f_trace_opcodes = True
        if event == "opcode":
            counts[frame.f_code.co_name] += 1
        return tracer

    return tracer


def _traced(run: Callable[[], None]) -> int:
    counts: Counter[str] = Counter()
    # Python 3.12 instruments for opcode events only if a frame asks for
    # them before the tracer is set; this one emits none itself (no f_trace).
    sys._getframe().f_trace_opcodes = True
    sys.settrace(_counting(counts))
    try:
        run()
    finally:
        sys.settrace(None)
    return sum(counts.values())


def _count_writes(size: int) -> float:
    import socket

    import stockings
    from stockings import _outbox

    # Every write after the first is part of a burst, however slow the tracer.
    _outbox.BURST_GAP = float("inf")  # type: ignore[misc]
    # The tracer would send the writes down the locked path (a traced
    # thread may be switched out anywhere): count the lock-free one, which
    # an untraced writer takes. ``NoneType()`` is a C call returning None.
    _outbox.thread_trace = type(None)  # type: ignore[attr-defined]
    mine, other = socket.socketpair()
    with other:
        stocking = stockings.Stocking(mine)
        # Whatever the hub does for a new stocking is done before the
        # writes, which it could otherwise meet between two traced lines.
        settled = threading.Event()
        stocking._channel.hub.call_soon(settled.set)
        if not settled.wait(60):
            raise RuntimeError("the hub never ran a call")
        sender = stocking._channel.outbox._sender
        sender.sock = _TakesAll()  # type: ignore[assignment]
        sender.hub = _NoHub()  # type: ignore[assignment]
        message = b"x" * size
        write = stocking.write
        for _ in range(COUNTED):
            write(message)

        def run() -> None:
            for _ in range(COUNTED):
                write(message)

        count = _traced(run)
        stocking.abort()
    return count / COUNTED


def _count_decode(size: int) -> float:
    from stockings import Decoder, encode

    stream = encode(b"x" * size) * COUNTED
    chunks = [
        memoryview(stream)[at : at + RECEIVE_SIZE] for at in range(0, len(stream), RECEIVE_SIZE)
    ]
    Decoder(None).feed(stream)

    def run() -> None:
        decoder = Decoder(None)
        for chunk in chunks:
            decoder.feed(chunk)

    return _traced(run) / COUNTED


def _child(size: int) -> None:
    print(json.dumps({"write": _count_writes(size), "decode": _count_decode(size)}))


def _measure(src: Path, size: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(src))
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(size)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Count, and print one table (Markdown); 0 on success."""
    parser = argparse.ArgumentParser(prog="python benchmarks/bytecodes.py", description=__doc__)
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    parser.add_argument("--baseline", type=Path, help="another checkout's src folder")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        _child(args.child)
        return 0
    sizes = [int(size) for size in args.sizes.split(",")]
    sides = [("ours", ROOT / "src")]
    if args.baseline is not None:
        sides.append(("base", args.baseline.resolve()))
    header = ["size"] + [f"{what} ({side})" for what in ("write", "decode") for side, _ in sides]
    print("| " + " | ".join(header) + " |")
    print("| --- " + "| ---: " * (len(header) - 1) + "|")
    for size in sizes:
        counts = {side: _measure(src, size) for side, src in sides}
        cells = [f"{counts[side][what]:.1f}" for what in ("write", "decode") for side, _ in sides]
        print(f"| {size} | " + " | ".join(cells) + " |", flush=True)
    print(f"\nBytecodes per message, {COUNTED} counted after as many to warm up.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
