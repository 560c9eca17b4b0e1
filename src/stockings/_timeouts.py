"""Timeouts as callers give them, judged once where they come in.

A caller may say "no bound" as ``None``, as ``math.inf`` or as a number of
seconds too large to matter. The waits underneath take only the first: a
lock refuses more than ``threading.TIMEOUT_MAX`` seconds, and ``select``,
``poll`` and socket timeouts overflow their C types (``OverflowError``). A
wait that fails so part way through a ``close()`` or in a hub's loop would
leave work half done, so every timeout of the public API is turned here into
``None`` or a finite number of seconds before anything else happens, and
what is no number of seconds at all is refused with an error naming it.
"""

from __future__ import annotations

import numbers
import threading

__all__ = ["LONGEST_SLEEP", "NO_BOUND_AFTER", "bounded", "option_seconds"]

#: A timeout longer than this (a year, or less where locks cannot wait so
#: long) is no bound at all: ``None``.
NO_BOUND_AFTER = min(threading.TIMEOUT_MAX, 365 * 24 * 3600.0)
#: The longest one wait of a hub's loop lasts, whatever its timers say: a
#: day, as asyncio's loop. It then looks at its timers again and sleeps on.
LONGEST_SLEEP = 24 * 3600.0


def bounded(timeout: object, name: str = "timeout") -> float | None:
    """Return ``timeout`` as ``None`` (no bound) or a finite number of seconds.

    A negative number stays as it is: it waits for nothing, as ``0`` does.

    Raises:
        TypeError: ``timeout`` is neither ``None`` nor a real number (a
            ``bool`` is refused too: ``True`` seconds is a slip).
        ValueError: ``timeout`` is NaN.
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds or None, not {type(timeout).__name__}")
    seconds = float(timeout)
    if seconds != seconds:
        raise ValueError(f"{name} must be a number of seconds or None, not NaN")
    if seconds > NO_BOUND_AFTER:
        return None
    return seconds


def option_seconds(value: object, name: str) -> float | None:
    """As :func:`bounded`, for an option: a negative number is refused too.

    Raises:
        TypeError: as :func:`bounded`.
        ValueError: ``value`` is NaN or negative.
    """
    seconds = bounded(value, name)
    if seconds is not None and seconds < 0:
        raise ValueError(f"{name} must be a number of seconds, 0 or more, or None")
    return seconds
