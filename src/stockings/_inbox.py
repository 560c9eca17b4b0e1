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
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from threading import Lock
from typing import TYPE_CHECKING

from ._buffers import Assembly
from ._common import _report
from ._errors import EndReason
from ._framing import Message
from ._hub import Hub
from ._options import ChannelOptions
from ._signal import ReadySignal
from ._sync import LazyCondition

__all__ = ["ORPHAN_CHECK_INTERVAL", "InboxMixin"]

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
    _arrived: LazyCondition
    _delivered: int
    _last_size: int
    _consumed: int
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

    def receive(self, timeout: float | None = 0.0) -> Message | None:
        """Take the next message from the inbox.

        Args:
            timeout: 0 returns at once; a positive number waits up to that many
                seconds; ``None`` waits until a message arrives or the channel ends.

        Returns:
            The message, or ``None`` if none came in time or the channel has
            ended and its inbox is empty.
        """
        inbox = self.inbox
        if self._signal is None:
            # The fast path, without the lock: popleft is atomic, and with no
            # fileno() there is no readiness to keep in step with the inbox.
            try:
                message = inbox.popleft()
            except IndexError:
                if timeout == 0 and not self._read_paused:
                    return None
            else:
                self._consumed += len(message)
                if self._read_paused:
                    self._resume_if_drained()
                if isinstance(message, Assembly):
                    return message.finish()
                return message
        elif not inbox and timeout == 0:
            return None
        resume = False
        with self._in_lock:
            if not inbox and self._read_paused:
                # All read, so nothing can be over the mark (the counts may
                # say otherwise after racing readers): read again before waiting.
                self._read_paused = False
                self.hub.call_soon(self._resume_reading)
            if not inbox:
                if self.ended or timeout == 0:
                    return None
                self._wait_for_message(timeout)
                if not inbox:
                    return None
            message = inbox.popleft()
            self._consumed += len(message)
            unread = self._delivered - self._consumed
            if self._read_paused and unread <= self.options.read_low_water:
                self._read_paused = False
                resume = True
            if not inbox and self._signal is not None and not self.ended:
                self._signal.clear()
        if resume:
            self.hub.call_soon(self._resume_reading)
        if isinstance(message, Assembly):
            return message.finish()
        return message

    def receive_all(self, timeout: float | None = 0.0) -> list[Message]:
        """Take every message waiting in the inbox, waiting for the first as ``receive`` does.

        Returns:
            The messages, oldest first; empty if none came in time.
        """
        first = self.receive(timeout)
        if first is None:
            return []
        messages = [first]
        receive = self.receive
        while (message := receive(0)) is not None:
            messages.append(message)
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
            self._read_paused = False
        self.hub.call_soon(self._resume_reading)

    def _wait_for_message(self, timeout: float | None) -> None:
        """Wait until the inbox has a message or the channel is done (``_in_lock`` held)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        direct = self._reads_directly
        self._readers_waiting += 1
        try:
            while not (self.inbox or self.ended or self._close_requested or self._peer_eof):
                wait = ORPHAN_CHECK_INTERVAL
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    wait = min(wait, remaining)
                if direct and not self._direct_reader:
                    self._in_lock.release()
                    try:
                        direct = self._read_directly(deadline)
                    finally:
                        self._in_lock.acquire()
                    continue
                if not self._arrived.wait(wait):
                    self._check_orphaned()
        finally:
            self._readers_waiting -= 1

    def _deliver(self, messages: Sequence[Message | Assembly], direct: bool = False) -> None:
        size = sum(map(len, messages))
        self._last_size = len(messages[-1])
        with self._in_lock:
            self.inbox.extend(messages)
            self._delivered += size
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
        with self._in_lock:
            return self._arrived.wait_for(lambda: self.ended, timeout)

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
