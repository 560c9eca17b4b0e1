"""What happens to stockings when the interpreter exits, or when one is dropped.

A stocking dropped without ``close()`` while its connection is still open
(it became unreachable, or a subclass's ``__init__`` raised after
``Stocking.__init__``) is aborted when it is collected, as ``socket.socket``
closes its descriptor, and a ``ResourceWarning`` names it. The hub holds
only the connection's :class:`~stockings._channel.Channel`, never the
stocking, so dropping the stocking is what lets the finalizer run.

Two hooks, each run once by the interpreter on its way out:

- Before it joins non-daemon threads (``threading._register_atexit``, which
  Python 3.9 and later call at the start of ``threading._shutdown``), every
  custom handshake still running is ended: its stocking ends with
  ``EndReason.HANDSHAKE_FAILED`` ("interpreter shutting down"), so that
  ``active`` turns false, a handshake loop that checks it returns, and the
  handshake thread (non-daemon, as in 1.2.3) no longer holds the exit.
- After every non-daemon thread has ended (``atexit``, while the daemon hub
  threads still run), each stocking with messages still queued to send gets
  its ``linger`` seconds to flush them; one that cannot is reset (RST), so
  the peer never takes a message cut short for a clean end. A stocking with
  nothing queued is left to the kernel, which sends what it holds (whole
  messages only) and then closes cleanly.
"""

from __future__ import annotations

import atexit
import functools
import os
import threading
import time
import warnings
import weakref
from typing import Any

from ._channel import Channel, _live_channels
from ._errors import EndReason, HandshakeFailed, WriteTimeout

__all__ = ["abandoned", "handshake_finished", "handshake_started", "watch_for_abandonment"]

#: Added to the longest linger while waiting at exit, for the hub threads
#: to act on a deadline they were given.
_GRACE = 1.0

_lock = threading.Lock()
_handshaking: set[Channel] = set()
_hooked = False


def handshake_started(channel: Channel) -> None:
    """Count a custom handshake in: it is ended if the interpreter exits first."""
    global _hooked
    with _lock:
        _handshaking.add(channel)
        if _hooked:
            return
        register = getattr(threading, "_register_atexit", None)
        if register is None:  # pragma: no cover - Python < 3.9, or another runtime
            return
        try:
            register(_end_handshakes)
        except RuntimeError:
            # The main thread has finished and the hook can no longer run:
            # this handshake belongs to a thread that keeps the process
            # alive on purpose, and runs to its end like any of its work.
            _handshaking.discard(channel)
            return
        _hooked = True


def handshake_finished(channel: Channel) -> None:
    """Count a custom handshake out, however it ended."""
    with _lock:
        _handshaking.discard(channel)


def _end_handshakes() -> None:
    # Run by threading._shutdown: it must not raise, or the interpreter
    # would skip joining the remaining threads.
    with _lock:
        channels = list(_handshaking)
        _handshaking.clear()
    for channel in channels:
        try:
            _end_handshake(channel)
        except Exception:  # pragma: no cover - a hub gone already
            pass


def _end_handshake(channel: Channel) -> None:
    failure = HandshakeFailed("interpreter shutting down")
    # The handshake thread sees the end (its reads return, ``active`` turns
    # false) and records it; the reason is already the right one.
    channel.end_soon(EndReason.HANDSHAKE_FAILED, failure)


def watch_for_abandonment(stocking: object, channel: Channel) -> weakref.finalize[Any, Any]:
    """Abort ``channel``, with a ResourceWarning, if ``stocking`` is dropped unclosed.

    The finalizer holds the channel, never the stocking; it does not run at
    interpreter exit, whose rules are :func:`_linger_at_exit`'s.
    """
    name = f"<{type(stocking).__name__} {channel.peer}>"
    finalizer = weakref.finalize(stocking, abandoned, channel, name)
    finalizer.atexit = False
    return finalizer


def abandoned(channel: Channel, name: str) -> None:
    """The stocking of ``channel`` was collected: abort the connection if it is open.

    A ``weakref.finalize`` callback, so it may run on any thread, at any
    allocation, while that thread holds any lock (the channel's, the
    hub's): it takes none, and leaves the abort to the hub thread. It is
    not called once the interpreter is exiting (``atexit=False``), so that
    exit keeps its own rules (see :func:`_linger_at_exit`).
    """
    if channel.close_requested or channel.ended:
        return  # closed, or over already: nothing left open
    try:
        channel.abort_from_any_thread()
    finally:
        # Last: with warnings turned into errors this raises, and the
        # connection must be on its way out all the same.
        warnings.warn(f"unclosed stocking {name}", ResourceWarning, stacklevel=2)


def _linger_at_exit() -> None:
    """Flush, within each one's ``linger``, the stockings with messages still queued."""
    lingering: list[Channel] = []
    longest: float | None = 0.0
    for channel in list(_live_channels):
        if channel.ended or not channel.started or not channel.has_unsent:
            continue
        linger = channel.linger
        try:
            channel.hub.call_soon(functools.partial(_begin_linger, channel, linger))
        except Exception:  # pragma: no cover - a hub gone already
            continue
        lingering.append(channel)
        longest = None if linger is None or longest is None else max(longest, linger)
    if not lingering:
        return
    deadline = None if longest is None else time.monotonic() + longest + _GRACE
    for channel in lingering:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        channel.inbox.wait_ended(remaining)


def _begin_linger(channel: Channel, linger: float | None) -> None:
    # On the hub thread: close() only starts the flush here, and a close
    # already under way goes on, bounded now by the linger as well.
    if channel.ended:
        return
    if not channel.close_requested:
        channel.close(flush=True, timeout=None)
    if linger is not None and not channel.ended:
        channel.hub.call_later(linger, functools.partial(_linger_ran_out, channel, linger))


def _linger_ran_out(channel: Channel, linger: float) -> None:
    if channel.ended:
        return
    # Something is still queued, so ending resets the connection.
    channel.end(
        EndReason.TIMEOUT,
        WriteTimeout(
            f"the interpreter exited with {channel.outbox.queued_bytes} bytes unsent"
            f" after lingering {linger} s"
        ),
    )


def _reset_after_fork() -> None:
    # The child has none of the parent's handshake threads (its copies of
    # their stockings are disowned), and the lock may have been copied held.
    global _lock
    _lock = threading.Lock()
    _handshaking.clear()


atexit.register(_linger_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
