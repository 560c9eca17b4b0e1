"""The stocking flavours whose hubs wait with ``select`` or ``poll`` rather than epoll.

Each flavour has hubs of its own (its stockings share one unless told
otherwise), made with its selector; a :class:`~stockings.Stocking` and its
subclasses wait with epoll where there is one.
"""

from __future__ import annotations

import os
import select
import selectors

from ._stocking import Stocking
from ._typing import ReadT, WriteP

__all__ = ["PollStocking", "SelectStocking"]


class SelectStocking(Stocking[ReadT, WriteP]):
    """A stocking whose hub waits with ``select.select``: works everywhere, Windows too.

    Its hub wakes on a socket pair when there is data to send, so it never
    polls; ``STOCKING_SELECT_SEND_INTERVAL`` (seconds), if set when the
    stocking is made, only bounds how long one wait may last.
    """

    flavour = "select"
    selector_factory = selectors.SelectSelector

    @classmethod
    def _max_wait(cls) -> float | None:
        interval = os.environ.get("STOCKING_SELECT_SEND_INTERVAL")
        if not interval:
            return None
        try:
            value = float(interval)
        except ValueError:
            return None
        return value if value > 0 else None


if hasattr(select, "poll"):

    class PollStocking(Stocking[ReadT, WriteP]):
        """A stocking whose hub waits with ``select.poll``."""

        flavour = "poll"
        selector_factory = selectors.PollSelector
