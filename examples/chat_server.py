"""A chat server: every message a client sends goes to every other client.

A client's first message is its name; the server announces arrivals and
departures. Try it with two terminals running ``stockings cat``:

    python examples/chat_server.py --port 8765
    stockings cat 127.0.0.1:8765
"""

from __future__ import annotations

import argparse
from typing import Any

import stockings
from _common import announce, stop_on_sigterm


class Room:
    """The clients of a chat, and their names once they gave one."""

    def __init__(self) -> None:
        self.names: dict[stockings.Stocking, str | None] = {}

    def join(self, client: stockings.Stocking) -> None:
        self.names[client] = None

    def leave(self, client: stockings.Stocking) -> None:
        name = self.names.pop(client)
        client.close()
        if name is not None:
            self.broadcast(f"* {name} left")

    def receive(self, client: stockings.Stocking, message: object) -> None:
        text = message if isinstance(message, str) else repr(message)
        name = self.names[client]
        if name is None:
            self.names[client] = text
            client.write(f"* welcome, {text}")
            self.broadcast(f"* {text} joined", sender=client)
        else:
            self.broadcast(f"{name}: {text}", sender=client)

    def broadcast(self, text: str, sender: stockings.Stocking | None = None) -> None:
        for client, name in self.names.items():
            if client is not sender and name is not None and client.active:
                client.write(text)


def serve(server: stockings.Server[stockings.Stocking]) -> None:
    """Relay messages between the server's clients until it is closed."""
    room = Room()
    # The server and its clients wait together; Any, since wait() hands back either.
    waiter: stockings.Waiter[Any] = stockings.Waiter([server])
    with waiter:
        while not server.closed:
            for ready in waiter.wait():
                if ready is server:
                    while (client := server.accept(timeout=0)) is not None:
                        room.join(client)
                        waiter.add(client)
                    continue
                for message in ready.read_all():
                    room.receive(ready, message)
                if ready.ended:
                    waiter.discard(ready)
                    room.leave(ready)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    args = parser.parse_args()
    stop_on_sigterm()
    with stockings.Server((args.host, args.port)) as server:
        announce(server.address)
        try:
            serve(server)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
