"""Messages received but not yet read, and the read-side flow-control marks.

Sans I/O, like the protocol that owns it: it only says whether reading
should pause. Past ``high`` unread bytes (``len()`` of each message:
bytes, or characters for text, plus :data:`MESSAGE_OVERHEAD`) it asks to
pause, so that the kernel buffer fills and TCP pushes back on the sender;
once readers took enough to be at ``low`` or under (or took everything),
it asks to resume.
"""

from __future__ import annotations

from collections import deque

from ._framing import Message

__all__ = ["MESSAGE_OVERHEAD", "Received"]

#: What each unread message weighs in read-side flow control besides its
#: payload, near what Python spends to hold one (a small ``bytes`` object
#: takes 33 bytes and its payload, rounded up to 8, and its place in the
#: inbox 8). Without it a peer sending empty messages, which weigh
#: nothing, filled memory without ever reaching the mark. Twice this paused
#: a 16 B stream five times as often as before, and cost it a twentieth
#: of its speed; this much, nothing measurable.
MESSAGE_OVERHEAD = 32


class Received:
    """The inbox of one connection, with its read marks.

    Args:
        high: the read high-water mark, in unread bytes.
        low: the read low-water mark.
    """

    __slots__ = ("high", "low", "messages", "paused", "paused_since_check", "unread")

    def __init__(self, high: int, low: int) -> None:
        self.high = high
        self.low = low
        #: The messages, oldest first.
        self.messages: deque[Message] = deque()
        #: Sum of ``len()`` of :attr:`messages` (payloads only).
        self.unread = 0
        #: True while reading should pause.
        self.paused = False
        #: Set with every pause, for the idle rule to notice (it clears it).
        self.paused_since_check = False

    def add(self, messages: list[Message]) -> None:
        """Take in newly received messages."""
        self.messages.extend(messages)
        self.unread += sum(map(len, messages))
        if self.weight > self.high and not self.paused:
            self.paused = self.paused_since_check = True

    @property
    def weight(self) -> int:
        """What the unread messages weigh against the marks: payloads and overheads."""
        return self.unread + MESSAGE_OVERHEAD * len(self.messages)

    def take(self) -> Message | None:
        """Return the oldest message, or ``None`` if there is none."""
        messages = self.messages
        if not messages:
            return None
        message = messages.popleft()
        self.unread -= len(message)
        if self.paused and (not messages or self.weight <= self.low):
            self.paused = False
        return message
