"""Send a large file in chunks, with a progress bar; the receiver checks it whole.

The sender writes a JSON header (name and size), then the file as 256 KiB
``bytes`` messages, then an empty ``bytes`` message to mark the end. ``write``
blocks while more than ``write_high_water`` waits to be sent, so memory stays
bounded however large the file, and the progress bar follows what the
network really took. The receiver answers with the SHA-256 of what it got.

    python examples/send_file.py receive --port 8765 --into /tmp/incoming
    python examples/send_file.py send 127.0.0.1:8765 big.iso
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import stockings
from _common import announce, host_port, stop_on_sigterm

CHUNK = 256 * 1024


def progress(done: int, total: int, width: int = 40) -> None:
    """Draw a progress bar on stderr, in place."""
    filled = width * done // total if total else width
    percent = 100 * done // total if total else 100
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {percent:3d}%", end="", file=sys.stderr)


def send(address: tuple[str, int], path: Path) -> int:
    size = path.stat().st_size
    digest = hashlib.sha256()
    # A small high-water mark makes the bar follow the network, not the disk.
    with stockings.connect(address, timeout=10, write_high_water=1024 * 1024) as stocking:
        stocking.write(json.dumps({"name": path.name, "size": size}))
        sent = 0
        with path.open("rb") as file:
            while chunk := file.read(CHUNK):
                stocking.write(chunk)  # blocks while the queue is full
                digest.update(chunk)
                sent += len(chunk)
                progress(max(0, sent - stocking.queued_bytes), size)
        stocking.write(b"")  # the end of the file
        answer = stocking.read(timeout=60)
        progress(size, size)
        print(file=sys.stderr)
    if answer != digest.hexdigest():
        print(f"the receiver got something else: {answer!r}", file=sys.stderr)
        return 1
    print(f"sent {path.name}: {size} bytes, sha256 {answer}")
    return 0


def receive_one(stocking: stockings.Stocking, folder: Path) -> None:
    first = stocking.read(timeout=60)
    if not isinstance(first, str):
        raise ConnectionError(f"expected the file's description as text, got {first!r:.40}")
    header = json.loads(first)
    target = folder / Path(header["name"]).name  # never a path from the peer
    digest = hashlib.sha256()
    with target.open("wb") as file:
        while (chunk := stocking.read(timeout=60)) is not None and chunk != b"":
            if isinstance(chunk, str):
                raise ConnectionError("expected the file's bytes, got a text message")
            file.write(chunk)
            digest.update(chunk)
    stocking.write(digest.hexdigest())
    print(f"received {target.name}: {target.stat().st_size} bytes", flush=True)


def receive(port: int, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with stockings.Server(("127.0.0.1", port)) as server:
        announce(server.address)
        for stocking in server:
            with stocking:
                receive_one(stocking, folder)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    receive_parser = commands.add_parser("receive")
    receive_parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    receive_parser.add_argument("--into", type=Path, default=Path("."))
    send_parser = commands.add_parser("send")
    send_parser.add_argument("address", type=host_port, metavar="HOST:PORT")
    send_parser.add_argument("path", type=Path)
    args = parser.parse_args()
    if args.command == "send":
        return send(args.address, args.path)
    stop_on_sigterm()
    try:
        receive(args.port, args.into)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
