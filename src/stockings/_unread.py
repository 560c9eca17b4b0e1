"""How many bytes an inbox holds unread, known without readers counting what they take.

"Bytes" here are what messages weigh in flow control: each its payload
and ``MESSAGE_OVERHEAD`` (see ``_received``).

Inbound flow control pauses reading past ``read_high_water`` unread bytes.
Readers take messages without a lock, and a count kept per read would cost
every read an update of shared state (and race other readers). Instead the
receiving thread remembers, now and then after a delivery, how many messages
and bytes had arrived in all: a *mark*. The messages read are those
delivered minus those still in the inbox (which readers change atomically),
so every mark read past is known, and with it the bytes read up to it. What
is unread is then at most everything delivered after the last mark read
past: the bound overstates by what was read since. A mark is made at the
first delivery ending ``span`` bytes or more after the last mark, so marks
stay few however small the deliveries, and most deliveries make none.

The bound is cheap and decides nearly every time; when it is over the high
mark, the inbox counts exactly (see ``Inbox.deliver``) and settles the count
here. When reading pauses, the inbox works out how few messages must be
left for the unread bytes to be under ``read_low_water``
(:func:`newest_within`): nothing arrives while paused, so readers need only
compare the inbox's length with it, and the inbox counts exactly, and
resumes reading, once they reach it.

Everything here runs under the inbox's lock. Readers racing each other or
interrupted can make the count off by a message for a while (see
``Inbox._resume_if_drained``); an empty inbox always counts as nothing unread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from itertools import islice
from typing import Any

from ._received import MESSAGE_OVERHEAD

__all__ = ["UnreadCount", "newest_within", "weight_of"]

#: The most bytes from one mark to where the next is due: with one
#: delivery's bytes, the bound's largest error.
MAX_SPAN = 64 * 1024
#: The fewest: caps the marks' number at about ``read_high_water`` / 4 KiB.
MIN_SPAN = 4 * 1024


class UnreadCount:
    """The unread bytes of one inbox, bounded from its deliveries and settled by exact counts.

    The receiving thread checks :attr:`due` itself after each delivery and
    calls :meth:`mark` only then: most deliveries cost no call here.

    Args:
        low_water: the inbox's ``read_low_water``: marks are a quarter of it
            apart (within ``MIN_SPAN`` and ``MAX_SPAN``), so the bound is
            finer than the distance between the two water marks.
    """

    __slots__ = ("_marks", "due", "settled", "span")

    def __init__(self, low_water: int) -> None:
        #: The fewest bytes between two marks.
        self.span = min(MAX_SPAN, max(MIN_SPAN, low_water // 4))
        # Each mark: (messages delivered in all, bytes delivered in all).
        self._marks: deque[tuple[int, int]] = deque()
        #: Bytes known to be read, delivered from the first: exact at each
        #: mark read whole and after each exact count.
        self.settled = 0
        #: Once this many bytes have been delivered in all, the next mark is due.
        self.due = self.span

    def mark(self, messages: int, total: int) -> None:
        """Mark a delivery: ``messages`` and ``total`` bytes have arrived in all."""
        self._marks.append((messages, total))
        self.due = total + self.span

    def bound(self, messages: int, total: int, unread_messages: int) -> int:
        """At least the unread bytes, given what was delivered and what is still in the inbox.

        Args:
            messages: messages delivered in all.
            total: bytes delivered in all.
            unread_messages: messages in the inbox now.
        """
        if not unread_messages:
            self._marks.clear()
            self.settled = total
            return 0
        read = messages - unread_messages
        marks = self._marks
        while marks and marks[0][0] <= read:
            end = marks.popleft()[1]
            if end > self.settled:
                self.settled = end
        return total - self.settled

    def count(self, inbox: deque[Any], messages: int, total: int) -> int:
        """Count the unread bytes exactly, and settle the count at that.

        Only the unread messages up to the oldest mark not read past are
        counted one by one (after :meth:`bound`, at most a span and a
        delivery's worth): what came after that mark is known from it, and
        all of it is unread, since readers take messages in order.

        Args:
            inbox: the messages unread, oldest first.
            messages: messages delivered in all.
            total: bytes delivered in all.
        """
        marks = self._marks
        unread_messages = len(inbox)
        if marks:
            # Readers may have read past the mark since it was looked at.
            in_first = max(0, marks[0][0] - (messages - unread_messages))
            after = total - marks[0][1]
        else:
            # Every mark is read: what is unread came after the last.
            in_first, after = unread_messages, 0
        try:
            unread = after + sum(map(len, islice(inbox, in_first)))
            # Readers may have taken some of those meanwhile: none weighs less.
            unread += MESSAGE_OVERHEAD * in_first
        except RuntimeError:
            # A reader took a message meanwhile (the count ran Python code,
            # an ``Assembly``'s ``len``): count a copy, one step for others.
            unread = weight_of(inbox.copy())
        self.settle(total, unread)
        return unread

    def settle(self, total: int, unread: int) -> None:
        """An exact count found ``unread`` bytes unread of ``total`` delivered."""
        if total - unread > self.settled:
            self.settled = total - unread


#: How many sizes :func:`newest_within` sums in one C call.
_SIZES_PER_STEP = 512


def weight_of(messages: Collection[Any]) -> int:
    """What ``messages`` weigh against the read marks: payloads and overheads."""
    return sum(map(len, messages)) + MESSAGE_OVERHEAD * len(messages)


def newest_within(inbox: deque[Any], limit: int) -> tuple[int, int]:
    """How many of the newest messages in ``inbox`` weigh ``limit`` or less, and what they weigh.

    Once no more than that many are left unread, and nothing was delivered
    meanwhile, the unread messages weigh that much at most. Only the newest
    ``limit // MESSAGE_OVERHEAD + 1`` are looked at (none weighs less than
    the overhead), taken in one C call, so that readers taking from the
    other end meanwhile change nothing; their sizes are summed a step at a
    time in C, and only the step that crosses ``limit`` one by one.
    """
    most = limit // MESSAGE_OVERHEAD + 1
    try:
        sizes = list(map(len, islice(reversed(inbox), most)))
    except RuntimeError:
        # A reader took a message meanwhile (an ``Assembly``'s ``len`` runs
        # Python code, where threads switch): look at a copy.
        sizes = list(map(len, islice(reversed(inbox.copy()), most)))
    within = 0
    total = 0
    for start in range(0, len(sizes), _SIZES_PER_STEP):
        step = sizes[start : start + _SIZES_PER_STEP]
        step_total = sum(step) + MESSAGE_OVERHEAD * len(step)
        if total + step_total <= limit:
            total += step_total
            within += len(step)
            continue
        for size in step:
            if total + size + MESSAGE_OVERHEAD > limit:
                return within, total
            total += size + MESSAGE_OVERHEAD
            within += 1
    return within, total
