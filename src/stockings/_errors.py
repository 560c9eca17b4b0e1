"""The exceptions stockings raises, and the reasons a stocking can end.

Errors say whose fault a failure is: :class:`MessageTooLarge` raised by
``write`` is the caller's, while the same class recorded as a stocking's
:attr:`~stockings.Stocking.end_exception` means the peer announced too much.
"""

from __future__ import annotations

import enum

__all__ = [
    "ConnectionClosed",
    "EndReason",
    "HandshakeFailed",
    "IncompleteMessage",
    "MessageTooLarge",
    "NotReady",
    "ProtocolError",
    "StockingError",
    "WriteTimeout",
    "check_iteration_end",
    "end_reason_for",
]


class StockingError(Exception):
    """Base class of every exception stockings raises on purpose."""


class NotReady(StockingError):
    """``read`` or ``write`` was called before the handshake completed.

    Kept from stockings 1.2.3: the stocking is usable once
    :attr:`~stockings.Stocking.handshake_complete` is true.
    """


class ConnectionClosed(StockingError):
    """The stocking has ended, so it can send nothing more.

    Attributes:
        reason: the :class:`EndReason` the stocking ended with.
    """

    def __init__(self, message: str, reason: EndReason | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class ProtocolError(StockingError):
    """The byte stream does not follow the stockings wire format.

    Raised (or recorded as the end exception) for a malformed header or a
    text message that is not valid UTF-8.
    """


class MessageTooLarge(ProtocolError):
    """A message is longer than the stocking's ``max_message_size``.

    From ``write`` it is the caller's message; as an end exception it is the
    peer's announcement, refused before any of its payload was stored.

    Attributes:
        size: the length that was refused, in bytes.
        limit: the limit in force.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class IncompleteMessage(ProtocolError):
    """The stream ended part way through a message; the partial message is dropped."""


class HandshakeFailed(StockingError):
    """The stocking's ``handshake`` returned false, raised or timed out, or TLS failed.

    For a failed TLS handshake the message starts "TLS handshake failed" and
    ``__cause__`` is the :class:`ssl.SSLError` (e.g. a certificate error).
    """


class WriteTimeout(StockingError, TimeoutError):
    """``write`` waited ``timeout`` seconds for the outbound queue to drain.

    The message that could not be queued was not sent.
    """


class EndReason(enum.Enum):
    """Why a stocking ended; see :attr:`~stockings.Stocking.end_reason`."""

    #: ``close()`` was called here; whatever was written before it was flushed.
    CLOSED = "closed"
    #: ``abort()`` (or ``close(flush=False)``) was called here; unsent data was dropped.
    ABORTED = "aborted"
    #: The peer closed the connection cleanly between two messages.
    PEER_CLOSED = "peer closed"
    #: The connection was reset or broken (ECONNRESET, EPIPE, ...).
    RESET = "connection reset"
    #: The peer broke the wire format (bad header, invalid UTF-8, cut message).
    PROTOCOL_ERROR = "protocol error"
    #: The peer announced a message over ``max_message_size``.
    MESSAGE_TOO_LARGE = "message too large"
    #: ``handshake`` returned false, raised or timed out, or the TLS handshake failed.
    HANDSHAKE_FAILED = "handshake failed"
    #: Nothing arrived from the peer within ``idle_timeout``, or a flush on close timed out.
    TIMEOUT = "timeout"
    #: Any other socket error; see ``end_exception``.
    ERROR = "error"

    @property
    def clean(self) -> bool:
        """True for the ends that lost nothing: a local close or the peer's clean close."""
        return self in (EndReason.CLOSED, EndReason.PEER_CLOSED)


_RESET_ERRORS = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


def end_reason_for(exc: BaseException) -> EndReason:
    """The end reason a socket error stands for."""
    if isinstance(exc, _RESET_ERRORS):
        return EndReason.RESET
    if isinstance(exc, TimeoutError):
        return EndReason.TIMEOUT
    return EndReason.ERROR


def check_iteration_end(reason: EndReason | None, exc: BaseException | None) -> None:
    """How iterating over a stocking ends: quietly after a clean end or an abort here.

    Raises:
        ConnectionClosed: after any other end, chained to ``exc``, its cause.
    """
    if reason is not None and not reason.clean and reason is not EndReason.ABORTED:
        raise ConnectionClosed(f"the stocking ended: {reason.value}", reason) from exc
