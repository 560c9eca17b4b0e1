"""Telling ``fileno()`` and watchers that a channel may have become ready.

Most stockings are only ever read: they need no descriptor and nobody
watches them. So an inbox (``_inbox``) makes a :class:`Readiness` only once
``fileno()`` is asked for, a :class:`~stockings.Waiter` watches, or a
handshake holds readiness back, and until then pays one ``is None`` test
per delivery for all of it. What readiness means (a message waits, or the
channel has ended) is the inbox's to say; this keeps the descriptor and the
callbacks that follow it.
"""

from __future__ import annotations

from collections.abc import Callable

from ._common import _report
from ._signal import ReadySignal

__all__ = ["Readiness"]


class Readiness:
    """The ``fileno()`` descriptor and the watchers of one inbox.

    Not thread-safe by itself: the inbox calls it with its lock held, and
    reads :attr:`signal`, :attr:`watchers` and :attr:`follows_inbox` itself
    where it delivers, to spare that path a call.
    """

    __slots__ = ("follows_inbox", "signal", "watchers")

    def __init__(self) -> None:
        #: Made by the first ``fileno()``; ``None`` until then.
        self.signal: ReadySignal | None = None
        #: Called whenever the channel may have become ready (see
        #: :meth:`Inbox.watch <stockings._inbox.Inbox.watch>`); ``None``
        #: while nobody watches.
        self.watchers: list[Callable[[], None]] | None = None
        #: Whether readiness follows the inbox yet (not during a handshake).
        self.follows_inbox = True

    @property
    def idle(self) -> bool:
        """Nothing to tell anyone: the inbox may drop this object."""
        return self.signal is None and not self.watchers and self.follows_inbox

    def fileno(self, ready: bool) -> int:
        """The descriptor, made now if need be, readable if ``ready``."""
        if self.signal is None:
            self.signal = ReadySignal()
            if ready:
                self.signal.set()
        return self.signal.fileno()

    def set(self) -> None:
        """The channel may have become ready: make the descriptor readable, tell watchers."""
        if self.signal is not None:
            self.signal.set()
        if self.watchers:
            self.notify()

    def clear(self) -> None:
        """Make the descriptor unreadable again, if there is one."""
        if self.signal is not None:
            self.signal.clear()

    def close(self) -> None:
        """Release the descriptor, if one was made."""
        if self.signal is not None:
            self.signal.close()

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever the channel may have become ready (see :meth:`set`).

        The callback runs on whichever thread made the change, with the
        inbox's lock held: it must be quick, must not block and must not
        call back into the channel. It may be called when nothing changed.
        """
        if self.watchers is None:
            self.watchers = [callback]
        else:
            self.watchers.append(callback)

    def unwatch(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback``; a no-op if it is not watching."""
        watchers = self.watchers
        if watchers is None:
            return
        try:
            watchers.remove(callback)
        except ValueError:
            return
        if not watchers:
            self.watchers = None

    def notify(self) -> None:
        """Call every watcher."""
        assert self.watchers is not None
        for callback in tuple(self.watchers):
            try:
                callback()
            except Exception as exc:  # pragma: no cover - our own callbacks
                _report(exc)
