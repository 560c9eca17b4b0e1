"""What the library's other layers may ask of a stocking's connection.

A :class:`~stockings.Server` and :func:`~stockings._close_all.close_all`
need a stocking's hub, its end and a close that does not wait. A stocking
hands them its channel as ``_served``, typed by this narrow protocol, so
that none of them reaches into the channel's parts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["Served"]


class Served(Protocol):
    """A stocking's connection, as the layers beside it see it."""

    #: The hub serving the connection; ``close`` on its thread does not wait.
    hub: Hub

    def on_end(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (quick) on the hub thread once it has ended, or now if it has."""

    def close(self, flush: bool = True, timeout: float | None = None) -> None:
        """End it; on the hub thread, begin flushing for up to ``timeout`` without waiting."""
