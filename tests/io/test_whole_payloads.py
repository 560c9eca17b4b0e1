"""A stream of large payloads, each received whole once it has arrived (``_whole``).

The receiver raises the socket's receive low-water mark to the size of a
payload it owes, reads the next header alone, and receives each payload in
one ``recv`` straight into the ``bytes`` that ``read`` returns. The danger
is a mark above what the peer will ever send: the hub (or a reader's poll)
would then wait for ever. These tests drive the receiver with a raw peer
writing the wire format by hand, at the boundaries where that could happen.
"""

from __future__ import annotations

import itertools
import socket
import sys
import threading
from collections.abc import Iterator

import pytest

import stockings
from conftest import FLAVOURS, tcp_pair, unix_pair, wait_until
from stockings import _receiver, _whole
from stockings._encoding import encode, encode_header
from stockings._whole import LowWater, WholePayloads, header_size, whole_payloads_for

pytestmark = [
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="SO_RCVLOWAT readiness is Linux's"
    ),
    pytest.mark.timeout(60),
]

BIG = _whole.WHOLE_PAYLOAD + 1000
SO_RCVLOWAT: int = getattr(socket, "SO_RCVLOWAT", 18)


@pytest.fixture
def whole_receives(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every payload a ``recv`` took whole, in a stream of large ones."""
    taken: list[int] = []
    real = WholePayloads.receive

    def counted(
        self: WholePayloads, receiver: _receiver.Receiver, view: memoryview, direct: bool
    ) -> int:
        owed = receiver.decoder.payload_missing if self.stage == _whole.OWED else 0
        outcome = real(self, receiver, view, direct)
        if owed and outcome == _receiver._DELIVERED:
            taken.append(owed)
        return outcome

    monkeypatch.setattr(WholePayloads, "receive", counted)
    return taken


def _mark(sock: socket.socket) -> int:
    return sock.getsockopt(socket.SOL_SOCKET, SO_RCVLOWAT)


def _payloads(count: int, size: int) -> Iterator[bytes]:
    for i in range(count):
        yield bytes([i % 251]) * (size + i)


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
@pytest.mark.usefixtures("no_leaks")
def test_a_stream_of_large_payloads_is_received_whole(
    flavour: type[stockings.Stocking], whole_receives: list[int]
) -> None:
    client, server = tcp_pair()
    sent = list(_payloads(12, BIG))
    with flavour(client) as writer, flavour(server) as reader:
        sender = threading.Thread(target=lambda: [writer.write(p) for p in sent])
        sender.start()
        got = [reader.read(timeout=10) for _ in sent]
        sender.join()
        assert got == sent
        # The first is assembled (its header came inside a bulk receive),
        # so is the second's start; from then on each comes whole.
        assert len(whole_receives) >= len(sent) - 3
        # Nothing owed now: the mark is back at one byte.
        wait_until(lambda: _mark(server) == 1)


@pytest.mark.usefixtures("no_leaks")
def test_a_small_message_after_a_large_one_is_not_kept_waiting() -> None:
    # Each message is sent only once the one before was read: a mark left
    # at the large payload's size would hold the small one back for ever.
    client, server = tcp_pair()
    with client, stockings.Stocking(server) as reader:
        for payload in [*_payloads(3, BIG), b"x", b"", "text", *_payloads(2, BIG), b"end"]:
            client.sendall(encode(payload))
            assert reader.read(timeout=10) == payload
            if isinstance(payload, bytes) and len(payload) < 100:
                assert _mark(server) == 1


@pytest.mark.usefixtures("no_leaks")
def test_a_payload_sent_in_pieces_with_pauses_arrives_whole() -> None:
    client, server = tcp_pair()
    sizes = [BIG, BIG + 1, BIG + 70_000, BIG]
    with client, stockings.Stocking(server) as reader:
        for size in sizes[:2]:
            client.sendall(encode(b"a" * size))
            assert reader.read(timeout=10) == b"a" * size
        for size in sizes[2:]:
            payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
            data = encode(payload)
            # The header alone, then the payload in three pieces, each only
            # once the reader has had its chance to take what came.
            cuts = [0, len(encode_header(size, False)), size // 3, size // 2, len(data)]
            for start, stop in itertools.pairwise(cuts[:-1]):
                client.sendall(data[start:stop])
                assert reader.read(timeout=0.05) is None
                # Never more than the payload owes, counting what waits unread.
                assert _mark(server) <= size
            client.sendall(data[cuts[-2] :])
            assert reader.read(timeout=10) == payload


@pytest.mark.usefixtures("no_leaks")
def test_a_stream_ending_inside_a_payload_received_whole_is_an_incomplete_message(
    whole_receives: list[int],
) -> None:
    client, server = tcp_pair()
    with stockings.Stocking(server) as reader:
        first, second = _payloads(2, BIG)
        client.sendall(encode(first) + encode(second))
        assert reader.read(timeout=10) == first
        assert reader.read(timeout=10) == second
        client.sendall(encode(b"q" * BIG)[: BIG // 2])
        client.close()
        assert reader.read(timeout=10) is None
        assert reader.end_reason is stockings.EndReason.PROTOCOL_ERROR
        assert isinstance(reader.end_exception, stockings.IncompleteMessage)
    assert whole_receives


@pytest.mark.usefixtures("no_leaks")
def test_a_reset_while_a_payload_is_owed_ends_the_stocking_with_what_came_before() -> None:
    client, server = tcp_pair()
    with stockings.Stocking(server) as reader:
        sent = list(_payloads(3, BIG))
        client.sendall(b"".join(map(encode, sent)) + encode(b"r" * BIG)[:1000])
        assert [reader.read(timeout=10) for _ in sent] == sent
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.close()
        wait_until(lambda: reader.ended)
        assert reader.end_reason is stockings.EndReason.RESET
        assert reader.read() is None


@pytest.mark.usefixtures("no_leaks")
def test_a_payload_over_the_limit_is_refused_from_its_header_alone() -> None:
    client, server = tcp_pair()
    with client, stockings.Stocking(server, max_message_size=BIG + 10) as reader:
        sent = list(_payloads(3, BIG))
        client.sendall(b"".join(map(encode, sent)) + encode_header(BIG + 11, False))
        assert [reader.read(timeout=10) for _ in sent] == sent
        wait_until(lambda: reader.ended)
        assert isinstance(reader.end_exception, stockings.MessageTooLarge)


@pytest.mark.usefixtures("no_leaks")
def test_text_and_small_messages_between_large_ones_keep_their_order() -> None:
    client, server = tcp_pair()
    big = list(_payloads(4, BIG))
    sent: list[bytes | str] = [big[0], big[1], "é" * BIG, big[2], b"", b"s" * 70_000, big[3]]
    with client, stockings.Stocking(server) as reader:
        client.sendall(b"".join(map(encode, sent)))
        assert [reader.read(timeout=10) for _ in sent] == sent
        wait_until(lambda: _mark(server) == 1)


def test_only_tcp_sockets_without_an_idle_timeout_use_the_mark() -> None:
    left, right = unix_pair()
    with left, right:
        assert whole_payloads_for(left) is None
    client, server = tcp_pair()
    with client, stockings.Stocking(server, idle_timeout=30) as timed:
        assert timed._channel.receiver.whole is None
    client, server = tcp_pair()
    with client, stockings.Stocking(server) as plain:
        assert plain._channel.receiver.whole is not None


class _OldKernelSocket:
    """A socket whose kernel does not grow its receive buffer for the mark."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.marks: list[int] = []

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.marks.append(value)

    def getsockopt(self, level: int, option: int) -> int:
        return self.room


def test_the_mark_stays_within_half_a_buffer_the_kernel_does_not_grow() -> None:
    fake = _OldKernelSocket(room=256 * 1024)
    low_water = LowWater(fake)  # type: ignore[arg-type]
    low_water.expect(1024 * 1024)
    assert low_water.mark == 64 * 1024
    assert fake.marks[-1] == 64 * 1024
    low_water.expect(100 * 1024)
    assert low_water.mark == 100 * 1024
    low_water.reset()
    assert low_water.mark == 1 and fake.marks[-1] == 1
    calls = len(fake.marks)
    low_water.reset()
    assert len(fake.marks) == calls  # unchanged: no call


def test_a_closed_socket_leaves_the_mark_as_it_was() -> None:
    client, server = tcp_pair()
    client.close()
    server.close()
    low_water = LowWater(server)
    low_water.expect(500_000)
    assert low_water.mark == 1


@pytest.mark.parametrize(
    "length", [0, 1, 63, 64, 8191, 8192, 2**20 - 1, 2**20, 2**27 - 1, 2**27, 2**40]
)
def test_header_size_is_the_encoded_header_s_length(length: int) -> None:
    assert header_size(length) == len(encode_header(length, False))


@pytest.mark.parametrize("how", ["close", "abort", "drop"])
@pytest.mark.usefixtures("no_leaks")
def test_a_stocking_waiting_for_an_owed_payload_ends_at_once_when_closed(how: str) -> None:
    client, server = tcp_pair()
    with client:
        reader = stockings.Stocking(server)
        sent = list(_payloads(3, BIG))
        # Then a payload the peer starts and never finishes.
        client.sendall(b"".join(map(encode, sent)) + encode(b"w" * BIG)[:5000])
        assert [reader.read(timeout=10) for _ in sent] == sent
        wait_until(lambda: _mark(server) > 1)
        if how == "close":
            reader.close(timeout=5)
            assert reader.end_reason is stockings.EndReason.CLOSED
        elif how == "abort":
            reader.abort()
            assert reader.ended
        else:
            # Dropped unclosed: the finalizer ends it (no_leaks checks).
            del reader
