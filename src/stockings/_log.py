"""The library's loggers, silent until the application configures logging.

``stockings`` is the root of the hierarchy (a ``NullHandler`` is attached
to it, as the logging HOWTO asks of libraries); below it:

- ``stockings.connection``: DEBUG when a connection opens, finishes its TLS
  handshake and ends (with its reason and what went in and out); WARNING
  when a peer broke the protocol or announced an oversize message.
- ``stockings.server``: DEBUG for each connection accepted; ERROR when a
  handler raised.
- ``stockings.hub``: ERROR when a hub's loop met an error, or a callback
  of the library's own raised.

Records that concern one connection carry its peer as ``extra={"peer": ...}``,
so a formatter or filter can use ``%(peer)s``.
"""

from __future__ import annotations

import logging

from ._errors import EndReason

__all__ = [
    "connection_log",
    "hub_log",
    "log_connection_end",
    "log_opened",
    "log_unexpected",
    "root_log",
    "server_log",
]

root_log = logging.getLogger("stockings")
root_log.addHandler(logging.NullHandler())
connection_log = logging.getLogger("stockings.connection")
server_log = logging.getLogger("stockings.server")
hub_log = logging.getLogger("stockings.hub")


def log_unexpected(exc: BaseException, what: str = "unexpected error") -> None:
    """Log an exception nobody else will see, with its traceback, at ERROR."""
    hub_log.error("%s: %r", what, exc, exc_info=(type(exc), exc, exc.__traceback__))


# Ends the peer caused by breaking the wire format: worth an operator's notice.
_PEERS_FAULTS = frozenset({EndReason.PROTOCOL_ERROR, EndReason.MESSAGE_TOO_LARGE})


def log_opened(peer: str, kind: str) -> None:
    """Say that a connection to ``peer`` opened, as a ``kind`` (a class name)."""
    if connection_log.isEnabledFor(logging.DEBUG):
        connection_log.debug("%s: opened (%s)", peer, kind, extra={"peer": peer})


def log_connection_end(
    peer: str,
    reason: EndReason,
    exc: BaseException | None,
    received: tuple[int, int],
    sent: tuple[int, int],
) -> None:
    """Log a connection's end: at WARNING if the peer broke the protocol, and at DEBUG.

    ``received`` and ``sent`` are (messages, bytes) counts.
    """
    if reason in _PEERS_FAULTS:
        connection_log.warning(
            "%s: the peer broke the protocol: %s", peer, exc, extra={"peer": peer}
        )
    if connection_log.isEnabledFor(logging.DEBUG):
        detail = f" ({exc!r})" if exc is not None else ""
        connection_log.debug(
            "%s: ended: %s%s; in: %d messages, %d bytes; out: %d messages, %d bytes",
            peer,
            reason.value,
            detail,
            *received,
            *sent,
            extra={"peer": peer},
        )
