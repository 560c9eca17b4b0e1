"""The buffers' pure helpers: how a channel frames its writes, and assembles a large payload.

No sockets: messages in, the buffers a queue would hold out; bytes written
into an assembly, the payload a reader gets out.
"""

from __future__ import annotations

import gc
import sys

import pytest

from stockings import Decoder, MessageTooLarge, encode, encode_header
from stockings._buffers import Assembly, Batch, batch_parts
from stockings._common import LARGE_PAYLOAD
from stockings._encoding import BYTES_FRAMED, BYTES_HEADERS, WriteFraming

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
    items, total, count = batch_parts(MIXED, WriteFraming(None), large_apart)
    stream = b"".join(bytes(item) for item in items)
    assert (count, total) == (len(MIXED), len(stream))
    assert stream == b"".join(encode(m) for m in MIXED)  # type: ignore[arg-type]
    assert Decoder(None).feed(stream) == [bytes(m) if not isinstance(m, str) else m for m in MIXED]  # type: ignore[call-overload]


def test_large_payloads_travel_apart_uncopied_only_when_asked() -> None:
    items, _, _ = batch_parts(MIXED, WriteFraming(None), True)
    large = MIXED[4]
    assert any(item is large for item in items)
    # The memoryview's payload became bytes of its own: the caller may change it.
    assert all(type(item) in (Batch, bytes) for item in items)
    joined, _, _ = batch_parts(MIXED, WriteFraming(None), False)
    assert [type(item) for item in joined] == [Batch]


def test_a_message_over_the_limit_fails_the_whole_batch() -> None:
    with pytest.raises(MessageTooLarge):
        batch_parts([b"ok", "x" * 101, b"ok"], WriteFraming(100), True)
    with pytest.raises(MessageTooLarge):
        batch_parts([b"ok", b"x" * 101], WriteFraming(100), False)
    assert batch_parts([], WriteFraming(100), True) == ([], 0, 0)


def test_framing_says_which_bytes_messages_may_join_a_batch() -> None:
    framing = WriteFraming(None)
    message = b"x" * 2_000
    assert framing.frame(message) == (encode_header(2_000, False), message, 2_002)
    assert framing.frame(b"y" * (LARGE_PAYLOAD - 1))[2] == LARGE_PAYLOAD + 2
    large = b"L" * LARGE_PAYLOAD
    header, payload, framed = framing.frame(large)
    assert (header, framed) == (encode_header(LARGE_PAYLOAD, False), 0)
    assert payload is large
    assert framing.frame(b"abc") == (encode_header(3, False), b"abc", 4)
    assert framing.frame("text")[2] == 0
    assert framing.frame(bytearray(b"mutable"))[2] == 0


def test_framing_remembers_a_length_only_for_its_header() -> None:
    framing = WriteFraming(None)
    first = b"a" * 3_000
    second = b"b" * 3_000
    assert framing.frame(first)[1] is first
    header, payload, _ = framing.frame(second)
    assert (header, payload) == (encode_header(3_000, False), second)
    assert framing.frame(b"c" * 3_001)[0] == encode_header(3_001, False)
    assert framing.frame(b"d" * 3_000)[0] == encode_header(3_000, False)


def test_framing_copies_only_large_mutable_payloads() -> None:
    framing = WriteFraming(None)
    small = bytearray(b"s" * 100)
    assert framing.frame(small)[1] is small
    large = bytearray(LARGE_PAYLOAD)
    payload = framing.frame(large)[1]
    assert type(payload) is bytes and payload == large
    assert framing.frame(memoryview(bytes(LARGE_PAYLOAD)))[1] == bytes(LARGE_PAYLOAD)
    assert framing.frame("é" * 10) == (encode_header(20, True), "é".encode() * 10, 0)


@pytest.mark.parametrize(
    "message", [b"x" * 5_001, "x" * 5_001, bytearray(5_001), memoryview(bytes(5_001))]
)
def test_framing_refuses_a_message_over_the_limit_every_time(message: object) -> None:
    framing = WriteFraming(5_000)
    assert framing.frame(b"x" * 5_000)[0] == encode_header(5_000, False)
    for _ in range(2):
        with pytest.raises(MessageTooLarge):
            framing.frame(message)


def test_framing_takes_ready_made_headers_only_within_the_limit() -> None:
    assert WriteFraming(None).small_limit == len(BYTES_HEADERS)
    assert WriteFraming(10).small_limit == 11
    with pytest.raises(MessageTooLarge):
        WriteFraming(10).frame(b"x" * 11)
    with pytest.raises(TypeError, match="str or bytes-like"):
        WriteFraming(None).frame(12)


def _fill(assembly: Assembly, data: bytes, piece: int) -> None:
    """Write ``data`` into ``assembly`` as a receiver would, ``piece`` bytes at a time."""
    while assembly.have < assembly.size:
        step = min(piece, assembly.size - assembly.have)
        assembly.view[assembly.have : assembly.have + step] = data[
            assembly.have : assembly.have + step
        ]
        assembly.have += step


def test_an_assembly_gives_the_bytes_written_into_it_and_the_same_object_again() -> None:
    data = bytes(range(256)) * 1000
    assembly = Assembly(len(data))
    assert len(assembly) == len(data)
    _fill(assembly, data, 7_000)
    payload = assembly.finish()
    assert type(payload) is bytes
    assert payload == data
    # A read interrupted inside finish() calls it again: the same payload.
    assert assembly.finish() is payload
    # Done with: nothing writes into its buffer any more.
    with pytest.raises(ValueError):
        assembly.view[0] = 1


def test_assemblies_share_nothing() -> None:
    first, second = Assembly(100_000), Assembly(100_000)
    _fill(first, b"a" * 100_000, 100_000)
    _fill(second, b"b" * 100_000, 100_000)
    kept = first.finish()
    assert second.finish() == b"b" * 100_000
    assert kept == b"a" * 100_000


class _Cycle:
    """An object that refers to itself: only the cycle collector frees it."""

    def __init__(self, held: object) -> None:
        self.held = held
        self.itself = self


def test_an_unfinished_assembly_collected_in_a_cycle_reports_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A connection that ended inside a payload, its assembly caught in an
    # exception's frames: the collector meets the assembly's view still
    # open on its buffer. (A buffer lent out by a BytesIO, tried here to
    # save the copy, crashed Python 3.12 so and had 3.13 report an error.)
    ignored: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", ignored.append)
    assembly = Assembly(100_000)
    _Cycle((assembly, assembly.view[10:20]))
    _Cycle(Assembly(100_000))
    del assembly
    gc.collect()
    assert ignored == []
