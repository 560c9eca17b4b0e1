"""A channel's inbox, and the readers that take messages from it.

The channel hands whole messages to :meth:`Inbox.deliver` on the thread
that received them (the hub's, or a direct reader's, see ``_direct``);
``receive`` (any thread) takes them, popping without a lock while nobody
needs the inbox's state kept in step with a ``fileno()`` descriptor. Here
too: read-side flow control (past ``read_high_water`` unread bytes
``deliver`` says to stop reading, and readers have the hub resume once
they are below ``read_low_water``), and saying when the channel is ready.
Waiting for a message is a :class:`~stockings._waiting.Waiting`'s; the
``fileno()`` descriptor and the watchers, a
:class:`~stockings._readiness.Readiness`'s.

The :class:`Inbox` is one part of a :class:`~stockings._channel.Channel`,
which makes it and tells it, under :attr:`Inbox.lock`, what readers must
know of the connection: that it ended (:attr:`Inbox.ended`), that nothing
more will come (:attr:`Inbox.no_more`: ``close()`` was called or the peer
closed its side), that it stays open for replies (:attr:`Inbox.half_closed`).
:attr:`Inbox.lock` guards the channel's end state and waiting for the inbox.
"""

from __future__ import annotations

import math
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from threading import Lock
from typing import TYPE_CHECKING

from ._buffers import Assembly
from ._framing import Message
from ._hub import Hub
from ._options import ChannelOptions
from ._readiness import Readiness
from ._received import MESSAGE_OVERHEAD
from ._timeouts import bounded
from ._unread import UnreadCount, newest_within, weight_of
from ._waiting import DIRECT, GIVE_UP, ORPHAN_CHECK_INTERVAL, InboxOwner, Waiting

if TYPE_CHECKING:
    from ._direct import DirectReader

__all__ = ["ORPHAN_CHECK_INTERVAL", "Inbox", "InboxOwner"]


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
        "_delivered",
        "_paused_at",
        "_resume_at",
        "_resume_weight",
        "_unread",
        "_waiting",
        "before_wait",
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
        "readiness",
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
        #: Called when a read is about to wait: the outbox's ``send_held``,
        #: so that a request held in a burst goes out before its answer is awaited.
        self.before_wait: Callable[[], None] | None = None
        #: Guards the channel's end state, the readiness (``fileno()`` and
        #: watchers) and waiting for a message; a reader with a message
        #: waiting pops without it.
        self.lock = Lock()
        #: Readers blocked on an empty inbox (the slow path of ``receive``).
        self._waiting = Waiting(self.lock, weakref.ref(owner))
        #: Messages, and large payloads the reader turns into bytes (Assembly).
        self.messages: deque[Message | Assembly] = deque()
        # Bytes delivered in all; what of it is unread, readers do not count
        # (see ``_unread``), so a read takes no lock and updates nothing shared.
        self._delivered = 0
        self._unread = UnreadCount(options.read_low_water)
        # While paused: with this many messages or fewer left, the unread
        # ones may weigh ``read_low_water`` or less (see ``_resume_if_drained``):
        # that much at most, if ``deliveries`` is still what it was then.
        self._resume_at = 0
        self._resume_weight = 0
        self._paused_at = 0
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
        #: ``None`` while there is no descriptor, no watcher and no handshake.
        self.readiness: Readiness | None = None

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
                # could lose it to an exception raised just after. A traced
                # thread (see ``_switching``) may be switched out anywhere,
                # and another reader take the message meanwhile: then the
                # one popped is the one returned, and an empty inbox means
                # starting over.
                try:
                    message = inbox[0]
                except IndexError:
                    continue
                taken = None
                try:
                    taken = inbox.popleft()
                    if taken is not message:
                        message = taken
                    readiness = self.readiness
                    if readiness is not None and not inbox and readiness.signal is not None:
                        self._clear_if_empty()
                    if self.paused and len(inbox) <= self._resume_at:
                        self._resume_if_drained()
                    if isinstance(message, Assembly):
                        return message.finish()
                    return message
                except BaseException as exc:
                    if taken is None and type(exc) is IndexError:
                        # Another reader emptied the inbox (traced, above).
                        continue
                    # Interrupted (or worse) before the message reached the
                    # caller: it goes back where it was, first in line.
                    inbox.appendleft(message if taken is None else taken)
                    self._after_give_back()
                    raise
            if timeout == 0 and not self.paused:
                readiness = self.readiness
                if (
                    readiness is not None
                    and readiness.signal is not None
                    and readiness.signal.is_set
                ):
                    self._clear_if_empty()
                if self.interest_stale and self.direct is not None:
                    # A direct reader's interrupted hand-back left the socket unwatched.
                    self.direct.heal_interest()
                return None
            if deadline < 0:
                limit = bounded(timeout)
                deadline = math.inf if limit is None else time.monotonic() + limit
                direct = self.direct is not None
                before_wait = self.before_wait
                if before_wait is not None:
                    before_wait()
            wait = self._waiting.wait_once(self, timeout == 0, deadline, direct)
            if wait == GIVE_UP:
                return None
            direct = wait == DIRECT

    def _clear_if_empty(self) -> None:
        """Make ``fileno()`` unreadable if the inbox is empty (the channel still open)."""
        with self.lock:
            readiness = self.readiness
            signal = None if readiness is None else readiness.signal
            if not self.messages and not self.ended and signal is not None:
                signal.clear()

    def _after_give_back(self) -> None:
        """A read put messages back: ``fileno()`` must say so again."""
        if self.readiness is not None:
            with self.lock:
                readiness = self.readiness
                if readiness is not None and self.messages and readiness.follows_inbox:
                    # The descriptor only: watchers were told when these came.
                    signal = readiness.signal
                    if signal is not None:
                        signal.set()

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
        """Reading is paused and few messages are left: resume if they are under the low mark.

        Readers of a paused inbox only compare its length with
        :attr:`_resume_at`, without a lock or a call: paused reads are most
        reads of a stream its reader cannot keep up with. The exact count
        is made here, once they reach it.
        """
        with self.lock:
            if not self.paused:
                return
            low_water = self.options.read_low_water
            messages = self.messages
            if self.deliveries == self._paused_at:
                # Nothing came since the pause: what is left is among the
                # newest messages weighed then (an interrupted read puts
                # back an older one, and only delays this).
                unread = self._resume_weight
            else:
                # Delivered as the pause began (a receive under way): count.
                unread = weight_of(messages.copy())
                if messages and unread > low_water:
                    self._aim_resume()
                    return
            self._unread.settle(self._delivered, unread)
            self.resume_reading_soon()

    def _aim_resume(self) -> None:
        """Work out how few messages must be left to resume reading (``lock`` held, paused)."""
        self._resume_at, self._resume_weight = newest_within(
            self.messages, self.options.read_low_water
        )
        self._paused_at = self.deliveries

    def resume_reading_soon(self) -> None:
        """Have the hub read again, and clear :attr:`paused` (``lock`` held)."""
        # Posted before the flag is cleared, so an interrupt between leaves
        # the pause for the next reader.
        self.hub.call_soon(self._waiting.resume_reading)
        self.paused = False

    def wait_ended(self, timeout: float | None) -> bool:
        """Wait until the channel has ended; return whether it has."""
        return self._waiting.wait_ended(self, timeout)

    # ------------------------------------------------------- the channel's

    def deliver(self, messages: Sequence[Message | Assembly]) -> bool:
        """Put received messages in the inbox (the receiving thread).

        Returns:
            Whether the unread messages now weigh over ``read_high_water``
            (payloads and ``MESSAGE_OVERHEAD`` each, see ``_received``): the
            channel then stops reading (:attr:`paused` is set).
        """
        count = len(messages)
        size = sum(map(len, messages)) + MESSAGE_OVERHEAD * count
        self.last_size = len(messages[-1])
        with self.lock:
            # The messages, their size and the count of deliveries in one
            # step, without a call (``+=``, not ``extend``): a direct reader
            # interrupted on the main thread relies on it (``_direct``).
            self.messages += messages
            self._delivered += size
            self.deliveries += 1
            self.messages_received += count
            if self._waiting.count:
                self._waiting.arrived.notify_all()
            readiness = self.readiness
            if readiness is not None and readiness.follows_inbox:
                # Readiness.set(), without its call.
                signal = readiness.signal
                if signal is not None:
                    signal.set()
                if readiness.watchers:
                    readiness.notify()
            # Marked after the step above: an interrupt between the two only
            # leaves the mark to a later delivery.
            tally = self._unread
            delivered = self._delivered
            if delivered >= tally.due:
                tally.mark(self.messages_received, delivered)
            high_water = self.options.read_high_water
            # Everything delivered since the count was last settled is the
            # loosest bound, and needs no look at the marks.
            if delivered - tally.settled <= high_water:
                return False
            if tally.bound(self.messages_received, delivered, len(self.messages)) <= high_water:
                return False
            if tally.count(self.messages, self.messages_received, delivered) <= high_water:
                return False
            # Before the flag: a reader that sees it sees the aim too.
            self._aim_resume()
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
        self._waiting.arrived.notify_all()

    def announce(self) -> None:
        """Wake readers, ``fileno()`` and watchers: the channel is ready with no message.

        For its end, and a peer's close with ``half_close`` (``lock`` held).
        """
        self._waiting.arrived.notify_all()
        if self.readiness is not None:
            self.readiness.set()

    def disown(self) -> None:
        """In a forked child: fresh lock, nothing to read, no descriptor (see the channel's)."""
        self.lock = Lock()
        self._waiting = Waiting(self.lock, self._waiting.owner)
        self.messages.clear()
        self._delivered = 0
        self._unread = UnreadCount(self.options.read_low_water)
        readiness, self.readiness = self.readiness, None
        if readiness is not None:
            readiness.close()

    # ------------------------------------------------------------ readiness

    @property
    def unread_bytes(self) -> int:
        """Payload size of the messages received but not yet read (characters for text)."""
        return sum(map(len, self.messages.copy()))

    def readiness_fd(self) -> int:
        """A descriptor readable while the channel is :attr:`ready`."""
        with self.lock:
            return self._readiness_locked().fileno(self.ready)

    def set_signal_inbox(self, enabled: bool) -> None:
        """Let readiness follow the inbox (off during a handshake)."""
        with self.lock:
            readiness = self._readiness_locked()
            readiness.follows_inbox = enabled
            if enabled and self.messages:
                readiness.set()
            if readiness.idle:
                self.readiness = None

    def release_signal(self) -> None:
        """Close the ``fileno()`` descriptor, if one was made."""
        with self.lock:
            if self.readiness is not None:
                self.readiness.close()

    @property
    def ready(self) -> bool:
        """True while a message waits to be read (handshake done) or the channel has ended.

        With ``half_close``, also once the peer has closed its side.
        """
        if self.ended or self.half_closed:
            return True
        readiness = self.readiness
        return bool(self.messages and (readiness is None or readiness.follows_inbox))

    def watch(self, callback: Callable[[], None]) -> bool:
        """Call ``callback`` whenever the channel may have become :attr:`ready`.

        See :meth:`Readiness.watch <stockings._readiness.Readiness.watch>`
        for what the callback may do. Returns whether the channel is ready
        now, checked atomically with the registration.
        """
        with self.lock:
            self._readiness_locked().watch(callback)
            return self.ready

    def unwatch(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback``; a no-op if it is not watching."""
        with self.lock:
            readiness = self.readiness
            if readiness is not None:
                readiness.unwatch(callback)
                if readiness.idle:
                    self.readiness = None

    def _readiness_locked(self) -> Readiness:
        if self.readiness is None:
            self.readiness = Readiness()
        return self.readiness
