"""stockings: send and receive whole messages over TCP sockets.

Wrap a connected socket in a :class:`Stocking`, ``write()`` a message, and
the peer's ``read()`` returns it whole. A background thread does the I/O.
Speaks the wire format of, and keeps the API of, Stockings 1.2.3.
"""

from __future__ import annotations

from ._auth import DEFAULT_HANDSHAKE_TIMEOUT, AuthStocking
from ._client import connect
from ._encoding import encode, encode_header
from ._errors import (
    ConnectionClosed,
    EndReason,
    HandshakeFailed,
    IncompleteMessage,
    MessageTooLarge,
    NotReady,
    ProtocolError,
    StockingError,
    WriteTimeout,
)
from ._flavours import SelectStocking
from ._framing import DEFAULT_MAX_MESSAGE_SIZE, Decoder
from ._hub import Hub
from ._server import Server
from ._stocking import Stocking
from ._wait import Waiter, wait

__version__ = "2.1.0"

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "AuthStocking",
    "ConnectionClosed",
    "Decoder",
    "EndReason",
    "HandshakeFailed",
    "Hub",
    "IncompleteMessage",
    "MessageTooLarge",
    "NotReady",
    "ProtocolError",
    "SelectStocking",
    "Server",
    "Stocking",
    "StockingError",
    "Waiter",
    "WriteTimeout",
    "__version__",
    "connect",
    "encode",
    "encode_header",
    "wait",
]

try:
    from ._flavours import PollStocking  # absent where select.poll is
except ImportError:  # pragma: no cover - Windows
    pass
else:
    __all__ += ["PollStocking"]
