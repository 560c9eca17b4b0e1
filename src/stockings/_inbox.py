"""A channel's inbox, and the readers that take messages from it.

The hub thread (or a direct reader, see ``_direct``) hands whole messages
to ``_deliver``, which puts them in the inbox; ``receive`` (any thread)
takes them, popping without a lock while nobody needs the inbox's state
kept in step with a ``fileno()`` descriptor. Here too: read-side flow
control (past ``read_high_water`` unread bytes the hub stops reading, and
resumes once readers are below ``read_low_water``), waiting for a message,
and telling ``fileno()`` and watchers when the channel may have become
ready. ``_in_lock`` guards the end state and waiting for the inbox.
"""

from __future__ import annotations

import errno
import functools
import math
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from threading import Lock
from typing import TYPE_CHECKING

from ._buffers import Assembly
from ._common import _LIVE, _report
from ._errors import EndReason
from ._framing import Message
from ._hub import Hub
from ._options import ChannelOptions
from ._signal import ReadySignal
from ._sync import LazyCondition

__all__ = ["ORPHAN_CHECK_INTERVAL", "InboxMixin"]

# What one turn of waiting tells ``receive`` (see ``_wait_once``).
_GIVE_UP, _DIRECT, _HUB = 0, 1, 2

#: How often a reader blocked without a deadline checks that nobody closed
#: the socket behind the stocking's back (an epoll hub is not told).
ORPHAN_CHECK_INTERVAL = 1.0


class InboxMixin:
    """The reading half of :class:`~stockings._channel.Channel`."""

    # Set by ``Channel.__init__``, which documents them.
    sock: socket.socket
    hub: Hub
    options: ChannelOptions
    inbox: deque[Message | Assembly]
    ended: bool
    _in_lock: Lock
    _interest_lock: Lock
    _interest_state: int
    _interest_stale: bool
    _deliveries: int
    _arrived: LazyCondition
    _delivered: int
    _last_size: int
    _consumed: int
    messages_received: int
    _read_paused: bool
    _readers_waiting: int
    _signal: ReadySignal | None
    _signal_inbox: bool
    _watchers: list[Callable[[], None]] | None
    _reading: bool
    _reads_directly: bool
    _direct_reader: bool
    _started: bool
    _orphaned: bool
    _close_requested: bool
    _peer_eof: bool

    if TYPE_CHECKING:
        # Channel's own, on the hub thread.
        def _set_interest(self) -> None: ...
        def _resume_reading(self) -> None: ...
        def _end(self, reason: EndReason, exc: BaseException | None = None) -> None: ...

        # DirectReadMixin's.
        def _read_directly(self, deadline: float | None) -> bool: ...
        def _apply_interest_for_reader(self) -> bool: ...

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
        inbox = self.inbox
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
                    if self._read_paused:
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
            if timeout == 0 and not self._read_paused:
                if self._signal is not None and self._signal.is_set:
                    self._clear_if_empty()
                if self._interest_stale:
                    self._heal_interest()
                return None
            if deadline < 0:
                deadline = math.inf if timeout is None else time.monotonic() + timeout
                direct = self._reads_directly
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
        inbox = self.inbox
        waiter = None
        with self._in_lock:
            if not inbox and self._read_paused:
                # All read, so nothing can be over the mark (the counts may
                # say otherwise after racing readers): read again before
                # waiting. Posted before the flag is cleared, so an
                # interrupt between leaves the pause for the next reader.
                self.hub.call_soon(self._resume_reading)
                self._read_paused = False
            if inbox:
                return _DIRECT if direct else _HUB
            if self._signal is not None and not self.ended:
                # Readiness a read interrupted after taking the last
                # message may have left set.
                self._signal.clear()
            wait = min(ORPHAN_CHECK_INTERVAL, deadline - time.monotonic())
            if self.ended or no_wait or self._close_requested or self._peer_eof or wait <= 0:
                return _GIVE_UP
            # Counted for the length of this turn (a count an interrupt
            # leaves too high costs only a spare notify).
            self._readers_waiting += 1
            if not (direct and not self._direct_reader):
                waiter = self._arrived.register()
        try:
            if waiter is None:
                return (
                    _DIRECT
                    if self._read_directly(None if deadline == math.inf else deadline)
                    else _HUB
                )
            if self._interest_stale:
                self._heal_interest()
            # Wait with no lock held: an interrupted wait has none to take back.
            notified = waiter.acquire(True, wait)
        finally:
            with self._in_lock:
                self._readers_waiting -= 1
                if waiter is not None:
                    self._arrived.forget(waiter)
        if not notified:
            with self._in_lock:
                self._check_orphaned()
        return _DIRECT if direct else _HUB

    def _clear_if_empty(self) -> None:
        """Make ``fileno()`` unreadable if the inbox is empty (the channel still open)."""
        with self._in_lock:
            if not self.inbox and not self.ended and self._signal is not None:
                self._signal.clear()

    def _after_give_back(self) -> None:
        """A read put messages back: ``fileno()`` must say so again."""
        if self._signal is not None:
            with self._in_lock:
                if self._signal is not None and self.inbox and self._signal_inbox:
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
            self.inbox.extendleft(messages[::-1])
            self._after_give_back()
            raise
        return messages

    def _resume_if_drained(self) -> None:
        with self._in_lock:
            if not self._read_paused:
                return
            # The counts may overstate what is unread (racing readers), but an
            # empty inbox never does: without this a reader that drained it
            # and then waits on wait() or fileno() would wait forever.
            if self.inbox and self._delivered - self._consumed > self.options.read_low_water:
                return
            # Posted before the flag is cleared (see ``receive``).
            self.hub.call_soon(self._resume_reading)
            self._read_paused = False

    def _heal_interest(self) -> None:
        """Make the hub watch the socket again after an interrupted hand-back (``_direct``)."""
        with self._interest_lock:
            if (
                self._interest_state == _LIVE
                and not self._direct_reader
                and self._apply_interest_for_reader()
            ):
                self._interest_stale = False

    def _deliver(self, messages: Sequence[Message | Assembly], direct: bool = False) -> None:
        size = sum(map(len, messages))
        count = len(messages)
        self._last_size = len(messages[-1])
        with self._in_lock:
            # The messages, their size and the count of deliveries in one
            # step, without a call (``+=``, not ``extend``): a direct reader
            # interrupted on the main thread relies on it (``_direct``).
            self.inbox += messages
            self._delivered += size
            self._deliveries += 1
            self.messages_received += count
            if self._readers_waiting:
                self._arrived.notify_all()
            if self._signal is not None and self._signal_inbox:
                self._signal.set()
            if self._watchers and self._signal_inbox:
                self._notify_watchers()
            pause = False
            if self._delivered - self._consumed > self.options.read_high_water:
                # ``copy`` is one step for other threads, unlike iterating.
                unread = sum(map(len, self.inbox.copy()))
                self._delivered = self._consumed + unread
                pause = unread > self.options.read_high_water
                if pause:
                    self._read_paused = True
                    # A lock-free reader pops first and checks the flag after;
                    # we set the flag first and check the inbox after. One of
                    # the two sees the other, so a pause never outlives the
                    # messages it was waiting on.
                    if not self.inbox:
                        self._read_paused = pause = False
        if pause and self._reading:
            if direct:
                # ``_reading`` is the hub thread's to change.
                self.hub.call_soon(self._pause_reading)
                return
            # Stop reading: the kernel buffer fills and TCP pushes back on the sender.
            self._reading = False
            self._set_interest()

    def _pause_reading(self) -> None:
        with self._in_lock:
            paused = self._read_paused
        if paused and self._reading and not self.ended:
            self._reading = False
            self._set_interest()

    def _check_orphaned(self) -> None:
        """End the channel if its socket was closed behind its back (``_in_lock`` held)."""
        if self._started and not self.ended and self.sock.fileno() < 0 and not self._orphaned:
            self._orphaned = True
            error = OSError(errno.EBADF, "the socket was closed outside the stocking")
            self.hub.call_soon(functools.partial(self._end, EndReason.ERROR, error))

    def wait_ended(self, timeout: float | None) -> bool:
        """Wait until the channel has ended; return whether it has."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._in_lock:
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
                with self._in_lock:
                    self._arrived.forget(waiter)

    @property
    def unread_bytes(self) -> int:
        """Payload size of the messages received but not yet read (characters for text)."""
        return sum(map(len, self.inbox.copy()))

    def readiness_fd(self) -> int:
        """A descriptor readable while a message waits or the channel has ended."""
        with self._in_lock:
            if self._signal is None:
                self._signal = ReadySignal()
                if self.ended or self._half_closed or (self.inbox and self._signal_inbox):
                    self._signal.set()
            return self._signal.fileno()

    def set_signal_inbox(self, enabled: bool) -> None:
        """Let ``fileno()`` readiness follow the inbox (off during a handshake)."""
        with self._in_lock:
            self._signal_inbox = enabled
            if self._signal is not None and enabled and self.inbox:
                self._signal.set()
            if self._watchers and enabled and self.inbox:
                self._notify_watchers()

    def release_signal(self) -> None:
        """Close the ``fileno()`` descriptor, if one was made."""
        with self._in_lock:
            if self._signal is not None:
                self._signal.close()

    @property
    def ready(self) -> bool:
        """True while a message waits to be read (handshake done) or the channel has ended.

        With ``half_close``, also once the peer has closed its side.
        """
        return self.ended or self._half_closed or bool(self.inbox and self._signal_inbox)

    @property
    def _half_closed(self) -> bool:
        """The peer closed its side and the channel stays open for replies."""
        return self._peer_eof and self.options.half_close

    def watch(self, callback: Callable[[], None]) -> bool:
        """Call ``callback`` whenever the channel may have become :attr:`ready`.

        The callback runs on whichever thread made the change, with the
        channel's lock held: it must be quick, must not block and must not
        call back into the channel. It may be called when nothing changed.

        Returns:
            Whether the channel is ready now; checked atomically with the
            registration, so no change between the two goes unnoticed.
        """
        with self._in_lock:
            if self._watchers is None:
                self._watchers = [callback]
            else:
                self._watchers.append(callback)
            return self.ready

    def unwatch(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback``; a no-op if it is not watching."""
        with self._in_lock:
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
