"""``stockings serve``: an echo (or printing) server for trying stockings by hand.

One thread serves every client: a :class:`~stockings.Waiter` wakes it when
the server has a connection to hand over or a client has messages (or has
ended), so there is no thread per client and no polling. Notices (who
came, who left and why, with times) go to stderr; ``--print`` writes each
message, with its peer, to stdout.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from ._cli_common import (
    CliError,
    describe_end,
    describe_error,
    server_tls,
    stocking_class,
    timestamp,
)
from ._cli_output import one_line
from ._client import describe_address
from ._errors import ConnectionClosed, EndReason, StockingError
from ._server import Server
from ._stocking import Stocking
from ._wait import Waiter

__all__ = ["run_serve"]

#: The most characters of one message ``--print`` shows.
PRINT_LIMIT = 1000


@dataclass
class Client:
    """What the server remembers of one connection, for its notices."""

    name: str
    since: float = field(default_factory=time.monotonic)
    received: int = 0
    sent: int = 0


#: The server's own notices; they go where the library's log records go.
serve_log = logging.getLogger("stockings.serve")


class _Notices(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes records to stderr as ``[time] text``; never raises on a closed stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(f"[{timestamp()}] {self.format(record)}\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass


def log_to_stderr(verbose: bool) -> logging.Handler:
    """Send the ``stockings`` log to stderr: notices and warnings, or everything."""
    handler = _Notices()
    root = logging.getLogger("stockings")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    return handler


def log(text: str) -> None:
    """A notice on stderr, with the time (through the ``stockings.serve`` logger)."""
    serve_log.info(text)


def _peer(stocking: Stocking) -> str:
    return describe_address(stocking.addr)


def _show(message: Any) -> str:
    is_text = isinstance(message, str)
    text = one_line(message) if is_text else repr(bytes(message[: PRINT_LIMIT + 1]))
    if len(text) > PRINT_LIMIT:
        text = f"{text[:PRINT_LIMIT]}... ({len(message):,} in all)"
    return text


def _print_message(client: Client, message: Any) -> None:
    kind = "text" if isinstance(message, str) else "bytes"
    line = f"[{timestamp()}] {client.name} {kind}: {_show(message)}\n"
    sys.stdout.write(line)
    sys.stdout.flush()


def _serve_client(stocking: Stocking, client: Client, echo: bool, show: bool) -> None:
    """Take every message that waits, echoing or printing each."""
    while True:
        message = stocking.read()
        if message is None:
            return
        client.received += 1
        if show:
            _print_message(client, message)
        if echo:
            try:
                stocking.write(message)
            except ConnectionClosed:
                continue  # gone already; the messages left are still shown
            client.sent += 1


def run_serve(args: argparse.Namespace) -> int:
    """Run ``stockings serve``; see its ``--help``."""
    echo = args.echo or not args.print
    log_to_stderr(args.verbose)
    context = server_tls(args)
    cls, kwargs = stocking_class(args, server_side=True)
    # A client that half-closes (nc -N) still gets the echo of what it sent.
    kwargs["half_close"] = True
    address = (args.host, args.port)
    try:
        server: Server[Any] = Server(address, cls=cls, ssl=context, **kwargs)
    except (OSError, ValueError) as exc:
        where = describe_address(address)
        raise CliError(f"cannot listen on {where}: {describe_error(exc)}") from exc
    clients: dict[Stocking, Client] = {}
    waiter: Waiter[Any] = Waiter([server])
    try:
        what = "echo" if echo and not args.print else "print" if not echo else "echo and print"
        tls = " over TLS" if context is not None else ""
        auth = " with an authkey" if args.authkey_file else ""
        log(f"listening on {describe_address(server.address)}{tls}{auth} ({what})")
        while True:
            for ready in waiter.wait():
                if ready is server:
                    _accept(server, waiter, clients)
                    continue
                stocking: Stocking = ready
                client = clients[stocking]
                if stocking.handshake_complete:
                    _serve_client(stocking, client, echo, args.print)
                    if stocking.peer_closed and not stocking.ended:
                        # Half-closed: the replies above still go out first.
                        stocking.close()
                if not stocking.ended or (stocking.handshake_complete and stocking.unread_bytes):
                    continue
                waiter.discard(stocking)
                del clients[stocking]
                stocking.close()
                why = describe_end(stocking)
                if stocking.end_reason is EndReason.CLOSED and stocking.peer_closed:
                    why = "peer closed"  # closed here only once the peer had
                lasted = time.monotonic() - client.since
                log(
                    f"{client.name} left after {lasted:.1f} s: {why}"
                    f" ({client.received} messages in, {client.sent} out)"
                )
                if args.once:
                    return 0
    finally:
        waiter.close()
        server.close()


def _accept(server: Server[Any], waiter: Waiter[Any], clients: dict[Stocking, Client]) -> None:
    if server.failure is not None:
        raise CliError(f"stopped listening: {describe_error(server.failure)}")
    try:
        stocking = server.accept(timeout=0)
    except (OSError, StockingError, ValueError) as exc:
        log(f"a connection failed before it started: {describe_error(exc)}")
        return
    if stocking is None:
        return
    client = Client(_peer(stocking))
    clients[stocking] = client
    waiter.add(stocking)
    log(f"{client.name} connected")
