"""A Stockings 1.2.3 endpoint, run in a subprocess by ``test_interop_123.py``.

Stockings 1.2.3's package is named ``Stockings``, like our compatibility
module, so it cannot share a process with us: this script runs with
``PYTHONPATH`` pointing at an install of 1.2.3 alone, connects to the port a
test listens on, and plays one of these parts with 1.2.3's own API:

``echo``
    Send every message back as it arrived. An empty message is answered with
    ``"EMPTY str"`` or ``"EMPTY bytes"``, because 1.2.3's writer silently
    drops empty messages. Ends when the test closes the connection.
``handshake``
    The 1.2.3 README's ``MyStocking`` handshake (send our id, poll ``_read()``
    for the peer's), then send ``"remote id: <theirs>"`` and echo.
``script``
    Send :func:`scripted_messages` (empty ones included: 1.2.3 drops them),
    then ``"END"``, wait for the test's ``"DONE"``, and close.

Usage: ``python peer123.py echo|handshake|script PollStocking|SelectStocking PORT``.
Exits 0 on success; prints what went wrong to stderr otherwise.
"""

from __future__ import annotations

import select
import socket
import sys
import threading
import time
from typing import Any

__all__ = ["PEER_ID", "SIZES", "scripted_messages"]

#: Message sizes across the varint boundaries 1.2.3 can take in one piece
#: (its pipes deadlock on bursts of large messages, so stay near 100 KiB).
SIZES = [0, 1, 63, 64, 127, 128, 8191, 8192, 8193, 65535, 65536, 100_000]

#: How long the peer waits for anything before giving up.
DEADLINE = 30.0
#: The id the ``handshake`` part sends.
PEER_ID = "peer-1.2.3"


def scripted_messages() -> list[str | bytes]:
    """The messages the ``script`` part sends, in order (both ends build them the same)."""
    messages: list[str | bytes] = []
    for size in SIZES:
        messages.append(bytes((size + i) % 256 for i in range(size)))
        messages.append("ж" * (size // 2) + "s" * (size % 2))  # ``size`` bytes of UTF-8
    messages += ["plain ascii", b"\x00\xff\x80\xc0", "", b"", "after the empties ✓"]
    return messages


def _wait(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"peer123: timed out waiting for {what}")
        threading.Event().wait(0.002)


def _next_message(stocking: Any) -> Any:
    """The next message, waiting on 1.2.3's ``fileno()``; ``None`` once it has ended."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            message = stocking.read()
        except EOFError:
            # 1.2.3's read() raises this once its thread has ended and the
            # pipe holding the received messages is drained.
            return None
        if message is not None:
            return message
        select.select([stocking], [], [], 0.05)
    raise SystemExit("peer123: timed out waiting for a message")


def _echo(stocking: Any) -> None:
    while True:
        message = _next_message(stocking)
        if message is None:
            return
        if len(message) == 0:
            stocking.write("EMPTY " + type(message).__name__)
        else:
            stocking.write(message)


def _script(stocking: Any) -> None:
    for message in scripted_messages():
        stocking.write(message)
        # One at a time: 1.2.3 deadlocks when its pipe to the I/O thread fills.
        _wait(lambda: not stocking.writeDataQueued(), "the message to go out")
    stocking.write("END")
    reply = _next_message(stocking)
    if reply != "DONE":
        raise SystemExit(f"peer123: expected 'DONE', got {reply!r}")


def main(argv: list[str]) -> int:
    part, flavour, port = argv[1], argv[2], int(argv[3])
    import Stockings  # 1.2.3, from PYTHONPATH

    if not Stockings.__file__ or "stockings123" not in Stockings.__file__:
        raise SystemExit(f"peer123: imported the wrong Stockings: {Stockings.__file__}")
    sock = socket.create_connection(("127.0.0.1", port))
    base = getattr(Stockings, flavour)
    if part == "handshake":

        class MyStocking(base):
            uniqueID = PEER_ID

            def handshake(self) -> bool:
                # The 1.2.3 README's example, as 1.2.3 users wrote it.
                self._write(str(self.uniqueID))
                while self.active:
                    read = self._read()
                    if read is not None:
                        self.remoteID = read
                        return True
                return False

        stocking = MyStocking(sock)
    else:
        stocking = base(sock)
    _wait(lambda: stocking.handshakeComplete, "the handshake")
    try:
        if part == "echo":
            _echo(stocking)
        elif part == "handshake":
            stocking.write("remote id: " + stocking.remoteID)
            _echo(stocking)
        elif part == "script":
            _script(stocking)
        else:
            raise SystemExit(f"peer123: unknown part {part!r}")
    finally:
        stocking.close()
    print("peer123: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
