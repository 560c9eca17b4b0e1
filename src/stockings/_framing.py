"""The stockings wire format, sans I/O: bytes to messages (the :class:`Decoder`).

Every message is a header then its payload. The header is a little-endian
base-128 varint of the payload length whose first byte also carries the type
(0x40 set: ``bytes``; clear: UTF-8 ``str``) and only six bits of length; the
0x80 bit marks the last header byte. The specification, with test vectors,
is ``docs/wire.md`` (https://stockings.readthedocs.io/en/latest/wire.html).

Nothing here touches sockets, threads or clocks, so every rule of the format
is tested by feeding bytes in and looking at what comes out.

The header itself (its bits, writing and parsing it) and the other
direction, messages to bytes, live in ``_encoding``; its public names are
re-exported here, so that the format keeps one front.
"""

from __future__ import annotations

import struct

from ._encoding import (
    _BYTES,
    _FIRST_LENGTH_MASK,
    _LAST,
    _NEXT_LENGTH_MASK,
    MAX_HEADER_SIZE,
    BytesLike,
    _parse_header,
    encode,
    encode_header,
    payload_of,
)
from ._errors import IncompleteMessage, MessageTooLarge, ProtocolError

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "MAX_HEADER_SIZE",
    "BytesLike",
    "Decoder",
    "Message",
    "encode",
    "encode_header",
    "payload_of",
]

#: A decoded message: ``bytes`` or ``str``, as the sender wrote it.
Message = bytes | str
#: 64 MiB: generous for real messages, small enough that a lying peer cannot
#: make a process allocate without bound.
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024

# Larger than any length a ten-byte header can carry.
_NO_LIMIT = 1 << 80

_ONE_BYTE = [bytes((value,)) for value in range(256)]
#: Shorter runs are left to the message-by-message loop.
_MIN_RUN = 4
#: A run is cut this many messages at a time by one ``struct`` call, then
#: the next size down; the last few (under the smallest) by slicing.
_RUN_CUTS = (64, 8)
#: The most cutting layouts kept: a peer sending runs of ever new lengths
#: only makes the cache start over.
_RUN_LAYOUTS_KEPT = 64
_run_layouts: dict[tuple[int, int, int], struct.Struct] = {}


def _run_layout(header: int, length: int, count: int) -> struct.Struct:
    """A ``struct`` that cuts ``count`` payloads of ``length`` bytes, each after its header.

    One ``unpack_from`` of it makes all the payloads in C, about four times
    as fast as slicing them one by one in a loop.
    """
    key = (header, length, count)
    layout = _run_layouts.get(key)
    if layout is None:
        if len(_run_layouts) >= _RUN_LAYOUTS_KEPT:
            _run_layouts.clear()
        layout = _run_layouts[key] = struct.Struct(f"{header}x{length}s" * count)
    return layout


def _take_run(data: bytes, pos: int, start: int, stop: int, end: int, out: list[Message]) -> int:
    """Take the run of ``bytes`` messages like the one at ``data[pos:stop]`` that follows it.

    A message with the same one- or two-byte header as its neighbour has
    the same length, so a run of them lies at a fixed stride: the header
    bytes at every stride are checked, and the payloads cut out, by a few
    calls in C instead of a turn of the loop each.

    Returns:
        Where the run ends, ``stop`` if there is none worth taking.
    """
    stride = stop - pos
    count = (end - stop) // stride
    if count < _MIN_RUN:
        return stop
    limit = stop + count * stride
    # The header's first bytes down the stride: how many in a row match?
    leads = data[stop:limit:stride]
    count -= len(leads.lstrip(_ONE_BYTE[data[pos]]))
    if start - pos == 2 and count:
        seconds = data[stop + 1 : stop + count * stride : stride]
        count = min(count, len(seconds) - len(seconds.lstrip(_ONE_BYTE[data[pos + 1]])))
    if count < _MIN_RUN:
        return stop
    header = start - pos
    length = stop - start
    at = stop
    left = count
    for cut in _RUN_CUTS:
        times, left = divmod(left, cut)
        if times:
            unpack = _run_layout(header, length, cut).unpack_from
            step = cut * stride
            for _ in range(times):
                out += unpack(data, at)
                at += step
    if left:
        first = at + header
        out += [data[at : at + length] for at in range(first, first + left * stride, stride)]
    return stop + count * stride


def _starts_small(data: BytesLike, pos: int) -> bool:
    """Whether ``data[pos:]`` (two bytes or more) starts with a one- or two-byte header."""
    return bool(data[pos] & _LAST or data[pos + 1] & _LAST)


def _finish(payload: bytes, is_text: bool) -> Message:
    if not is_text:
        return payload
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"text message is not valid UTF-8: {exc.reason}") from exc


class Decoder:
    """Turns a byte stream, fed in pieces of any size, into whole messages.

    ``feed`` returns every message the bytes complete. Partial headers and
    payloads are kept between calls. A header announcing more than
    ``max_message_size`` is refused as soon as it is parsed, before any of the
    payload is stored, and a large payload is kept as the chunks it arrived in
    until it is complete, so nothing is allocated ahead of the data.

    When the stream breaks the format, ``feed`` still returns the messages
    that came before the fault, sets :attr:`failure` and raises it on every
    later call: no complete message is lost to a later error.

    Args:
        max_message_size: the longest payload accepted, in bytes; ``None``
            for no limit.
    """

    __slots__ = (
        "_chunks",
        "_header",
        "_is_text",
        "_length",
        "_missing",
        "failure",
        "max_message_size",
    )

    def __init__(self, max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.max_message_size = max_message_size
        #: The exception that broke the stream, once it has broken.
        self.failure: ProtocolError | None = None
        self._header = bytearray()
        self._chunks: list[bytes] = []
        # Payload bytes still owed to the message in progress; -1 between messages.
        self._missing = -1
        # The length of the payload in progress.
        self._length = 0
        self._is_text = False

    @property
    def in_progress(self) -> bool:
        """True while part of a message (header or payload) has been fed."""
        return self._missing >= 0 or bool(self._header)

    @property
    def payload_missing(self) -> int:
        """Bytes still owed to the payload in progress (0 between messages).

        An I/O layer can receive exactly that many bytes into a fresh buffer
        and feed them whole, so a large payload is never copied twice.
        """
        return self._missing if self._missing > 0 else 0

    @property
    def payload_received(self) -> int:
        """Bytes of the payload in progress received so far (0 between messages)."""
        return self._length - self._missing if self._missing > 0 else 0

    @property
    def payload_is_text(self) -> bool:
        """Whether the payload in progress is UTF-8 text (meaningful while one is)."""
        return self._is_text

    def detach_payload(self) -> tuple[list[bytes], int, bool]:
        """Hand the payload in progress over to the caller.

        Returns ``(pieces, missing, is_text)``: the payload bytes received so
        far, how many more belong to it, and its type. The decoder then stands
        between messages: the caller takes the next ``missing`` bytes of the
        stream as the rest of this payload, assembles the message itself, and
        feeds only what follows. An I/O layer does this to receive a large
        payload straight into a buffer of its choosing.

        Raises:
            RuntimeError: no payload is in progress.
        """
        if self._missing <= 0:
            raise RuntimeError("no payload is in progress")
        pieces, self._chunks = self._chunks, []
        missing, self._missing = self._missing, -1
        return pieces, missing, self._is_text

    def feed(self, data: BytesLike) -> list[Message]:
        """Consume ``data`` and return the messages it completes, in order.

        Raises:
            ProtocolError: (or its subclass :class:`MessageTooLarge`) if the
                stream was already broken by an earlier call.
        """
        if self.failure is not None:
            raise self.failure
        out: list[Message] = []
        try:
            self._feed(data, out)
        except ProtocolError as exc:
            self.failure = exc
            self._header.clear()
            self._chunks.clear()
            self._missing = -1
        return out

    def feed_small(self, data: BytesLike, size: int) -> bytes | None:
        """Decode ``data[:size]`` if it is exactly one whole ``bytes`` message under 8 KiB.

        Returns its payload, or ``None``, having consumed nothing, for
        anything else: more or less than one message, text, a longer
        header, or part of a message in progress. :meth:`feed` decodes
        those; this is the cheap path for a lone small request or reply.
        """
        if size < 2 or self._missing >= 0 or self._header or self.failure is not None:
            return None
        first = data[0]
        if not first & _BYTES:
            return None
        if first & _LAST:
            start = 1
            length = first & _FIRST_LENGTH_MASK
        elif data[1] & _LAST:
            start = 2
            length = first & _FIRST_LENGTH_MASK | (data[1] & _NEXT_LENGTH_MASK) << 6
        else:
            return None
        if start + length != size:
            return None
        limit = self.max_message_size
        if limit is not None and length > limit:
            return None
        return bytes(data[start:size])

    def eof(self) -> None:
        """Declare the end of the stream.

        Raises:
            IncompleteMessage: if it ended inside a message, which is dropped.
        """
        if self.in_progress:
            owed = self._missing if self._missing >= 0 else "an unknown number of"
            self._header.clear()
            self._chunks.clear()
            self._missing = -1
            raise IncompleteMessage(f"stream ended inside a message ({owed} bytes missing)")

    def _check_size(self, length: int) -> None:
        limit = self.max_message_size
        if limit is not None and length > limit:
            raise MessageTooLarge(length, limit)

    def _feed(self, data: BytesLike, out: list[Message]) -> None:
        end = len(data)
        pos = 0
        limit = self.max_message_size
        if limit is None:
            limit = _NO_LIMIT
        if self._missing >= 0:
            pos = self._continue_payload(data, end, out)
        elif self._header:
            pos = self._continue_header(data, end, out)
        if (
            type(data) is not bytes
            and self._missing < 0
            and end - pos > 1
            and _starts_small(data, pos)
        ):
            # What follows starts with a message under 8 KiB (a one- or
            # two-byte header), so likely holds many: one copy of it all
            # makes each a single slice, where a memoryview needs a slice
            # and a copy. A large payload next is left alone, so it is
            # copied once.
            data = bytes(data[pos:])
            end -= pos
            pos = 0
        whole = data if type(data) is bytes else None
        append = out.append
        previous = -1  # the header byte that began the message before
        # The hot loop: whole messages lying in ``data``, no state kept.
        # Headers of up to three bytes (payloads under 1 MiB) are parsed inline.
        while pos < end:
            first = data[pos]
            if first & _LAST:
                length = first & _FIRST_LENGTH_MASK
                start = pos + 1
            elif pos + 1 < end and data[pos + 1] & _LAST:
                length = first & _FIRST_LENGTH_MASK | (data[pos + 1] & _NEXT_LENGTH_MASK) << 6
                start = pos + 2
            elif pos + 2 < end and data[pos + 2] & _LAST:
                # Three bytes: payloads from 8 KiB up to 1 MiB.
                length = (
                    first & _FIRST_LENGTH_MASK
                    | (data[pos + 1] & _NEXT_LENGTH_MASK) << 6
                    | (data[pos + 2] & _NEXT_LENGTH_MASK) << 13
                )
                start = pos + 3
            else:
                start, length = _parse_header(data, pos, end)
                if start < 0:
                    self._header += data[pos:end]
                    return
            if length > limit:
                raise MessageTooLarge(length, limit)
            stop = start + length
            if stop > end:
                self._begin_payload(data, start, end, length, not first & _BYTES)
                return
            if first & _BYTES:
                append(whole[start:stop] if whole is not None else bytes(data[start:stop]))
            else:
                try:
                    append(str(data[start:stop], "utf-8"))
                except UnicodeDecodeError as exc:
                    raise ProtocolError(f"text message is not valid UTF-8: {exc.reason}") from exc
            if first == previous and whole is not None and first & _BYTES and start - pos <= 2:
                # Two alike in a row: likely a run of them (fixed-size records).
                stop = _take_run(whole, pos, start, stop, end, out)
            previous = first
            pos = stop

    def _continue_header(self, data: BytesLike, end: int, out: list[Message]) -> int:
        header = self._header
        pos = 0
        # At most MAX_HEADER_SIZE bytes ever go through here, one at a time.
        while pos < end:
            header.append(data[pos])
            pos += 1
            start, length = _parse_header(header, 0, len(header))
            if start >= 0:
                is_text = not header[0] & _BYTES
                header.clear()
                self._check_size(length)
                return self._begin_payload(data, pos, end, length, is_text, out)
        return pos

    def _begin_payload(
        self,
        data: BytesLike,
        start: int,
        end: int,
        length: int,
        is_text: bool,
        out: list[Message] | None = None,
    ) -> int:
        self._missing = length
        self._length = length
        self._is_text = is_text
        if out is None:
            # Called from the hot loop, which knows the payload runs past ``end``.
            self._store(data, start, end)
            self._missing -= end - start
            return end
        return self._continue_payload(data, end, out, start)

    def _continue_payload(
        self, data: BytesLike, end: int, out: list[Message], start: int = 0
    ) -> int:
        take = min(self._missing, end - start)
        if take:
            self._store(data, start, start + take)
            self._missing -= take
        if self._missing:
            return end
        chunks = self._chunks
        payload = chunks[0] if len(chunks) == 1 else b"".join(chunks)  # 0 chunks: b""
        chunks.clear()
        self._missing = -1
        out.append(_finish(payload, self._is_text))
        return start + take

    def _store(self, data: BytesLike, start: int, stop: int) -> None:
        if start == stop:
            # A header alone (read so, to receive its payload whole): an
            # empty chunk would make the payload a join, a copy.
            return
        if start == 0 and stop == len(data) and isinstance(data, bytes):
            # The I/O layer receives a large payload's tail into a fresh
            # ``bytes`` of exactly the missing size: keep it, copy nothing.
            self._chunks.append(data)
        else:
            self._chunks.append(bytes(data[start:stop]))
