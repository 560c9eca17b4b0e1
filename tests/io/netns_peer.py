"""The peer of the network tests, run on the other host with ``ip netns exec``.

It listens on PEER_PORT, says ``ready`` on stdout, then serves in one of two
modes until its stdin closes:

- ``echo FLAVOUR``: every connection gets back each message it sends, until it ends.
- ``mixed FLAVOUR COUNT SEED LARGE_EVERY``: one connection; it sends COUNT
  mixed messages made from SEED while it receives COUNT messages, then prints
  ``digest SENT RECEIVED`` (the checksums of both streams) and waits for the
  other end to close.

``--tls CERT KEY`` serves TLS with that certificate chain and key. The module
also holds the message generator and the checksum, which the tests share.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import random
import socket
import ssl
import struct
import sys
import threading
from collections.abc import Iterator

import stockings

__all__ = ["PEER_PORT", "StreamDigest", "mixed_messages", "send_mixed"]

PEER_PORT = 7213
MIB = 1024 * 1024


@functools.cache
def _blocks() -> tuple[str, bytes]:
    """4 MiB of text and of bytes that messages are cut from (made on first use)."""
    # Mostly ASCII, with two- three- and four-byte UTF-8 characters sprinkled in.
    text = ("stockings sends whole messages é € 𝄞 " * (4 * MIB // 36 + 1))[: 4 * MIB]
    return text, random.Random(213).randbytes(4 * MIB)


def mixed_messages(seed: int, count: int, large_every: int = 20_000) -> Iterator[str | bytes]:
    """``count`` messages from 0 B to 4 MiB, text and bytes, the same for the same seed.

    Most are small, as in real traffic; one in a hundred is up to 32 KiB and
    one in ``large_every`` from 1 MiB to 4 MiB, the first of them exactly
    4 MiB. The first message is empty. About 40 MB for 100,000 messages.
    """
    text, data = _blocks()
    rng = random.Random(seed)
    large = 0
    for index in range(count):
        if index == 0:
            size = 0
        elif index % large_every == large_every // 2:
            size = 4 * MIB if large == 0 else rng.randint(MIB, 4 * MIB)
            large += 1
        elif rng.random() < 0.01:
            size = rng.randint(300, 32 * 1024)
        else:
            size = rng.randint(0, 300)
        start = rng.randint(0, 4 * MIB - size)
        if rng.random() < 0.5:
            yield text[start : start + size]
        else:
            yield data[start : start + size]


class StreamDigest:
    """A checksum of a sequence of messages: kind, length and content of each, in order."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.count = 0

    def add(self, message: str | bytes) -> None:
        if isinstance(message, str):
            data = message.encode()
            kind = b"T"
        else:
            data = bytes(message)
            kind = b"B"
        self._hash.update(kind + struct.pack(">Q", len(data)))
        self._hash.update(data)
        self.count += 1

    def hexdigest(self) -> str:
        return f"{self.count}:{self._hash.hexdigest()}"


def send_mixed(
    stocking: stockings.Stocking, seed: int, count: int, large_every: int, digest: StreamDigest
) -> None:
    """Write ``mixed_messages(seed, count, large_every)``, adding each to ``digest``."""
    for message in mixed_messages(seed, count, large_every):
        stocking.write(message)
        digest.add(message)


def _serve_mixed(stocking: stockings.Stocking, count: int, seed: int, large_every: int) -> None:
    sent = StreamDigest()
    sender = threading.Thread(
        target=send_mixed,
        args=(stocking, seed, count, large_every, sent),
        name="netns-peer-sender",
    )
    sender.start()
    received = StreamDigest()
    while received.count < count:
        message = stocking.read(timeout=None)
        if message is None:
            break
        received.add(message)
    sender.join()
    print("digest", sent.hexdigest(), received.hexdigest(), flush=True)
    # Stay until the other end has read everything and closes.
    while stocking.read(timeout=None) is not None:
        pass
    stocking.close()


def _serve_echo(stocking: stockings.Stocking) -> None:
    try:
        for message in stocking:
            stocking.write(message)
    except stockings.ConnectionClosed:
        pass
    stocking.close(flush=False)


def _exit_on_eof() -> None:
    sys.stdin.read()
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["echo", "mixed"])
    parser.add_argument("flavour")
    parser.add_argument("count", nargs="?", type=int, default=0)
    parser.add_argument("seed", nargs="?", type=int, default=0)
    parser.add_argument("large_every", nargs="?", type=int, default=20_000)
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = parser.parse_args()
    flavour: type[stockings.Stocking] = getattr(stockings, args.flavour)
    context = None
    if args.tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*args.tls)
    # Whatever happens to the test process, the peer ends with it: its
    # stdin is a pipe from the test, closed when the test process goes.
    threading.Thread(target=_exit_on_eof, name="netns-peer-stdin", daemon=True).start()
    listener = socket.create_server(("0.0.0.0", PEER_PORT))
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        if context is not None:
            conn = context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        stocking = flavour(conn)
        if args.mode == "mixed":
            _serve_mixed(stocking, args.count, args.seed, args.large_every)
            return
        threading.Thread(target=_serve_echo, args=(stocking,), name="netns-peer-echo").start()


if __name__ == "__main__":
    sys.exit(main())
