"""The sans-IO codec: the test vectors of docs/wire.md, any split of the stream, every fault.

No sockets here: bytes go into a ``Decoder`` and messages come out.
"""

from __future__ import annotations

import array
import pickle
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockings import (
    Decoder,
    IncompleteMessage,
    MessageTooLarge,
    ProtocolError,
    _framing,
    encode,
    encode_header,
)
from stockings._framing import MAX_HEADER_SIZE, Message

# The format's rule, spelled out rather than read back from the code under test.
LONGEST_HEADER = 10

__all__: list[str] = []

# The table of docs/wire.md, produced by Stockings 1.2.3 itself: (length, bytes header, str header).
WIRE_VECTORS = [
    (0, "c0", "80"),
    (1, "c1", "81"),
    (63, "ff", "bf"),
    (64, "4081", "0081"),
    (100, "6481", "2481"),
    (127, "7f81", "3f81"),
    (128, "4082", "0082"),
    (8191, "7fff", "3fff"),
    (8192, "400081", "000081"),
    (8256, "400181", "000181"),
    (1048575, "7f7fff", "3f7fff"),
    (1048576, "40000081", "00000081"),
    (2147483648, "4000000090", "0000000090"),
    (1099511627776, "4000000000c0", "0000000000c0"),
]
# Lengths small enough to build a real payload for.
SMALL_VECTORS = [v for v in WIRE_VECTORS if v[0] <= 1048576]
BOUNDARIES = [0, 1, 63, 64, 127, 128, 8191, 8192, 8193]


def decode_all(stream: bytes, chunks: list[int] | None = None) -> list[Message]:
    """Feed ``stream`` in pieces of the ``chunks`` sizes; return every message (clean end)."""
    decoder = Decoder(max_message_size=None)
    out: list[Message] = []
    pos = 0
    for size in chunks or [len(stream)]:
        out += decoder.feed(stream[pos : pos + size])
        pos += size
    out += decoder.feed(stream[pos:])
    decoder.eof()
    assert not decoder.in_progress
    return out


# ---------------------------------------------------------------- test vectors


@pytest.mark.parametrize(("length", "as_bytes", "as_text"), WIRE_VECTORS)
def test_encode_header_matches_wire_vectors(length: int, as_bytes: str, as_text: str) -> None:
    assert encode_header(length, is_text=False) == bytes.fromhex(as_bytes)
    assert encode_header(length, is_text=True) == bytes.fromhex(as_text)


@pytest.mark.parametrize(("length", "as_bytes", "as_text"), SMALL_VECTORS)
def test_encode_and_decode_full_messages_of_vector_lengths(
    length: int, as_bytes: str, as_text: str
) -> None:
    payload = bytes(range(256)) * (length // 256) + bytes(range(length % 256))
    text = "t" * length
    assert encode(payload) == bytes.fromhex(as_bytes) + payload
    assert encode(text) == bytes.fromhex(as_text) + text.encode()
    decoded = Decoder().feed(encode(payload) + encode(text))
    assert decoded == [payload, text]
    assert type(decoded[0]) is bytes
    assert type(decoded[1]) is str


@pytest.mark.parametrize(("length", "as_bytes", "as_text"), WIRE_VECTORS)
def test_decoder_reads_vector_headers(length: int, as_bytes: str, as_text: str) -> None:
    for header in (bytes.fromhex(as_bytes), bytes.fromhex(as_text)):
        decoder = Decoder(max_message_size=None)
        if length == 0:
            assert decoder.feed(header) == [b"" if header[0] & 0x40 else ""]
            continue
        assert decoder.feed(header) == []
        assert decoder.in_progress
        assert decoder.payload_missing == length


def test_wire_md_examples() -> None:
    assert encode(b"hi") == bytes.fromhex("c26869")
    assert encode("hi") == bytes.fromhex("826869")
    assert Decoder().feed(bytes.fromhex("c26869826869")) == [b"hi", "hi"]


def test_empty_messages_are_messages() -> None:
    # 1.2.3's writer never sends these, but its reader delivers them.
    assert encode("") == b"\x80"
    assert encode(b"") == b"\xc0"
    assert Decoder().feed(b"\x80\xc0\x80") == ["", b"", ""]


def test_longest_legal_header_decodes() -> None:
    # Ten header bytes: the first and nine continuation bytes, the last one marked.
    assert MAX_HEADER_SIZE == LONGEST_HEADER
    header = b"\x40" + b"\x00" * (LONGEST_HEADER - 2) + b"\x80"
    assert len(header) == LONGEST_HEADER
    assert Decoder().feed(header) == [b""]


# ---------------------------------------------------------------------- encode


def test_encode_text_is_utf8() -> None:
    text = "héllo wörld ✓ 𝄞"
    payload = text.encode("utf-8")
    assert encode(text) == encode_header(len(payload), True) + payload
    assert Decoder().feed(encode(text)) == [text]


@pytest.mark.parametrize(
    "message",
    [b"abc", bytearray(b"abc"), memoryview(b"abc"), memoryview(bytearray(b"abc"))],
    ids=["bytes", "bytearray", "memoryview", "memoryview-of-bytearray"],
)
def test_encode_bytes_likes_travel_as_bytes(message: bytes | bytearray | memoryview) -> None:
    assert encode(message) == b"\xc3abc"
    assert Decoder().feed(encode(message)) == [b"abc"]


def test_encode_memoryview_of_ints_counts_bytes_not_items() -> None:
    numbers = array.array("i", [1, -2, 3, 1 << 30])
    view = memoryview(numbers)
    raw = numbers.tobytes()
    assert len(view) == 4 and len(raw) == 4 * numbers.itemsize
    assert encode(view) == encode_header(len(raw), False) + raw
    assert Decoder().feed(encode(view)) == [raw]


def test_encode_non_contiguous_and_multidimensional_memoryviews() -> None:
    strided = memoryview(b"abcdefgh")[::2]
    assert encode(strided) == b"\xc4aceg"
    matrix = memoryview(bytes(range(6))).cast("B", (2, 3))
    assert encode(matrix) == b"\xc6" + bytes(range(6))


def test_encode_any_contiguous_buffer_as_its_raw_bytes() -> None:
    numbers = array.array("i", [1, -2, 3, 1 << 30])
    raw = numbers.tobytes()
    assert encode(numbers) == encode_header(len(raw), False) + raw
    assert encode(array.array("d")) == encode_header(0, False)
    assert encode(pickle.PickleBuffer(b"abc")) == b"\xc3abc"


def test_encode_refuses_a_non_contiguous_buffer_clearly() -> None:
    strided = pickle.PickleBuffer(memoryview(b"abcdefgh")[::2])
    with pytest.raises(TypeError, match="C-contiguous"):
        encode(strided)


@pytest.mark.parametrize("bad", [None, 1, 1.5, ["a"], {"a": 1}, object(), ("a",)])
def test_encode_rejects_other_types(bad: object) -> None:
    with pytest.raises(TypeError):
        encode(bad)


def test_encode_header_rejects_negative_length() -> None:
    with pytest.raises(ValueError):
        encode_header(-1, True)


# ------------------------------------------------------------------ any split

boundary_bytes = st.sampled_from(BOUNDARIES).flatmap(
    lambda n: st.binary(min_size=n, max_size=n) if n <= 128 else st.just(bytes([n % 251]) * n)
)
# Two-byte characters make the byte length differ from the character count.
boundary_text = st.sampled_from(BOUNDARIES).map(lambda n: "é" * (n // 2) + "a" * (n % 2))
messages_strategy = st.lists(
    st.one_of(st.text(), st.binary(), boundary_bytes, boundary_text), max_size=20
)


@settings(deadline=None, max_examples=200)
@given(messages=messages_strategy, data=st.data())
def test_any_split_decodes_the_same(messages: list[Message], data: st.DataObject) -> None:
    stream = b"".join(encode(m) for m in messages)
    cuts = sorted(
        data.draw(st.lists(st.integers(0, len(stream)), max_size=30, unique=True), label="cuts")
    )
    kind = data.draw(st.sampled_from([bytes, bytearray, memoryview]), label="chunk type")
    decoder = Decoder(max_message_size=None)
    out: list[Message] = []
    previous = 0
    for cut in [*cuts, len(stream)]:
        out += decoder.feed(kind(stream[previous:cut]))
        previous = cut
    decoder.eof()
    assert out == messages
    assert [type(m) for m in out] == [type(m) for m in messages]


# Runs of alike messages take a shortcut through the decoder: sizes from a
# small set, whose headers share their first byte (100 and 164) or differ.
run_sizes = st.sampled_from([0, 1, 5, 63, 64, 100, 164, 8191])
runs_strategy = st.lists(
    # Up to 150 alike: past two of the longest cuts of a run, and the shorter ones.
    st.tuples(run_sizes, st.integers(1, 150), st.booleans()).map(
        lambda spec: [
            ("t" * spec[0]) if spec[2] else bytes([i % 256]) * spec[0] for i in range(spec[1])
        ]
    ),
    max_size=8,
).map(lambda runs: [message for run in runs for message in run])


@settings(deadline=None, max_examples=200)
@given(messages=runs_strategy, data=st.data())
def test_runs_of_alike_messages_decode_the_same_in_any_split(
    messages: list[Message], data: st.DataObject
) -> None:
    stream = b"".join(encode(m) for m in messages)
    cuts = sorted(
        data.draw(st.lists(st.integers(0, len(stream)), max_size=6, unique=True), label="cuts")
    )
    decoder = Decoder(max_message_size=None)
    out: list[Message] = []
    previous = 0
    for cut in [*cuts, len(stream)]:
        out += decoder.feed(memoryview(stream)[previous:cut])
        previous = cut
    decoder.eof()
    assert out == messages
    assert [type(m) for m in out] == [type(m) for m in messages]


def test_a_run_stops_where_the_length_changes_behind_the_same_first_byte() -> None:
    # 100 and 164 share their header's first byte; only the second tells them apart.
    assert encode_header(100, False)[0] == encode_header(164, False)[0]
    messages = [b"a" * 100] * 10 + [b"b" * 164] * 3 + [b"c" * 100] * 7
    assert Decoder().feed(b"".join(map(encode, messages))) == messages


@pytest.mark.parametrize("count", [5, 8, 9, 66, 72, 73, 2 + 64 * 3 + 8 * 7 + 7])
@pytest.mark.parametrize("size", [0, 1, 100, 8191])
def test_a_run_is_cut_whole_at_every_cut_size(count: int, size: int) -> None:
    # Each payload its own: a payload cut from its neighbour's place shows.
    messages: list[Message] = [
        i.to_bytes(2, "big") * (size // 2) + b"!" * (size % 2) for i in range(count)
    ]
    stream = b"".join(map(encode, messages))
    assert Decoder().feed(stream + encode(b"end")) == [*messages, b"end"]


def test_runs_of_ever_new_lengths_keep_few_layouts() -> None:
    decoder = Decoder()
    for length in range(1, 400):
        messages = [bytes([length % 256]) * length] * 70
        assert decoder.feed(b"".join(map(encode, messages))) == messages
    assert 0 < len(_framing._run_layouts) <= _framing._RUN_LAYOUTS_KEPT


def test_a_run_stops_at_a_text_message_and_at_the_end_of_the_data() -> None:
    messages: list[Message] = [b"x" * 10] * 9 + ["x" * 10] + [b"x" * 10] * 9
    stream = b"".join(map(encode, messages)) + encode(b"x" * 10)[:5]
    decoder = Decoder()
    assert decoder.feed(stream) == messages
    assert decoder.feed(encode(b"x" * 10)[5:]) == [b"x" * 10]


@settings(deadline=None, max_examples=50)
@given(messages=st.lists(st.one_of(st.text(max_size=200), st.binary(max_size=200)), max_size=10))
def test_one_byte_at_a_time_decodes_the_same(messages: list[Message]) -> None:
    stream = b"".join(encode(m) for m in messages)
    assert decode_all(stream, [1] * len(stream)) == messages


@pytest.mark.parametrize("length", [*BOUNDARIES, 1048575, 1048576])
def test_boundary_sizes_one_byte_at_a_time_through_the_header(length: int) -> None:
    payload = b"\xab" * length
    stream = encode(payload) + encode("after")
    header_size = len(encode_header(length, False))
    # Header a byte at a time, then the payload in two uneven pieces.
    chunks = [1] * header_size + [length // 3, length - length // 3]
    assert decode_all(stream, chunks) == [payload, "after"]


def test_three_byte_headers_decode_wherever_they_start_and_are_cut() -> None:
    # Headers of up to three bytes are parsed inside the decoder's loop, a
    # longer one by the general parser: the two must agree on every length
    # at the edges, after other messages, with the stream cut at every byte
    # around each header.
    messages: list[Message] = [
        b"a",
        b"x" * 8192,
        "\u00e9" * 5000,
        b"y" * 1048575,
        b"z" * 8193,
        b"w" * 1048576,
        "t" * 8191,
    ]
    stream = b"".join(encode(m) for m in messages)
    starts = []
    pos = 0
    for message in messages:
        starts.append(pos)
        pos += len(encode(message))
    for start in starts:
        for cut in range(max(start - 1, 0), start + 5):
            assert decode_all(stream, [cut]) == messages, cut


# ------------------------------------------------------------------- bad input


def test_header_longer_than_ten_bytes_is_a_protocol_error() -> None:
    decoder = Decoder(max_message_size=None)
    assert decoder.feed(b"\x00" * LONGEST_HEADER) == []
    assert isinstance(decoder.failure, ProtocolError)
    with pytest.raises(ProtocolError):
        decoder.feed(b"\x80")


def test_endless_header_one_byte_at_a_time_is_a_protocol_error() -> None:
    decoder = Decoder(max_message_size=None)
    for _ in range(LONGEST_HEADER - 1):
        assert decoder.feed(b"\x00") == []
        assert decoder.failure is None
    assert decoder.feed(b"\x00") == []
    assert isinstance(decoder.failure, ProtocolError)
    with pytest.raises(ProtocolError):
        decoder.feed(b"\x00")


def test_over_the_limit_is_refused_from_the_header_alone() -> None:
    decoder = Decoder(max_message_size=1000)
    # A 2**40-byte announcement: refused at once, nothing waits for the payload.
    assert decoder.feed(encode_header(1 << 40, False)) == []
    failure = decoder.failure
    assert isinstance(failure, MessageTooLarge)
    assert failure.size == 1 << 40
    assert failure.limit == 1000
    assert not decoder.in_progress
    assert decoder.payload_missing == 0
    with pytest.raises(MessageTooLarge):
        decoder.feed(b"x" * 100)


def test_over_the_limit_split_header_is_refused() -> None:
    header = encode_header(1 << 40, True)
    decoder = Decoder(max_message_size=1000)
    for i in range(len(header)):
        assert decoder.feed(header[i : i + 1]) == []
    assert isinstance(decoder.failure, MessageTooLarge)


def test_over_the_limit_with_payload_in_the_same_feed_stores_nothing() -> None:
    decoder = Decoder(max_message_size=1000)
    stream = encode("ok") + encode(b"x" * (1 << 20)) + encode("never")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        assert decoder.feed(stream) == ["ok"]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert isinstance(decoder.failure, MessageTooLarge)
    # The exception and the returned list cost a little; the 1 MiB payload is not kept.
    assert held < 64 * 1024
    assert not decoder.in_progress


def test_exactly_at_the_limit_is_accepted() -> None:
    assert Decoder(max_message_size=5).feed(encode(b"12345")) == [b"12345"]
    decoder = Decoder(max_message_size=5)
    assert decoder.feed(encode(b"123456")) == []
    assert isinstance(decoder.failure, MessageTooLarge)


def test_a_huge_announcement_allocates_nothing_ahead_of_the_data() -> None:
    decoder = Decoder(max_message_size=None)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        assert decoder.feed(encode_header(1 << 40, False) + b"0123456789") == []
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert decoder.payload_missing == (1 << 40) - 10
    assert held < 64 * 1024


def test_invalid_utf8_is_a_protocol_error() -> None:
    decoder = Decoder()
    assert decoder.feed(b"\x82\xff\xfe") == []
    assert isinstance(decoder.failure, ProtocolError)
    assert not isinstance(decoder.failure, MessageTooLarge)


def test_invalid_utf8_split_across_feeds_is_a_protocol_error() -> None:
    # Invalid bytes inside a payload that spans feeds go through another path.
    decoder = Decoder()
    header = encode_header(100, True)
    assert decoder.feed(header + b"a" * 50) == []
    assert decoder.feed(b"\xc3" + b"a" * 49) == []
    assert isinstance(decoder.failure, ProtocolError)


def test_the_same_bytes_as_bytes_are_fine() -> None:
    assert Decoder().feed(b"\xc2\xff\xfe") == [b"\xff\xfe"]


@pytest.mark.parametrize(
    "garbage",
    [b"\x82\xff\xfe", b"\x00" * 11, encode_header(1 << 40, False)],
    ids=["bad-utf8", "endless-header", "too-large"],
)
def test_messages_before_a_fault_are_returned_and_later_feeds_raise(garbage: bytes) -> None:
    decoder = Decoder(max_message_size=1 << 20)
    before = [encode("first"), encode(b"second"), encode("")]
    assert decoder.feed(b"".join(before) + garbage + encode("after")) == ["first", b"second", ""]
    failure = decoder.failure
    assert isinstance(failure, ProtocolError)
    with pytest.raises(ProtocolError) as raised:
        decoder.feed(encode("more"))
    assert raised.value is failure
    with pytest.raises(ProtocolError):
        decoder.feed(b"")


def test_eof_between_messages_is_fine() -> None:
    decoder = Decoder()
    assert decoder.feed(encode("a")) == ["a"]
    decoder.eof()
    Decoder().eof()


@pytest.mark.parametrize(
    "partial",
    [encode(b"x" * 100)[:1], encode(b"x" * 100)[:2], encode(b"x" * 100)[:50], b"\x00"],
    ids=["header-only", "header-done", "mid-payload", "mid-header"],
)
def test_eof_inside_a_message_is_incomplete(partial: bytes) -> None:
    decoder = Decoder()
    assert decoder.feed(partial) == []
    assert decoder.in_progress
    with pytest.raises(IncompleteMessage):
        decoder.eof()
    assert not decoder.in_progress


def test_incomplete_message_is_a_protocol_error() -> None:
    assert issubclass(IncompleteMessage, ProtocolError)
    assert issubclass(MessageTooLarge, ProtocolError)


# ------------------------------------------------------------ progress state


def test_in_progress_and_payload_missing() -> None:
    decoder = Decoder()
    assert not decoder.in_progress
    assert decoder.payload_missing == 0
    header = encode_header(64, True)
    assert len(header) == 2
    assert decoder.feed(header[:1]) == []
    assert decoder.in_progress
    assert decoder.payload_missing == 0  # the length is not known yet
    assert decoder.feed(header[1:]) == []
    assert decoder.in_progress
    assert decoder.payload_missing == 64
    assert decoder.feed(b"a" * 10) == []
    assert decoder.payload_missing == 54
    assert decoder.feed(b"a" * 53) == []
    assert decoder.payload_missing == 1
    assert decoder.feed(b"a" + encode_header(3, False)) == ["a" * 64]
    assert decoder.in_progress
    assert decoder.payload_missing == 3
    assert decoder.feed(b"xyz") == [b"xyz"]
    assert not decoder.in_progress
    assert decoder.payload_missing == 0


def test_payload_missing_supports_exact_receives() -> None:
    # An I/O layer receives exactly ``payload_missing`` bytes into a fresh bytes object.
    payload = bytes(range(256)) * 1024
    decoder = Decoder()
    assert decoder.feed(encode(payload)[:1000]) == []
    rest = encode(payload)[1000:]
    assert decoder.payload_missing == len(rest)
    assert decoder.feed(bytes(rest)) == [payload]


def test_empty_feed_changes_nothing() -> None:
    decoder = Decoder()
    assert decoder.feed(b"") == []
    assert not decoder.in_progress
    assert decoder.feed(b"\x05") == []
    assert decoder.feed(b"") == []
    assert decoder.in_progress


@pytest.mark.parametrize("length", [64 * 1024, 300 * 1024, 2**20])
def test_a_payload_fed_whole_after_its_header_alone_is_returned_uncopied(length: int) -> None:
    # The receiver reads a large payload's header alone, then the payload
    # in one ``recv``: the bytes it got are the message, not a join of them.
    decoder = Decoder()
    assert decoder.feed(encode_header(length, False)) == []
    assert decoder.payload_missing == length and decoder.payload_received == 0
    payload = bytes(length)
    (message,) = decoder.feed(payload)
    assert message is payload
