"""The authenticated handshake: only peers holding the shared key get through.

Both ends read the key from a file (32 random bytes or more). Before any
application message, each proves to the other that it holds the same key;
a peer that cannot is dropped with ``EndReason.HANDSHAKE_FAILED``.

    python -c "import secrets; open('key', 'wb').write(secrets.token_bytes(32))"
    python examples/auth.py serve --key-file key --port 8765
    python examples/auth.py connect 127.0.0.1:8765 --key-file key hello
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import stockings
from _common import announce, host_port, stop_on_sigterm


def serve(key: bytes, port: int) -> None:
    # Keyword arguments of Server go to each connection's stocking.
    with stockings.Server(
        ("127.0.0.1", port), cls=stockings.AuthStocking, authkey=key, server_side=True
    ) as server:
        announce(server.address)
        for client in server:
            with client:
                if not client.wait_handshake(15):
                    print(f"refused {client.addr}: {client.end_exception}", flush=True)
                    continue
                for message in client:
                    text = message if isinstance(message, str) else message.decode(errors="replace")
                    client.write(f"authenticated echo: {text}")


def connect(key: bytes, address: tuple[str, int], messages: list[str]) -> int:
    with stockings.connect(
        address, timeout=10, cls=stockings.AuthStocking, authkey=key, server_side=False
    ) as stocking:
        if not stocking.wait_handshake(15):
            print(f"handshake failed: {stocking.end_exception}", file=sys.stderr)
            return 1
        for message in messages:
            stocking.write(message)
            print(stocking.read(timeout=10))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["serve", "connect"])
    parser.add_argument("address", nargs="?", type=host_port, metavar="HOST:PORT")
    parser.add_argument("messages", nargs="*")
    parser.add_argument("--key-file", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8765, help="serve: 0 picks a free port")
    args = parser.parse_args()
    key = args.key_file.read_bytes()
    if args.command == "connect":
        if args.address is None:
            parser.error("connect needs HOST:PORT")
        return connect(key, args.address, args.messages)
    stop_on_sigterm()
    try:
        serve(key, args.port)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
