"""What the parts of a channel share.

:class:`~stockings._channel.Channel` is assembled from parts, one job
each (the ``_outbox``, ``_inbox`` and ``_direct`` objects); the
constants two of them must agree on live here, where each can import them
without importing the channel itself.
"""

from __future__ import annotations

from ._log import log_unexpected

__all__ = [
    "LARGE_PAYLOAD",
    "_DELIVERED",
    "_LIVE",
    "_NOTHING",
    "_PARTIAL",
    "_RELEASED",
    "_STOPPED",
    "_UNREGISTERED",
    "_report",
]

#: Payloads this large are sent without copying them into the header's buffer
#: and received into a buffer of their own.
LARGE_PAYLOAD = 64 * 1024
# Where the selector's interest in a socket stands (``Interest.state``, under its lock).
_UNREGISTERED, _LIVE, _RELEASED = 0, 1, 2
# What one receive achieved (see ``Receiver.receive``).
_STOPPED, _NOTHING, _PARTIAL, _DELIVERED = -1, 0, 1, 2


def _report(exc: BaseException) -> None:  # pragma: no cover - our own callbacks
    log_unexpected(exc, "a callback of a connection raised")
