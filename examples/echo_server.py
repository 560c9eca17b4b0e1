"""An echo server: every message a client sends comes back to it.

One thread of yours serves every client: a Waiter reports the server when a
connection waits to be accepted and a stocking when a message waits to be
read or when it ended. Stop it with Ctrl-C (or SIGTERM).

    python examples/echo_server.py --port 8765
"""

from __future__ import annotations

import argparse
from typing import Any

import stockings
from _common import announce, stop_on_sigterm


def serve(server: stockings.Server[stockings.Stocking]) -> None:
    """Echo every message to its sender until the server is closed."""
    # The server and its clients wait together; Any, since wait() hands back either.
    waiter: stockings.Waiter[Any] = stockings.Waiter([server])
    with waiter:
        while not server.closed:
            for ready in waiter.wait():
                if ready is server:
                    while (client := server.accept(timeout=0)) is not None:
                        print(f"{client.addr} connected", flush=True)
                        waiter.add(client)
                    continue
                while (message := ready.read()) is not None:
                    ready.write(message)
                if ready.ended:
                    print(f"{ready.addr} left: {ready.end_reason.name}", flush=True)
                    waiter.discard(ready)
                    ready.close()


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
            pass  # the with block closes the server and every client


if __name__ == "__main__":
    main()
