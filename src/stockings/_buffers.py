"""The buffers a channel moves messages through, apart from the sockets.

:class:`Batch` gathers small outbound messages back to back so a burst is
one ``sendmsg`` (:func:`queued_parts` starts one, :func:`batch_parts`
builds one for ``write_many``); :class:`Assembly` receives one large
inbound payload straight into a buffer of its own.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._common import LARGE_PAYLOAD
from ._encoding import BYTES_HEADERS, BytesLike, WriteFraming

__all__ = [
    "ASSEMBLE_AHEAD",
    "Assembly",
    "Batch",
    "batch_parts",
    "queued_parts",
]

#: A large payload is received into a buffer of its full size only once no
#: more than this, or three times what has arrived, is still to come: a
#: peer cannot make us allocate much ahead of the data it actually sends.
ASSEMBLE_AHEAD = 1024 * 1024


class Assembly:
    """A large ``bytes`` payload received straight into a buffer of its own.

    The hub thread fills it and puts it in the inbox; the reader turns it
    into ``bytes`` (:meth:`finish`), and the buffer goes with the assembly.
    None is kept for the next payload: a connection that once received a
    large message holds no memory for it afterwards (keeping two, up to
    4 MiB each, no longer paid once the hub raised glibc's trim threshold,
    see ``_allocator``).
    """

    __slots__ = ("have", "payload", "size", "view")

    def __init__(self, size: int) -> None:
        # The view holds the buffer: nothing else needs it.
        self.view = memoryview(bytearray(size))
        self.size = size
        self.have = 0
        self.payload: bytes | None = None

    def __len__(self) -> int:
        return self.size

    def finish(self) -> bytes:
        """The payload as ``bytes``.

        May be called again after an interrupt anywhere in it (a read puts
        the assembly back then): it returns the same payload.
        """
        payload = self.payload
        if payload is not None:
            return payload
        payload = bytes(self.view[: self.size])
        # Kept before the view goes, so a second call never reads a released view.
        self.payload = payload
        self.view.release()
        return payload


class Batch(bytearray):
    """Small messages queued back to back in one buffer.

    Only the queue's tail is appended to, and only while it is still this
    type: a partly sent head is replaced by a memoryview of its rest, so a
    buffer with a view on it is never resized.
    """

    __slots__ = ()


def queued_parts(
    header: bytes, payload: bytes | bytearray | memoryview, small: bool
) -> list[bytes | bytearray | memoryview]:
    """What an outbound queue holds of a message that starts a batch or travels alone.

    A small one is copied, once, into a :class:`Batch` that later ones may
    join; a large one stays as it is, beside its header (the outbox made
    it ``bytes``).
    """
    if small:
        batch = Batch(header)
        batch += payload
        return [batch]
    return [header, payload]


def batch_parts(
    messages: Iterable[object], framing: WriteFraming, large_apart: bool
) -> tuple[list[BytesLike], int, int]:
    """Encode messages for one all-or-nothing batch (``write_many``).

    Every message is encoded and checked before the caller queues any.

    Args:
        messages: ``str`` or bytes-like objects.
        framing: the channel's framing, and its ``max_message_size``.
        large_apart: large payloads travel beside their header, uncopied
            unless mutable (``sendmsg``), instead of copied into a batch.

    Returns:
        The buffers to queue, their total size, and how many messages.

    Raises:
        TypeError: a message is neither ``str`` nor bytes-like.
        MessageTooLarge: a message is over ``max_message_size``.
    """
    items: list[BytesLike] = []
    total = 0
    batch = Batch()
    count = 0
    small_limit = framing.small_limit
    for count, message in enumerate(messages, 1):  # noqa: B007 - counted once, after
        if type(message) is bytes and len(message) < small_limit:
            batch += BYTES_HEADERS[len(message)]
            batch += message
            continue
        header, payload, _ = framing.frame(message)
        if len(payload) < LARGE_PAYLOAD or not large_apart:
            batch += header
            batch += payload
            continue
        if batch:
            items.append(batch)
            total += len(batch)
            batch = Batch()
        items += (header, payload)
        total += len(header) + len(payload)
    if batch:
        items.append(batch)
        total += len(batch)
    return items, total, count
