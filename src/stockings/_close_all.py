"""Closing many stockings at once, as a server's ``close()`` closes its clients.

Closed one after the other, each stocking would flush while the rest
waited; here every one starts its flush on its hub thread first, and then
each is waited for.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._hub import Hub
    from ._stocking import Stocking

__all__ = ["close_all"]


def close_all(clients: Sequence[Stocking[Any, ...]], timeout: float | None) -> None:
    """Close many stockings at once rather than one after the other."""
    by_hub: dict[Hub, list[Stocking[Any, ...]]] = {}
    for stocking in clients:
        by_hub.setdefault(stocking._served.hub, []).append(stocking)
    for hub, group in by_hub.items():
        # On the hub thread a close only starts the flush, so every client
        # flushes at the same time; below we wait for them one by one.
        hub.call_soon(functools.partial(_start_closes, group, timeout))
    for stocking in clients:
        stocking.close(timeout=timeout)


def _start_closes(stockings: list[Stocking[Any, ...]], timeout: float | None) -> None:
    for stocking in stockings:
        stocking._served.close(flush=True, timeout=timeout)
