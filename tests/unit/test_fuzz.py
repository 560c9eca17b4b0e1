"""Fuzzing the decoder: random bytes, random splits, random limits.

The decoder is compared with a reference decoder written here from docs/wire.md,
slow and plain: the same messages, the same fault at the same place, and
never anything but a ``ProtocolError`` escaping. While it works it may hold
no more than it was fed, and no more than ``MAX_HEADER_SIZE`` header bytes.

Short in CI; for a long run set ``STOCKINGS_FUZZ_EXAMPLES`` (examples per
test), e.g. ``STOCKINGS_FUZZ_EXAMPLES=200000 pytest tests/unit/test_fuzz.py``.
``fuzz/fuzz_decoder.py`` runs the same check under atheris (coverage-guided).
"""

from __future__ import annotations

import itertools
import os
import socket
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import logged_errors, wait_until
from stockings import (
    Decoder,
    EndReason,
    Hub,
    IncompleteMessage,
    MessageTooLarge,
    ProtocolError,
    Stocking,
    encode,
    encode_header,
)
from stockings._framing import MAX_HEADER_SIZE, Message

__all__ = ["Outcome", "check_decoder", "reference_decode"]

EXAMPLES = int(os.environ.get("STOCKINGS_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Spelled out from docs/wire.md rather than read back from the code under test.
LONGEST_HEADER = 10


class Outcome:
    """What decoding a whole stream gives: messages, then a fault or a clean/cut end."""

    def __init__(self, messages: list[Message], fault: type[ProtocolError] | None, cut: bool):
        self.messages = messages
        self.fault = fault
        self.cut = cut

    def __repr__(self) -> str:
        return f"Outcome({len(self.messages)} messages, fault={self.fault}, cut={self.cut})"


def reference_decode(data: bytes, max_size: int | None) -> Outcome:
    """Decode ``data`` by the letter of docs/wire.md, one step at a time."""
    messages: list[Message] = []
    pos = 0
    while pos < len(data):
        first = data[pos]
        length = first & 0x3F
        is_text = not first & 0x40
        size = 1
        last = bool(first & 0x80)
        while not last:
            if pos + size >= len(data):
                return Outcome(messages, None, True)
            byte = data[pos + size]
            length |= (byte & 0x7F) << (6 + 7 * (size - 1))
            size += 1
            last = bool(byte & 0x80)
            if not last and size >= LONGEST_HEADER:
                return Outcome(messages, ProtocolError, False)
        if max_size is not None and length > max_size:
            return Outcome(messages, MessageTooLarge, False)
        start = pos + size
        if start + length > len(data):
            return Outcome(messages, None, True)
        payload = data[start : start + length]
        if is_text:
            try:
                messages.append(payload.decode("utf-8"))
            except UnicodeDecodeError:
                return Outcome(messages, ProtocolError, False)
        else:
            messages.append(payload)
        pos = start + length
    return Outcome(messages, None, False)


def check_decoder(data: bytes, cuts: list[int], max_size: int | None) -> None:
    """Feed ``data`` cut at ``cuts`` and check the decoder against the reference.

    Raises:
        AssertionError: on any difference, or if the decoder holds too much.
    """
    decoder = Decoder(max_message_size=max_size)
    messages: list[Message] = []
    fault: ProtocolError | None = None
    fed = 0
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    for start, stop in itertools.pairwise(bounds):
        piece = data[start:stop]
        if fault is not None:
            # A broken stream stays broken, and says so again.
            try:
                decoder.feed(piece)
            except ProtocolError as exc:
                assert exc is fault
            else:
                raise AssertionError("a broken decoder accepted more bytes")
            continue
        messages += decoder.feed(piece)
        fed += len(piece)
        fault = decoder.failure
        held_header = len(decoder._header)
        held_payload = sum(map(len, decoder._chunks))
        assert held_header < MAX_HEADER_SIZE <= LONGEST_HEADER
        assert held_header + held_payload <= fed
        if fault is not None:
            assert held_header == held_payload == 0, "a broken decoder keeps nothing"
    expected = reference_decode(data, max_size)
    assert messages == expected.messages
    if expected.fault is not None:
        assert type(fault) is expected.fault, (fault, expected)
        return
    assert fault is None, (fault, expected)
    assert decoder.in_progress == expected.cut
    if expected.cut:
        with pytest.raises(IncompleteMessage):
            decoder.eof()
    else:
        decoder.eof()
    assert not decoder.in_progress


# Streams that look like the format, so the fuzzer gets past the first header.
def _message() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300).map(encode),
        st.text(max_size=100).map(encode),
        st.binary(max_size=12),  # noise: broken headers, stray bytes
        # Header bytes that never say "last": long and overlong headers.
        st.binary(min_size=1, max_size=12).map(lambda b: bytes(x & 0x7F for x in b)),
    )


streams = st.one_of(
    st.binary(max_size=2048),
    st.lists(_message(), max_size=30).map(b"".join),
)
limits = st.one_of(st.none(), st.integers(0, 70_000), st.sampled_from([0, 1, 63, 64, 8192]))


@FUZZ
@given(data=streams, cuts=st.lists(st.integers(0, 5000), max_size=40), max_size=limits)
def test_decoder_matches_the_reference(data: bytes, cuts: list[int], max_size: int | None) -> None:
    check_decoder(data, cuts, max_size)


@FUZZ
@given(data=streams, max_size=limits)
def test_decoder_fed_one_byte_at_a_time(data: bytes, max_size: int | None) -> None:
    check_decoder(data[:600], list(range(min(len(data), 600))), max_size)


@FUZZ
@given(
    length=st.integers(0, 2**69 - 1),
    is_text=st.booleans(),
    tail=st.binary(max_size=200),
    max_size=st.one_of(st.none(), st.integers(0, 2**70)),
)
def test_announced_length_allocates_nothing_ahead(
    length: int, is_text: bool, tail: bytes, max_size: int | None
) -> None:
    # A peer may announce up to 2**69 - 1 bytes in a ten-byte header.
    check_decoder(encode_header(length, is_text) + tail, [1, 3, 7], max_size)


@pytest.mark.parametrize(
    "data",
    [
        b"\x00" * 9 + b"\x80",  # the longest header allowed: an overlong zero
        b"\x00" * 10,  # one byte too long
        b"\x7f" * 9 + b"\xff",  # 2**69 - 1, the largest length a header carries
        b"\x00\x80",  # zero, in two bytes
        b"\xa0\xff\xfe",  # text that is not UTF-8
        b"\xc3\x01\x02",  # cut inside a payload
        b"\x00\x00\x00",  # cut inside a header
    ],
)
@pytest.mark.parametrize("max_size", [None, 0, 2])
def test_edge_cases(data: bytes, max_size: int | None) -> None:
    for cuts in ([], list(range(len(data)))):
        check_decoder(data, cuts, max_size)


def test_the_reference_itself() -> None:
    # Guard the oracle with docs/wire.md's own examples.
    assert reference_decode(bytes.fromhex("c26869") + bytes.fromhex("826869"), None).messages == [
        b"hi",
        "hi",
    ]
    assert reference_decode(b"\x00" * 10, None).fault is ProtocolError
    assert reference_decode(bytes.fromhex("4081") + b"x" * 64, 63).fault is MessageTooLarge
    assert reference_decode(bytes.fromhex("4081") + b"x" * 63, None).cut


# ------------------------------------------------------------ over a socket

_hub = Hub(name="stockings-fuzz-hub")


@settings(
    max_examples=max(10, EXAMPLES // 10),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=streams, max_size=limits)
@pytest.mark.timeout(120)
def test_stocking_fed_garbage_ends_cleanly(data: bytes, max_size: int | None) -> None:
    """Whatever the peer sends, a stocking delivers what the reference does and ends."""
    hooks: list[object] = []
    old_hook = sys.excepthook
    sys.excepthook = lambda *args: hooks.append(args)
    try:
        with logged_errors() as logged:
            raw, sock = socket.socketpair()
            stocking = Stocking(sock, max_message_size=max_size, hub=_hub)
            try:
                raw.sendall(data)
                raw.close()
                wait_until(lambda: stocking.ended)
                got = []
                while (message := stocking.read()) is not None:
                    got.append(message)
            finally:
                stocking.close()
            expected = reference_decode(data, max_size)
            assert got == expected.messages
            if expected.fault is MessageTooLarge:
                assert stocking.end_reason is EndReason.MESSAGE_TOO_LARGE
            elif expected.fault is not None or expected.cut:
                assert stocking.end_reason is EndReason.PROTOCOL_ERROR
            else:
                assert stocking.end_reason is EndReason.PEER_CLOSED
            assert not hooks, "an exception escaped to sys.excepthook"
            assert not logged, "the library logged an error"
    finally:
        sys.excepthook = old_hook
