"""The outbound buffers' pure helpers: what a batch holds, and a bytes payload's header.

No sockets: messages in, the buffers a queue would hold out.
"""

from __future__ import annotations

import pytest

from stockings import Decoder, MessageTooLarge, encode, encode_header
from stockings._buffers import BYTES_FRAMED, BYTES_HEADERS, Batch, batch_parts, bytes_header
from stockings._common import LARGE_PAYLOAD

__all__: list[str] = []

MIXED: list[object] = [
    b"a",
    "text",
    bytearray(b"mutable"),
    b"x" * 2_000,
    b"L" * LARGE_PAYLOAD,
    memoryview(b"M" * (LARGE_PAYLOAD + 1)),
    b"z",
]


def test_ready_made_headers_are_the_encoders() -> None:
    for length in (0, 63, 64, 1023):
        assert BYTES_HEADERS[length] == encode_header(length, False)
        assert BYTES_FRAMED[length] == len(encode_header(length, False)) + length


@pytest.mark.parametrize("large_apart", [True, False])
def test_a_batch_decodes_to_its_messages_in_order(large_apart: bool) -> None:
    items, total, count = batch_parts(MIXED, None, 1024, large_apart)
    stream = b"".join(bytes(item) for item in items)
    assert (count, total) == (len(MIXED), len(stream))
    assert stream == b"".join(encode(m) for m in MIXED)  # type: ignore[arg-type]
    assert Decoder(None).feed(stream) == [bytes(m) if not isinstance(m, str) else m for m in MIXED]  # type: ignore[call-overload]


def test_large_payloads_travel_apart_uncopied_only_when_asked() -> None:
    items, _, _ = batch_parts(MIXED, None, 1024, True)
    large = MIXED[4]
    assert any(item is large for item in items)
    # The memoryview's payload became bytes of its own: the caller may change it.
    assert all(type(item) in (Batch, bytes) for item in items)
    joined, _, _ = batch_parts(MIXED, None, 1024, False)
    assert [type(item) for item in joined] == [Batch]


def test_a_message_over_the_limit_fails_the_whole_batch() -> None:
    with pytest.raises(MessageTooLarge):
        batch_parts([b"ok", "x" * 101, b"ok"], 100, 101, True)
    assert batch_parts([], 100, 101, True) == ([], 0, 0)


def test_a_bytes_header_knows_whether_its_message_may_join_a_batch() -> None:
    assert bytes_header(2_000, None) == (encode_header(2_000, False), 2_002)
    assert bytes_header(LARGE_PAYLOAD - 1, None)[1] == LARGE_PAYLOAD + 2
    assert bytes_header(LARGE_PAYLOAD, None) == (encode_header(LARGE_PAYLOAD, False), 0)
    assert bytes_header(5_000, 5_000)[0] == encode_header(5_000, False)
    with pytest.raises(MessageTooLarge):
        bytes_header(5_001, 5_000)
