"""A channel's inbox, and the readers that take messages from it.

The channel hands whole messages to :meth:`Inbox.deliver` on the thread
that received them (the hub's, or a direct reader's, see ``_direct``);
``receive`` (any thread) takes them, popping without a lock while nobody
needs the inbox's state kept in step with a ``fileno()`` descriptor. Here
too: read-side flow control (past ``read_high_water`` unread bytes
``deliver`` says to stop reading, and readers have the hub resume once
they are below ``read_low_water``), waiting for a message, and telling
``fileno()`` and watchers when the channel may have become ready.

The :class:`Inbox` is one part of a :class:`~stockings._channel.Channel`,
which makes it and tells it, under :attr:`Inbox.lock`, what readers must
know of the connection: that it ended (:attr:`Inbox.ended`), that nothing
more will come (:attr:`Inbox.no_more`: ``close()`` was called or the peer
closed its side), that it stays open for replies (:attr:`Inbox.half_closed`).
The inbox asks the channel for two things only (:class:`InboxOwner`):
resuming reading on the hub thread, and checking for a socket closed
behind the stocking's back. It holds the channel weakly, so that the two
make no reference cycle. A waiting reader that may receive on its own
thread asks the channel's :class:`~stockings._direct.DirectReader`
(:attr:`Inbox.direct`).
:attr:`Inbox.lock` guards the channel's end state and waiting for the inbox.
"""

from __future__ import annotations

import math
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from threading import Lock
from typing import TYPE_CHECKING, Protocol

from ._buffers import Assembly
from ._common import _report
from ._framing import Message
from ._hub import Hub
from ._options import ChannelOptions
from ._signal import ReadySignal
from ._sync import LazyCondition

if TYPE_CHECKING:
    from ._direct import DirectReader

__all__ = ["ORPHAN_CHECK_INTERVAL", "Inbox", "InboxOwner"]

# What one turn of waiting tells ``receive`` (see ``_wait_once``).
_GIVE_UP, _DIRECT, _HUB = 0, 1, 2

#: How often a reader blocked without a deadline checks that nobody closed
#: the socket behind the stocking's back (an epoll hub is not told).
ORPHAN_CHECK_INTERVAL = 1.0


class InboxOwner(Protocol):
    """What an :class:`Inbox` asks of its channel."""

    def _resume_reading(self) -> None:
        """Watch the socket for reading again, unless paused anew (hub thread)."""

    def check_orphaned(self) -> None:
        """End the channel if its socket was closed behind its back (``Inbox.lock`` held)."""


class Inbox:
    """The messages one channel received and not yet read, and the readers waiting for them.

    Args:
        hub: the channel's hub (resuming reading is posted to it).
        options: the channel's options (read high and low water, ``half_close``).
        owner: the channel, held weakly.
        direct: the channel's direct reader, if a waiting reader may receive
            on its own thread.
    """

    __slots__ = (
        "_arrived",
        "_consumed",
        "_delivered",
        "_owner",
        "_readers_waiting",
        "_signal",
        "_signal_inbox",
        "_watchers",
        "deliveries",
        "direct",
        "ended",
        "half_closed",
        "hub",
        "interest_stale",
        "last_size",
        "lock",
        "messages",
        "messages_received",
        "no_more",
        "options",
        "paused",
    )

    def __init__(
        self,
        hub: Hub,
        options: ChannelOptions,
        owner: InboxOwner,
        direct: DirectReader | None,
    ) -> None:
        self.hub = hub
        self.options = options
        #: Asked to receive for a waiting reader; ``None``: never.
        self.direct = direct
        #: Guards the channel's end state, the readiness signal, the watchers
        #: and waiting for a message; a reader with a message waiting pops
        #: without it.
        self.lock = Lock()
        self._arrived = LazyCondition(self.lock)
        #: Messages, and large payloads the reader turns into bytes (Assembly).
        self.messages: deque[Message | Assembly] = deque()
        # Unread bytes are delivered minus consumed: the receiving thread adds
        # to the one, readers to the other, so a read takes no lock. Readers
        # racing each other may lose an addition, which can only overstate
        # what is unread; ``deliver`` counts exactly before it pauses reading.
        self._delivered = 0
        self._consumed = 0
        #: How many times messages were put in the inbox: a direct reader
        #: interrupted after receiving tells by it whether they got there.
        self.deliveries = 0
        #: Whole messages delivered, for anyone to read at any time.
        self.messages_received = 0
        #: The size of the last message delivered: the next is likely alike.
        self.last_size = 0
        #: Whether reading stopped at the high-water mark (``lock``).
        self.paused = False
        #: The hub must watch the socket for reading again: a direct reader
        #: interrupted while handing it back may not have made it so.
        self.interest_stale = False
        #: Set by the channel under ``lock``: it has ended; nothing more will
        #: arrive (``close()`` was called, or the peer closed its side); the
        #: peer closed its side and the channel stays open for replies.
        self.ended = False
        self.no_more = False
        self.half_closed = False
        self._readers_waiting = 0
        self._signal: ReadySignal | None = None
        # Whether ``fileno()`` readiness reflects the inbox yet (not during a handshake).
        self._signal_inbox = True
        # Called (under ``lock``) whenever the channel may have become ready;
        # see :meth:`watch`. ``None`` while nobody watches, to stay small.
        self._watchers: list[Callable[[], None]] | None = None
        self._owner: weakref.ref[InboxOwner] = weakref.ref(owner)

    # ------------------------------------------------------------ readers

    def receive(self, timeout: float | None = 0.0) -> Message | None:
        """Take the next message from the inbox.

        A signal handler's exception (``KeyboardInterrupt``) may come out of
        this call at any point; the message it was taking then stays first
        in the inbox, for the next call (see ``docs/topics/interrupts.md``).

        Args:
            timeout: 0 returns at once; a positive number waits up to that many
                seconds; ``None`` waits until a message arrives or the channel ends.

        Returns:
            The message, or ``None`` if none came in time or the channel has
            ended and its inbox is empty.
        """
        inbox = self.messages
        deadline = -1.0
        direct = True
        while True:
            if inbox:
                # Test, peek, then pop: nothing runs between them, no other
                # thread and no signal handler (CPython runs both only at
                # calls, function starts and loop jumps), and the message is
                # in hand before ``popleft()`` returns; a bare ``popleft()``
                # could lose it to an exception raised just after.
                message = inbox[0]
                try:
                    inbox.popleft()
                    self._consumed += len(message)
                    if self._signal is not None and not inbox:
                        self._clear_if_empty()
                    if self.paused:
                        self._resume_if_drained()
                    if isinstance(message, Assembly):
                        return message.finish()
                    return message
                except BaseException:
                    # Interrupted (or worse) before the message reached the
                    # caller: it goes back where it was, first in line.
                    inbox.appendleft(message)
                    self._after_give_back()
                    raise
            if timeout == 0 and not self.paused:
                if self._signal is not None and self._signal.is_set:
                    self._clear_if_empty()
                if self.interest_stale:
                    self._heal_interest()
                return None
            if deadline < 0:
                deadline = math.inf if timeout is None else time.monotonic() + timeout
                direct = self.direct is not None
            wait = self._wait_once(timeout == 0, deadline, direct)
            if wait == _GIVE_UP:
                return None
            direct = wait == _DIRECT

    def _wait_once(self, no_wait: bool, deadline: float, direct: bool) -> int:
        """One turn of waiting for a message (no lock held on entry or exit).

        Returns:
            ``_GIVE_UP`` when ``receive`` should return ``None``; else
            ``_DIRECT`` or ``_HUB``: look again, and for the next turn receive
            directly or wait on the hub.
        """
        inbox = self.messages
        reader = self.direct
        waiter = None
        with self.lock:
            if not inbox and self.paused:
                # All read, so nothing can be over the mark (the counts may
                # say otherwise after racing readers): read again before
                # waiting. Posted before the flag is cleared, so an
                # interrupt between leaves the pause for the next reader.
                self.hub.call_soon(self._resume_reading)
                self.paused = False
            if inbox:
                return _DIRECT if direct else _HUB
            if self._signal is not None and not self.ended:
                # Readiness a read interrupted after taking the last
                # message may have left set.
                self._signal.clear()
            wait = min(ORPHAN_CHECK_INTERVAL, deadline - time.monotonic())
            if self.ended or no_wait or self.no_more or wait <= 0:
                return _GIVE_UP
            # Counted for the length of this turn (a count an interrupt
            # leaves too high costs only a spare notify).
            self._readers_waiting += 1
            if not (direct and reader is not None and not reader.active):
                waiter = self._arrived.register()
        try:
            if waiter is None:
                assert reader is not None
                return _DIRECT if reader.read(None if deadline == math.inf else deadline) else _HUB
            if self.interest_stale:
                self._heal_interest()
            # Wait with no lock held: an interrupted wait has none to take back.
            notified = waiter.acquire(True, wait)
        finally:
            with self.lock:
                self._readers_waiting -= 1
                if waiter is not None:
                    self._arrived.forget(waiter)
        if not notified:
            owner = self._owner()
            if owner is not None:
                with self.lock:
                    owner.check_orphaned()
        return _DIRECT if direct else _HUB

    def _clear_if_empty(self) -> None:
        """Make ``fileno()`` unreadable if the inbox is empty (the channel still open)."""
        with self.lock:
            if not self.messages and not self.ended and self._signal is not None:
                self._signal.clear()

    def _after_give_back(self) -> None:
        """A read put messages back: ``fileno()`` must say so again."""
        if self._signal is not None:
            with self.lock:
                if self._signal is not None and self.messages and self._signal_inbox:
                    self._signal.set()

    def receive_all(self, timeout: float | None = 0.0) -> list[Message]:
        """Take every message waiting in the inbox, waiting for the first as ``receive`` does.

        Returns:
            The messages, oldest first; empty if none came in time.
        """
        first = self.receive(timeout)
        if first is None:
            return []
        messages = [first]
        try:
            receive = self.receive
            while (message := receive(0)) is not None:
                messages.append(message)
        except BaseException:
            # Interrupted: what was taken goes back, in order, first in line.
            self.messages.extendleft(messages[::-1])
            self._after_give_back()
            raise
        return messages

    def _resume_if_drained(self) -> None:
        with self.lock:
            if not self.paused:
                return
            # The counts may overstate what is unread (racing readers), but an
            # empty inbox never does: without this a reader that drained it
            # and then waits on wait() or fileno() would wait forever.
            if self.messages and self._delivered - self._consumed > self.options.read_low_water:
                return
            # Posted before the flag is cleared (see ``receive``).
            self.hub.call_soon(self._resume_reading)
            self.paused = False

    def _resume_reading(self) -> None:
        """Posted to the hub thread by a reader that drained the inbox."""
        owner = self._owner()
        if owner is not None:
            owner._resume_reading()

    def _heal_interest(self) -> None:
        """Make the hub watch the socket again after a direct reader's interrupted hand-back."""
        reader = self.direct
        if reader is not None:
            reader.heal_interest()

    def wait_ended(self, timeout: float | None) -> bool:
        """Wait until the channel has ended; return whether it has."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self.lock:
                if self.ended:
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                waiter = self._arrived.register()
            # Outside the lock, as in ``receive``.
            try:
                if remaining is None:
                    waiter.acquire()
                else:
                    waiter.acquire(True, remaining)
            finally:
                with self.lock:
                    self._arrived.forget(waiter)

    # ------------------------------------------------------- the channel's

    def deliver(self, messages: Sequence[Message | Assembly]) -> bool:
        """Put received messages in the inbox (the receiving thread).

        Returns:
            Whether the unread bytes are now over ``read_high_water``: the
            channel then stops reading (:attr:`paused` is set).
        """
        size = sum(map(len, messages))
        count = len(messages)
        self.last_size = len(messages[-1])
        with self.lock:
            # The messages, their size and the count of deliveries in one
            # step, without a call (``+=``, not ``extend``): a direct reader
            # interrupted on the main thread relies on it (``_direct``).
            self.messages += messages
            self._delivered += size
            self.deliveries += 1
            self.messages_received += count
            if self._readers_waiting:
                self._arrived.notify_all()
            if self._signal is not None and self._signal_inbox:
                self._signal.set()
            if self._watchers and self._signal_inbox:
                self._notify_watchers()
            if self._delivered - self._consumed <= self.options.read_high_water:
                return False
            # ``copy`` is one step for other threads, unlike iterating.
            unread = sum(map(len, self.messages.copy()))
            self._delivered = self._consumed + unread
            if unread <= self.options.read_high_water:
                return False
            self.paused = True
            # A lock-free reader pops first and checks the flag after; we
            # set the flag first and check the inbox after. One of the two
            # sees the other, so a pause never outlives the messages it was
            # waiting on.
            if not self.messages:
                self.paused = False
                return False
            return True

    def wake_readers(self) -> None:
        """Nothing more will arrive: wake every waiting reader (``lock`` held)."""
        self._arrived.notify_all()

    def announce(self) -> None:
        """Wake readers, ``fileno()`` and watchers: the channel is ready with no message.

        For its end, and a peer's close with ``half_close`` (``lock`` held).
        """
        self._arrived.notify_all()
        if self._signal is not None:
            self._signal.set()
        if self._watchers:
            self._notify_watchers()

    def disown(self) -> None:
        """In a forked child: fresh lock, nothing to read, no descriptor (see the channel's)."""
        self.lock = Lock()
        self._arrived = LazyCondition(self.lock)
        self._readers_waiting = 0
        self.messages.clear()
        self._delivered = self._consumed = 0
        self._watchers = None
        signal, self._signal = self._signal, None
        if signal is not None:
            signal.close()

    # ------------------------------------------------------------ readiness

    @property
    def unread_bytes(self) -> int:
        """Payload size of the messages received but not yet read (characters for text)."""
        return sum(map(len, self.messages.copy()))

    def readiness_fd(self) -> int:
        """A descriptor readable while a message waits or the channel has ended."""
        with self.lock:
            if self._signal is None:
                self._signal = ReadySignal()
                if self.ended or self.half_closed or (self.messages and self._signal_inbox):
                    self._signal.set()
            return self._signal.fileno()

    def set_signal_inbox(self, enabled: bool) -> None:
        """Let ``fileno()`` readiness follow the inbox (off during a handshake)."""
        with self.lock:
            self._signal_inbox = enabled
            if self._signal is not None and enabled and self.messages:
                self._signal.set()
            if self._watchers and enabled and self.messages:
                self._notify_watchers()

    def release_signal(self) -> None:
        """Close the ``fileno()`` descriptor, if one was made."""
        with self.lock:
            if self._signal is not None:
                self._signal.close()

    @property
    def ready(self) -> bool:
        """True while a message waits to be read (handshake done) or the channel has ended.

        With ``half_close``, also once the peer has closed its side.
        """
        return self.ended or self.half_closed or bool(self.messages and self._signal_inbox)

    def watch(self, callback: Callable[[], None]) -> bool:
        """Call ``callback`` whenever the channel may have become :attr:`ready`.

        The callback runs on whichever thread made the change, with the
        inbox's lock held: it must be quick, must not block and must not
        call back into the channel. It may be called when nothing changed.

        Returns:
            Whether the channel is ready now; checked atomically with the
            registration, so no change between the two goes unnoticed.
        """
        with self.lock:
            if self._watchers is None:
                self._watchers = [callback]
            else:
                self._watchers.append(callback)
            return self.ready

    def unwatch(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback``; a no-op if it is not watching."""
        with self.lock:
            watchers = self._watchers
            if watchers is None:
                return
            try:
                watchers.remove(callback)
            except ValueError:
                return
            if not watchers:
                self._watchers = None

    def _notify_watchers(self) -> None:
        assert self._watchers is not None
        for callback in tuple(self._watchers):
            try:
                callback()
            except Exception as exc:  # pragma: no cover - our own callbacks
                _report(exc)
