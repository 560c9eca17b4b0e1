"""stockings for asyncio: whole messages over TCP from coroutines, on the same wire.

``await connect(address)`` returns a :class:`Stocking`; ``async with
serve(handler, address) as server`` runs ``handler(stocking)`` as one task
per connection. Same wire format, limits, hooks, end reasons and
exceptions as the threaded :class:`stockings.Stocking`, so either end may
be threaded, asyncio or Stockings 1.2.3. No thread: the event loop does
the I/O, through an ``asyncio.Protocol`` driving the sans-IO connection
core that the threaded stockings' rules are written in too.
"""

from __future__ import annotations

from .._errors import (
    ConnectionClosed,
    EndReason,
    HandshakeFailed,
    MessageTooLarge,
    NotReady,
    ProtocolError,
    StockingError,
)
from ._auth import AuthStocking
from ._client import connect
from ._server import Server, serve
from ._stocking import Stocking

__all__ = [
    "AuthStocking",
    "ConnectionClosed",
    "EndReason",
    "HandshakeFailed",
    "MessageTooLarge",
    "NotReady",
    "ProtocolError",
    "Server",
    "Stocking",
    "StockingError",
    "connect",
    "serve",
]
