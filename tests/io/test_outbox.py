"""The outbox on its own: what it asks of its channel, and what the channel may ask of it.

:class:`~stockings._outbox.Outbox` talks to its channel through three calls
(``OutboxOwner``) and to the hub through two (``call_soon``,
``in_hub_thread``); here a stand-in plays both, over a socket pair, so each
part of that interface is seen doing its job.
"""

from __future__ import annotations

import gc
import socket
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import cast

import pytest

import stockings
from stockings import ConnectionClosed, EndReason
from stockings._framing import Decoder
from stockings._hub import Hub
from stockings._options import ChannelOptions
from stockings._outbox import Outbox
from stockings._transport import SendRules


class StandIn:
    """Hub and channel for one outbox: it records what the outbox asks for."""

    def __init__(self) -> None:
        self.posted: list[Callable[[], None]] = []
        self.flushes = 0
        self.ends: list[tuple[EndReason, BaseException | None]] = []
        self.outbox: Outbox | None = None

    # The hub's side.
    def call_soon(self, callback: Callable[[], None]) -> None:
        self.posted.append(callback)

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        self.posted.append(callback)

    def in_hub_thread(self) -> bool:
        return False

    def run_posted(self) -> None:
        posted, self.posted = self.posted, []
        for callback in posted:
            callback()

    # The channel's side (OutboxOwner).
    def _flush_from_hub(self) -> None:
        assert self.outbox is not None
        self.flushes += 1
        with self.outbox.lock:
            error = self.outbox.flush()
        assert error is None

    def end_soon(self, reason: EndReason, exc: BaseException | None = None) -> None:
        self.ends.append((reason, exc))

    def _closed_error(self) -> ConnectionClosed:
        return ConnectionClosed("closed by the stand-in", EndReason.CLOSED)


def make(
    sock: socket.socket, rules: SendRules | None = None, high_water: int = 1 << 20
) -> tuple[Outbox, StandIn]:
    sock.setblocking(False)
    stand_in = StandIn()
    options = ChannelOptions(None, high_water, None, 1 << 20, None)
    hub = cast(Hub, stand_in)
    if rules is None:
        outbox = Outbox(sock, hub, options, stand_in)
    else:
        outbox = Outbox(sock, hub, options, stand_in, rules)
    stand_in.outbox = outbox
    return outbox, stand_in


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    b.settimeout(10)
    with a, b:
        yield a, b


def received(peer: socket.socket, count: int) -> list[object]:
    """The next ``count`` messages from ``peer``, decoded."""
    decoder = Decoder(None)
    messages: list[object] = []
    while len(messages) < count:
        messages += decoder.feed(peer.recv(65536))
    return messages


def test_an_idle_outbox_sends_at_once_and_counts_it(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    outbox, stand_in = make(pair[0])
    outbox.send(b"hello")
    assert received(pair[1], 1) == [b"hello"]
    assert not outbox.pending and outbox.queued_bytes == 0
    assert (outbox.messages_sent, outbox.bytes_sent) == (1, len(stockings.encode(b"hello")))
    assert stand_in.posted == [] and stand_in.ends == []


def test_held_writes_wait_until_released_then_go_out_in_order(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    outbox, stand_in = make(pair[0])
    outbox.hold()
    outbox.send(b"one")
    outbox.send_many([b"two", "three"])
    assert outbox.pending and outbox.queued_bytes > 0
    # Whoever flushes meanwhile sends nothing.
    stand_in.run_posted()
    with outbox.lock:
        assert outbox.flush() is None
    pair[1].setblocking(False)
    with pytest.raises(BlockingIOError):
        pair[1].recv(1)
    pair[1].settimeout(10)
    with outbox.lock:
        outbox.release()
        assert outbox.flush() is None
    assert received(pair[1], 3) == [b"one", b"two", "three"]
    assert outbox.queued_bytes == 0 and outbox.bytes_sent > 0


def test_a_thread_the_rules_forbid_to_send_leaves_it_to_the_hub(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    allowed = False
    outbox, stand_in = make(pair[0], SendRules(may_send=lambda: allowed))
    outbox.send(b"queued")
    assert outbox.pending
    # The outbox asked for a flush on the hub; it runs the channel's.
    assert stand_in.posted
    allowed = True
    stand_in.run_posted()
    assert stand_in.flushes == 1
    assert received(pair[1], 1) == [b"queued"]
    assert not outbox.pending


def test_a_closing_outbox_refuses_writes_with_the_channels_error(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    outbox, _ = make(pair[0])
    with outbox.lock:
        outbox.closing = True
        outbox.wake_writers()
    with pytest.raises(ConnectionClosed, match="closed by the stand-in"):
        outbox.send(b"late")
    with pytest.raises(ConnectionClosed, match="closed by the stand-in"):
        outbox.send_many([b"late"])
    assert outbox.messages_sent == 0


def test_a_failed_send_asks_the_channel_to_end(pair: tuple[socket.socket, socket.socket]) -> None:
    outbox, stand_in = make(pair[0])
    pair[1].close()
    with pytest.raises(ConnectionClosed, match="connection lost while writing") as caught:
        outbox.send(b"into the void")
    assert outbox.closing
    assert [reason for reason, _ in stand_in.ends] == [caught.value.reason]
    assert isinstance(stand_in.ends[0][1], OSError)


def test_discard_drops_the_queue(pair: tuple[socket.socket, socket.socket]) -> None:
    outbox, _ = make(pair[0])
    outbox.hold()
    outbox.send(b"never sent")
    with outbox.lock:
        outbox.closing = True
        outbox.discard()
    assert not outbox.pending and outbox.queued_bytes == 0


def test_the_outbox_keeps_no_channel_alive() -> None:
    # The channel holds its outbox and the outbox calls back: held weakly,
    # so a closed stocking is freed at once, not by the cyclic collector.
    gc.collect()
    gc.disable()
    try:
        a, b = socket.socketpair()
        left, right = stockings.Stocking(a), stockings.Stocking(b)
        left.write(b"x")
        assert right.read(timeout=10) == b"x"
        channel = weakref.ref(left._channel)
        left.close()
        right.close()
        del left, right
        assert channel() is None
    finally:
        gc.enable()


class SendsRecorded:
    """A socket whose ``send`` calls are recorded (an ``ssl.SSLSocket`` has no ``sendmsg``)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sent: list[int] = []

    def send(self, data: bytes) -> int:
        taken = self.sock.send(data)
        self.sent.append(taken)
        return taken

    def __getattr__(self, name: str) -> object:
        return getattr(self.sock, name)


def test_without_sendmsg_a_large_payload_is_sent_alone_not_joined(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    recorded = SendsRecorded(pair[0])
    outbox, _ = make(cast(socket.socket, recorded), SendRules(use_sendmsg=False))
    large = b"L" * (1 << 20)
    outbox.hold()
    outbox.send(b"small")
    outbox.send(large)
    # What the queue holds now: the small message, the large one's header
    # and its payload, as ``send`` left it, uncopied.
    with outbox.lock:
        outbox.release()
    reader = threading.Thread(target=lambda: got.extend(received(pair[1], 2)), name="reader")
    got: list[object] = []
    reader.start()
    while outbox.pending:
        with outbox.lock:
            assert outbox.flush() is None
    reader.join(10)
    assert got == [b"small", large]
    # The small message and the large one's header travelled joined; the
    # payload went on its own, never copied into a joined buffer.
    header = len(stockings.encode(large)) - len(large)
    assert recorded.sent[0] == len(stockings.encode(b"small")) + header
    assert sum(recorded.sent[1:]) == len(large)


def test_large_payloads_of_changing_lengths_each_carry_their_own_header(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    # The outbox remembers the last large header it encoded: a length that
    # comes back, or changes, must never go out under another's header.
    outbox, _ = make(pair[0], high_water=1 << 24)
    lengths = [70_000, 1_500, 70_000, 70_001, 1 << 20, 1_024, 70_000, 8_191, 8_192]
    messages: list[object] = [bytes([n % 251]) * n for n in lengths]
    messages.append("t" * 70_000)  # text of a remembered length: its own header
    got: list[object] = []
    reader = threading.Thread(
        target=lambda: got.extend(received(pair[1], len(messages))), name="reader"
    )
    reader.start()
    for message in messages:
        outbox.send(message)
        while outbox.pending:
            with outbox.lock:
                assert outbox.flush() is None
    reader.join(10)
    assert [len(m) for m in got] == [len(m) for m in messages]  # type: ignore[arg-type]
    assert got == messages


def test_a_queue_the_kernel_takes_in_pieces_goes_out_whole_and_counted(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    # A small send buffer makes the kernel take a large message in pieces:
    # every settle of the queue, partial or whole, must keep the bytes and
    # the counts exact.
    pair[0].setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    outbox, stand_in = make(pair[0], high_water=1 << 24)
    messages: list[object] = [b"a" * 300_000, b"b" * 10, b"c" * 70_000, b"d" * 2_000]
    for message in messages:
        outbox.send(message)
    assert outbox.pending  # the kernel could not take it all at once
    got: list[object] = []
    reader = threading.Thread(
        target=lambda: got.extend(received(pair[1], len(messages))), name="reader"
    )
    reader.start()
    while outbox.pending:
        with outbox.lock:
            assert outbox.flush() is None
    reader.join(10)
    assert got == messages
    total = sum(len(stockings.encode(m)) for m in messages)  # type: ignore[arg-type]
    assert (outbox.messages_sent, outbox.bytes_sent, outbox.queued_bytes) == (4, total, 0)
    assert stand_in.ends == []


def test_a_burst_of_mid_sized_messages_joins_the_batch_each_with_its_own_header(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    # Held, every write after the first joins the batch at the queue's
    # tail; lengths past the ready-made headers take the remembered one
    # when it repeats and a new one when it changes.
    outbox, _ = make(pair[0], high_water=1 << 24)
    lengths = [2_000, 2_000, 4_096, 4_096, 2_000, 1_023, 1_024, 65_535, 65_536, 65_535, 3_000]
    messages: list[object] = [bytes([n % 251]) * n for n in lengths]
    messages.insert(3, "t" * 4_096)  # text of a remembered length: its own header
    outbox.hold()
    for message in messages:
        outbox.send(message)
    assert outbox.messages_sent == len(messages)
    total = sum(len(stockings.encode(m)) for m in messages)  # type: ignore[arg-type]
    assert outbox.queued_bytes == total
    got: list[object] = []
    reader = threading.Thread(
        target=lambda: got.extend(received(pair[1], len(messages))), name="reader"
    )
    reader.start()
    with outbox.lock:
        outbox.release()
    while outbox.pending:
        with outbox.lock:
            assert outbox.flush() is None
    reader.join(10)
    assert got == messages
    assert outbox.bytes_sent == total


def test_a_length_over_the_limit_is_refused_every_time_never_remembered(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    pair[0].setblocking(False)
    stand_in = StandIn()
    options = ChannelOptions(5_000, 1 << 20, None, 1 << 20, None)
    outbox = Outbox(pair[0], cast(Hub, stand_in), options, stand_in)
    stand_in.outbox = outbox
    outbox.hold()
    outbox.send(b"first")
    for _ in range(3):
        with pytest.raises(stockings.MessageTooLarge):
            outbox.send(b"x" * 5_001)
        outbox.send(b"y" * 5_000)
    assert outbox.messages_sent == 4
