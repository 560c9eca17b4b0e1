"""Request/response with JSON: a stocking subclass that sends and returns objects.

``pre_write`` turns what ``write`` is given into the text that is sent, and
``post_read`` turns each message received into what ``read`` returns, so the
rest of the program deals in dictionaries only.

    python examples/json_rpc.py serve --port 8765
    python examples/json_rpc.py call 127.0.0.1:8765 add 2 3
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
from collections.abc import Callable
from typing import Any

import stockings
from _common import announce, host_port, stop_on_sigterm


class JsonStocking(stockings.Stocking[Any, [Any]]):
    """A stocking whose messages are JSON documents."""

    def pre_write(self, obj: Any) -> str:
        return json.dumps(obj, separators=(",", ":"))

    def post_read(self, message: Any) -> Any:
        return json.loads(message)


METHODS: dict[str, Callable[..., Any]] = {
    "add": lambda *numbers: sum(numbers),
    "upper": str.upper,
}


def answer(request: dict[str, Any]) -> dict[str, Any]:
    """The response to one request: its result, or an error saying what went wrong."""
    method = METHODS.get(request.get("method", ""))
    if method is None:
        return {"id": request.get("id"), "error": f"no method {request.get('method')!r}"}
    try:
        return {"id": request["id"], "result": method(*request.get("params", []))}
    except Exception as exc:  # the caller's bad parameters, reported to the caller
        return {"id": request.get("id"), "error": f"{type(exc).__name__}: {exc}"}


def serve_client(client: JsonStocking) -> None:
    with client:
        for request in client:  # until the client closes the connection
            client.write(answer(request))


def serve(port: int) -> None:
    with stockings.Server(("127.0.0.1", port), cls=JsonStocking) as server:
        announce(server.address)
        for client in server:
            # One thread per client keeps the example short; see the chat
            # server for one thread serving every client.
            threading.Thread(target=serve_client, args=(client,), daemon=True).start()


class Client:
    """Calls methods on a server and waits for each answer."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.stocking = stockings.connect(address, timeout=10, cls=JsonStocking)
        self.ids = itertools.count(1)

    def call(self, method: str, *params: Any) -> Any:
        request_id = next(self.ids)
        self.stocking.write({"id": request_id, "method": method, "params": params})
        response = self.stocking.read(timeout=10)
        if response is None:
            raise ConnectionError(f"no answer: {self.stocking.end_reason}")
        if "error" in response:
            raise RuntimeError(response["error"])
        return response["result"]

    def close(self) -> None:
        self.stocking.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve")
    serve_parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    call_parser = commands.add_parser("call")
    call_parser.add_argument("address", type=host_port, metavar="HOST:PORT")
    call_parser.add_argument("method")
    call_parser.add_argument("params", nargs="*", type=json.loads, help="JSON values")
    args = parser.parse_args()
    if args.command == "serve":
        stop_on_sigterm()
        try:
            serve(args.port)
        except KeyboardInterrupt:
            pass
        return 0
    client = Client(args.address)
    try:
        print(json.dumps(client.call(args.method, *args.params)))
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
