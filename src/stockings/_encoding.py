"""The stockings message header, both ways, and messages to bytes, sans I/O.

Apart from the decoder (``_framing``) because the write path needs only
this: a header built from a length and a type (the commonest from tables
made once) in front of the payload. The header's bits and the parsing of a
long header are here too, so that the header is defined in one place;
``docs/wire.md`` is the specification.
"""

from __future__ import annotations

from typing import Any

from ._common import LARGE_PAYLOAD
from ._errors import MessageTooLarge, ProtocolError

__all__ = [
    "BYTES_FRAMED",
    "BYTES_HEADERS",
    "MAX_HEADER_SIZE",
    "NO_MESSAGE",
    "BytesLike",
    "WriteFraming",
    "encode",
    "encode_header",
    "no_message",
    "payload_of",
]

#: What ``Decoder.feed`` accepts, and what a payload is sent as.
BytesLike = bytes | bytearray | memoryview

# The header's bits: the last header byte; a ``bytes`` payload (first byte
# only); the length bits of the first byte, and of each later byte.
_LAST = 0x80
_BYTES = 0x40
_FIRST_LENGTH_MASK = 0x3F
_NEXT_LENGTH_MASK = 0x7F

#: Ten header bytes carry 69 bits of length; anything longer is garbage.
MAX_HEADER_SIZE = 10

# Single-byte headers cover the commonest small messages; building them once
# saves a call and an allocation per message.
_SHORT_HEADERS_TEXT = [bytes((_LAST | n,)) for n in range(64)]
_SHORT_HEADERS_BYTES = [bytes((_LAST | _BYTES | n,)) for n in range(64)]


def encode_header(length: int, is_text: bool) -> bytes:
    """Return the header announcing a payload of ``length`` bytes.

    Args:
        length: the payload's length in bytes; must not be negative.
        is_text: true for a UTF-8 ``str`` payload, false for ``bytes``.

    Raises:
        ValueError: if ``length`` is negative.
    """
    if length < 64:
        if length < 0:
            raise ValueError("a length cannot be negative")
        return (_SHORT_HEADERS_TEXT if is_text else _SHORT_HEADERS_BYTES)[length]
    if length < 8192:
        first = (0 if is_text else _BYTES) | (length & _FIRST_LENGTH_MASK)
        return bytes((first, _LAST | length >> 6))
    header = bytearray(((0 if is_text else _BYTES) | (length & _FIRST_LENGTH_MASK),))
    length >>= 6
    while length:
        header.append(length & _NEXT_LENGTH_MASK)
        length >>= 7
    header[-1] |= _LAST
    return bytes(header)


#: Ready-made headers for the commonest writes: bytes payloads under 1 KiB.
BYTES_HEADERS = [encode_header(length, False) for length in range(1024)]
#: And what each such message takes on the wire, header included.
BYTES_FRAMED = [len(header) + length for length, header in enumerate(BYTES_HEADERS)]


class WriteFraming:
    """How one channel frames what it writes, within its ``max_message_size``.

    Args:
        max_message_size: the largest payload allowed, ``None`` for no limit.
    """

    __slots__ = ("_known", "limit", "small_limit")

    def __init__(self, max_message_size: int | None) -> None:
        self.limit = max_message_size
        cached = len(BYTES_HEADERS)
        #: Bytes payloads shorter than this take a ready-made header.
        self.small_limit = cached if max_message_size is None else min(cached, max_message_size + 1)
        # A stream often repeats one length, and encoding a header costs as
        # much as the rest of a send: the last bytes payload length past the
        # ready-made ones, its header and what ``frame`` returned for it,
        # kept in one store, once checked against the limit.
        self._known: tuple[int, bytes, int] = (-1, b"", 0)

    def frame(self, message: object) -> tuple[bytes, BytesLike, int]:
        """The header and payload of ``message``, checked against the limit.

        Returns:
            The header; the payload, made ``bytes`` if large and mutable
            (the caller may change it once its write returns); and the
            message's size on the wire if it is a ``bytes`` payload that
            may join a batch (under ``LARGE_PAYLOAD``), else 0.

        Raises:
            TypeError: ``message`` is neither ``str`` nor bytes-like.
            MessageTooLarge: ``message`` is over the limit.
        """
        if type(message) is bytes:
            # Shorter ones mostly take ``BYTES_HEADERS`` before they get here.
            length = len(message)
            known, header, framed = self._known
            if length != known:
                self._check(length)
                header = encode_header(length, False)
                framed = len(header) + length if length < LARGE_PAYLOAD else 0
                self._known = (length, header, framed)
            return header, message, framed
        payload, is_text = payload_of(message)
        length = len(payload)
        self._check(length)
        if length >= LARGE_PAYLOAD and not isinstance(payload, bytes):
            payload = bytes(payload)
        return encode_header(length, is_text), payload, 0

    def _check(self, length: int) -> None:
        if self.limit is not None and length > self.limit:
            raise MessageTooLarge(length, self.limit)


def payload_of(message: object) -> tuple[BytesLike, bool]:
    """Return ``(payload, is_text)`` for a message the caller wants to send.

    ``str`` travels as UTF-8 text; any other object with the buffer
    protocol (``bytes``, ``bytearray``, ``memoryview``, ``array.array``...)
    travels as bytes: the raw bytes of its memory, so lengths count bytes
    whatever the item format. A ``memoryview`` that is not C-contiguous is
    flattened to its items in order; any other non-contiguous buffer is
    refused, since which bytes it stands for is the caller's choice.

    Raises:
        TypeError: for any other type, or a non-contiguous buffer.
    """
    if isinstance(message, str):
        return message.encode("utf-8"), True
    if isinstance(message, (bytes, bytearray)):
        return message, False
    if isinstance(message, memoryview):
        # Lengths on the wire count bytes, whatever the view's item format.
        return (message.cast("B") if message.c_contiguous else message.tobytes()), False
    try:
        view = memoryview(message)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"a stockings message is str or bytes-like, not {type(message).__name__}"
        ) from None
    if not view.c_contiguous:
        view.release()
        raise TypeError(
            f"a stockings message must be a C-contiguous buffer; this "
            f"{type(message).__name__} is not: send a contiguous copy, such as "
            f"memoryview(message).tobytes()"
        )
    return view.cast("B"), False


def encode(message: object) -> bytes:
    """Return the header and payload of ``message`` as one ``bytes``.

    Raises:
        TypeError: if ``message`` is neither ``str`` nor bytes-like.
    """
    payload, is_text = payload_of(message)
    return encode_header(len(payload), is_text) + payload


def _parse_header(data: BytesLike, pos: int, end: int) -> tuple[int, int]:
    """Parse the multi-byte header starting at ``data[pos]``.

    Returns ``(header_end, length)``, or ``(-1, 0)`` if the header continues
    past ``end``.

    Raises:
        ProtocolError: if the header runs longer than ``MAX_HEADER_SIZE``.
    """
    length = data[pos] & _FIRST_LENGTH_MASK
    shift = 6
    index = pos + 1
    limit = pos + MAX_HEADER_SIZE
    while index < end:
        byte = data[index]
        length |= (byte & _NEXT_LENGTH_MASK) << shift
        index += 1
        if byte & _LAST:
            return index, length
        if index >= limit:
            raise ProtocolError(f"message header longer than {MAX_HEADER_SIZE} bytes")
        shift += 7
    return -1, 0


#: What ``write`` was called without: its one positional argument.
NO_MESSAGE: Any = object()


def no_message(kwargs: dict[str, Any]) -> TypeError:
    """What ``write()`` called without its one positional argument raises."""
    if kwargs:
        names = ", ".join(sorted(kwargs))
        return TypeError(
            f"write() takes the message as its one positional argument, not by keyword ({names})"
        )
    return TypeError("write() needs the message to send: write(message)")
