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

__all__ = ["connection_log", "hub_log", "log_unexpected", "root_log", "server_log"]

root_log = logging.getLogger("stockings")
root_log.addHandler(logging.NullHandler())
connection_log = logging.getLogger("stockings.connection")
server_log = logging.getLogger("stockings.server")
hub_log = logging.getLogger("stockings.hub")


def log_unexpected(exc: BaseException, what: str = "unexpected error") -> None:
    """Log an exception nobody else will see, with its traceback, at ERROR."""
    hub_log.error("%s: %r", what, exc, exc_info=(type(exc), exc, exc.__traceback__))
