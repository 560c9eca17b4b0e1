"""A reader waiting on a TCP stocking receives on its own thread.

Waiting on the hub costs two thread wake-ups per message (the hub's, then
the reader's); so a ``read`` that finds the inbox empty takes the socket
over from the hub, polls and receives it itself, and hands it back with a
message. These tests pin down that it does, and that every fault met on
that path still ends the stocking the documented way.
"""

from __future__ import annotations

import array
import bisect
import fcntl
import functools
import gc
import itertools
import random
import socket
import struct
import termios
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import stockings
import stockings._direct
from conftest import tcp_pair, unix_pair, wait_until
from stockings import EndReason, Stocking
from stockings._channel import Channel
from stockings._direct import _MAY_SPIN, DIRECT_RECV_SIZE, TAKE_OVER_WAITING
from stockings._hub import RECV_BUFFER_SIZE

pytestmark = pytest.mark.timeout(30)


def in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Run ``target()`` in a thread; the list gets its result or what it raised."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(target())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def bytes_waiting(sock: socket.socket) -> int:
    """How many received bytes sit in the kernel, unread."""
    count = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, count)
    return count[0]


def hold_back_the_hub(
    channel: Channel, monkeypatch: pytest.MonkeyPatch, seconds: float
) -> threading.Event:
    """Make the hub's receives wait (up to ``seconds``) until the returned event is set.

    Returns once the hub has gone round its loop: a receive it was making
    (the end of the last message) would otherwise go on with the original,
    and might take the first bytes of the next message before the gate.
    """
    gate = threading.Event()
    original = channel._receive

    def held_back() -> bool:
        gate.wait(seconds)
        return original()

    monkeypatch.setattr(channel, "_receive", held_back)
    went_round = threading.Event()
    channel.hub.call_soon(went_round.set)
    assert went_round.wait(10), "the hub never went round its loop"
    return gate


def polling_on_its_own(channel: Channel) -> bool:
    """True once a reader has taken the socket over and is about to poll it."""
    return channel.direct.active and channel.direct.wake is not None


class Recorder:
    """Records what each call of one method of a channel or its parts returned."""

    def __init__(self, target: object, method: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.outcomes: list[object] = []
        original = getattr(target, method)

        def recording(*args: Any) -> object:
            outcome = original(*args)
            self.outcomes.append(outcome)
            return outcome

        monkeypatch.setattr(target, method, recording)


@pytest.fixture
def pair(
    make_pair: Callable[[], tuple[socket.socket, socket.socket]], no_leaks: None
) -> Iterator[tuple[Stocking, socket.socket]]:
    """A default-flavour stocking over each transport, and a bare socket as its peer."""
    ours, theirs = make_pair()
    stocking = Stocking(ours)
    # A read before the hub has registered the socket waits on the hub.
    wait_until(lambda: stocking._channel.interest.events)
    with theirs:
        yield stocking, theirs
        stocking.abort()


def test_a_waiting_reader_receives_without_the_hub(
    pair: tuple[Stocking, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    stocking, peer = pair
    channel = stocking._channel
    hub = Recorder(channel, "_receive", monkeypatch)  # the hub thread's receives
    reader, outcome = in_thread(lambda: stocking.read(timeout=None))
    wait_until(lambda: polling_on_its_own(channel))
    peer.sendall(stockings.encode(b"straight to the reader"))
    reader.join(10)
    assert outcome == [b"straight to the reader"]
    assert hub.outcomes == []
    # The socket is the hub's again: with nobody reading, it still receives.
    assert not channel.direct.active
    peer.sendall(stockings.encode(b"to the hub"))
    wait_until(lambda: channel.inbox.ready)
    assert hub.outcomes
    assert stocking.read() == b"to the hub"


def test_bytes_already_waiting_are_left_to_the_hub(
    pair: tuple[Stocking, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    stocking, peer = pair
    channel = stocking._channel
    # The hub holds off while the bytes sit in the kernel: the reader finds
    # them there, and leaves them to the hub rather than take the socket.
    gate = hold_back_the_hub(channel, monkeypatch, 10)
    peer.sendall(stockings.encode(b"waiting"))
    reader, outcome = in_thread(lambda: stocking.read(timeout=None))
    wait_until(lambda: channel.inbox._waiting.count == 1)
    assert not channel.direct.active
    gate.set()
    reader.join(10)
    assert outcome == [b"waiting"]


def test_a_direct_reader_assembles_large_messages(pair: tuple[Stocking, socket.socket]) -> None:
    stocking, peer = pair
    big = bytes(range(256)) * (12 * 1024)  # 3 MiB
    reader, outcome = in_thread(lambda: [stocking.read(timeout=None) for _ in range(3)])
    wait_until(lambda: polling_on_its_own(stocking._channel))
    sender, _ = in_thread(
        lambda: peer.sendall(
            stockings.encode(big) + stockings.encode("then text") + stockings.encode(big[:100])
        )
    )
    reader.join(20)
    sender.join(10)
    assert outcome == [[big, "then text", big[:100]]]


@pytest.mark.parametrize(
    ("size", "on_main"),
    # On the main thread a reader receives one receive's worth, between
    # messages only (signal handlers run there): a message that fits.
    [(TAKE_OVER_WAITING, True), (DIRECT_RECV_SIZE // 2, True), (RECV_BUFFER_SIZE, False)],
)
def test_after_a_mid_size_message_the_reader_takes_bytes_already_waiting(
    pair: tuple[Stocking, socket.socket],
    monkeypatch: pytest.MonkeyPatch,
    size: int,
    on_main: bool,
) -> None:
    stocking, peer = pair
    channel = stocking._channel
    first, second = b"1" * size, b"2" * size
    peer.sendall(stockings.encode(first))
    assert stocking.read(timeout=10) == first
    # The hub is held off while the next one sits in the kernel: in a stream
    # of messages this large, waking the reader per message costs more than
    # the hub's receives save, so the reader takes the socket over anyway.
    # Held longer than the read below waits: the hub cannot be what delivers.
    gate = hold_back_the_hub(channel, monkeypatch, 20)
    takeovers = Recorder(channel.direct, "_apply_interest_for_reader", monkeypatch)
    sender, _ = in_thread(lambda: peer.sendall(stockings.encode(second)))
    wait_until(lambda: bytes_waiting(stocking.sock))
    try:
        if on_main:
            assert stocking.read(timeout=10) == second
        else:
            reader, outcome = in_thread(lambda: stocking.read(timeout=10))
            reader.join(20)
            assert outcome == [second]
    finally:
        gate.set()
    sender.join(10)
    assert takeovers.outcomes
    assert not channel.direct.active
    # And the socket is the hub's again.
    peer.sendall(stockings.encode(b"to the hub"))
    assert stocking.read(timeout=10) == b"to the hub"


def test_after_a_large_message_the_hub_receives_the_next(
    pair: tuple[Stocking, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    stocking, peer = pair
    channel = stocking._channel
    big = b"b" * (RECV_BUFFER_SIZE + 1)
    peer.sendall(stockings.encode(big))
    assert stocking.read(timeout=10) == big
    # The next is likely large too: the hub, with its larger buffer and
    # in-place assembly, moves it best, so the reader does not take over.
    takeovers = Recorder(channel.direct, "_apply_interest_for_reader", monkeypatch)
    assert stocking.read(timeout=0.05) is None
    assert takeovers.outcomes == []
    peer.sendall(stockings.encode(b"small"))
    assert stocking.read(timeout=10) == b"small"
    assert stocking.read(timeout=0.05) is None
    assert takeovers.outcomes  # small again: the reader takes over


def test_many_small_messages_reach_one_direct_reader_in_order(
    pair: tuple[Stocking, socket.socket],
) -> None:
    stocking, peer = pair
    messages = [str(i).encode() * 10 for i in range(5000)]
    reader, outcome = in_thread(lambda: [stocking.read(timeout=None) for _ in messages])
    wait_until(lambda: polling_on_its_own(stocking._channel))
    sender, _ = in_thread(lambda: peer.sendall(b"".join(map(stockings.encode, messages))))
    reader.join(20)
    sender.join(10)
    assert outcome == [messages]


def test_two_readers_get_every_message_once(pair: tuple[Stocking, socket.socket]) -> None:
    stocking, peer = pair
    count = 2000
    got: list[list[object]] = [[], []]

    def read_into(mine: list[object]) -> None:
        while (message := stocking.read(timeout=None)) is not None:
            mine.append(message)

    readers = [threading.Thread(target=read_into, args=(mine,), daemon=True) for mine in got]
    for reader in readers:
        reader.start()
    wait_until(lambda: stocking._channel.inbox._waiting.count == 2)
    messages = [b"%d" % i for i in range(count)]
    peer.sendall(b"".join(map(stockings.encode, messages)))
    wait_until(lambda: len(got[0]) + len(got[1]) == count)
    peer.shutdown(socket.SHUT_WR)  # the end of the stream sends both readers home
    for reader in readers:
        reader.join(10)
        assert not reader.is_alive()
    assert sorted(got[0] + got[1]) == sorted(messages)
    # Each reader's share came in the order it was sent.
    for mine in got:
        assert mine == sorted(mine, key=lambda m: int(m))  # type: ignore[arg-type]


def test_a_read_timeout_hands_the_socket_back(pair: tuple[Stocking, socket.socket]) -> None:
    stocking, peer = pair
    channel = stocking._channel
    assert stocking.read(timeout=0.05) is None
    assert channel.direct.wake is not None  # it did poll for itself
    assert not channel.direct.active
    peer.sendall(stockings.encode("after the timeout"))
    wait_until(lambda: channel.inbox.ready)
    assert stocking.read() == "after the timeout"


@pytest.mark.parametrize("flush", [True, False], ids=["close", "abort"])
def test_closing_wakes_a_direct_reader(pair: tuple[Stocking, socket.socket], flush: bool) -> None:
    stocking, _ = pair
    reader, outcome = in_thread(lambda: stocking.read(timeout=None))
    wait_until(lambda: polling_on_its_own(stocking._channel))
    if flush:
        stocking.close()
    else:
        stocking.abort()
    reader.join(10)
    assert outcome == [None]
    assert stocking.end_reason is (EndReason.CLOSED if flush else EndReason.ABORTED)
    assert stocking._channel.direct.wake is None  # its descriptor is closed


def test_the_peer_closing_wakes_a_direct_reader(pair: tuple[Stocking, socket.socket]) -> None:
    stocking, peer = pair
    reader, outcome = in_thread(lambda: [stocking.read(timeout=None) for _ in range(2)])
    wait_until(lambda: polling_on_its_own(stocking._channel))
    peer.sendall(stockings.encode("last words"))
    peer.shutdown(socket.SHUT_WR)
    reader.join(10)
    assert outcome == [["last words", None]]
    wait_until(lambda: stocking.ended)
    assert stocking.end_reason is EndReason.PEER_CLOSED


def test_a_reset_met_by_a_direct_reader_ends_the_stocking(no_leaks: None) -> None:
    ours, peer = tcp_pair()  # SO_LINGER's reset is TCP's
    stocking = Stocking(ours)
    wait_until(lambda: stocking._channel.interest.events)
    reader, outcome = in_thread(lambda: stocking.read(timeout=None))
    wait_until(lambda: polling_on_its_own(stocking._channel))
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()
    reader.join(10)
    assert outcome == [None]
    wait_until(lambda: stocking.ended)
    assert stocking.end_reason is EndReason.RESET
    assert isinstance(stocking.end_exception, ConnectionResetError)


def test_a_lying_header_met_by_a_direct_reader_ends_the_stocking(no_leaks: None) -> None:
    ours, peer = tcp_pair()
    stocking = Stocking(ours, max_message_size=1000)
    wait_until(lambda: stocking._channel.interest.events)
    with peer:
        reader, outcome = in_thread(lambda: [stocking.read(timeout=None) for _ in range(2)])
        wait_until(lambda: polling_on_its_own(stocking._channel))
        # A whole message, then a header announcing 1 MiB.
        peer.sendall(stockings.encode("fine") + stockings.encode_header(1 << 20, False))
        reader.join(10)
        assert outcome == [["fine", None]]
        wait_until(lambda: stocking.ended)
        assert stocking.end_reason is EndReason.MESSAGE_TOO_LARGE
        assert isinstance(stocking.end_exception, stockings.MessageTooLarge)


def test_a_direct_reader_keeps_to_the_read_high_water_mark(no_leaks: None) -> None:
    ours, peer = tcp_pair()
    stocking = Stocking(ours, read_high_water=4096, read_low_water=1024)
    wait_until(lambda: stocking._channel.interest.events)
    channel = stocking._channel
    with peer:
        reader, outcome = in_thread(lambda: stocking.read(timeout=None))
        wait_until(lambda: polling_on_its_own(channel))
        messages = [b"x" * 100] * 2000
        sender, _ = in_thread(lambda: peer.sendall(b"".join(map(stockings.encode, messages))))
        reader.join(10)
        assert outcome == [b"x" * 100]
        # What the reader took in went over the mark: reading pauses.
        wait_until(lambda: not channel._reading)
        got = 1
        while got < len(messages):
            assert stocking.read(timeout=10) == b"x" * 100
            got += 1
        sender.join(10)
        stocking.close()


def test_only_plain_sockets_on_an_epoll_hub_read_directly(no_leaks: None) -> None:
    made = []
    for pair in (tcp_pair, unix_pair):
        ours, theirs = pair()
        made += [Stocking(ours), theirs]
        assert made[-2]._channel._reads_directly
    for flavour in (stockings.PollStocking, stockings.SelectStocking):
        ours, theirs = tcp_pair()
        made += [flavour(ours), theirs]
        # Their selectors take a change of interest only on the next wait.
        assert not made[-2]._channel._reads_directly
    for thing in made:
        thing.close()


# ------------------------------------------------------------------ spinning


@pytest.mark.skipif(not _MAY_SPIN, reason="one CPU: stockings never spins")
def test_a_spinning_reader_takes_a_reply_without_sleeping(
    monkeypatch: pytest.MonkeyPatch, no_leaks: None
) -> None:
    ours, peer = tcp_pair()
    # A spin long enough that only the reply can end it.
    stocking = Stocking(ours, read_spin=20.0)
    wait_until(lambda: stocking._channel.interest.events)
    spins = Recorder(stocking._channel.direct, "_spin_until_ready", monkeypatch)
    with peer:
        reader, outcome = in_thread(lambda: stocking.read(timeout=None))
        wait_until(lambda: polling_on_its_own(stocking._channel))
        peer.sendall(stockings.encode("quick reply"))
        reader.join(10)
        assert outcome == ["quick reply"]
        assert spins.outcomes == [True]
        stocking.close()


def test_a_reader_spins_less_while_spinning_does_not_pay(
    pair: tuple[Stocking, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    stocking, peer = pair
    channel = stocking._channel
    channel.direct._spin = 0.001  # as if read_spin=0.001 on any machine
    spins = Recorder(channel.direct, "_spin_until_ready", monkeypatch)
    # Nothing comes: the reader spins at the 1st wait, skips 1, spins at
    # the 3rd, skips 2, spins at the 6th, and will skip the next 4.
    for _ in range(6):
        assert stocking.read(timeout=0.01) is None
    assert spins.outcomes == [False] * 6
    assert (channel.direct._spin_skip, channel.direct._spin_backoff) == (4, 8)
    # One spin that pays starts it over.
    channel.direct._spin_skip = 0
    channel.direct._spin = 20.0
    reader, outcome = in_thread(lambda: stocking.read(timeout=None))
    wait_until(lambda: polling_on_its_own(channel))
    peer.sendall(stockings.encode(b"at last"))
    reader.join(10)
    assert outcome == [b"at last"]
    assert spins.outcomes[-1] is True
    assert (channel.direct._spin_skip, channel.direct._spin_backoff) == (0, 1)


def test_read_spin_zero_never_spins(monkeypatch: pytest.MonkeyPatch, no_leaks: None) -> None:
    ours, peer = tcp_pair()
    stocking = Stocking(ours, read_spin=0)
    wait_until(lambda: stocking._channel.interest.events)
    spins = Recorder(stocking._channel.direct, "_spin_until_ready", monkeypatch)
    with peer:
        assert stocking.read(timeout=0.01) is None
        assert stocking._channel.direct.wake is not None  # it did read directly
        assert spins.outcomes == []
        stocking.close()


def test_one_cpu_never_spins(monkeypatch: pytest.MonkeyPatch, no_leaks: None) -> None:
    monkeypatch.setattr(stockings._direct, "_MAY_SPIN", False)
    ours, peer = tcp_pair()
    stocking = Stocking(ours, read_spin=1.0)
    with peer:
        assert stocking._channel.direct._spin == 0
        stocking.close()


def test_read_spin_must_not_be_negative() -> None:
    ours, peer = tcp_pair()
    with ours, peer, pytest.raises(ValueError, match="read_spin"):
        Stocking(ours, read_spin=-1e-6)


def test_a_socket_closed_behind_the_stocking_before_a_read_ends_it(
    thread_errors: list[object], no_leaks: None
) -> None:
    ours, peer = tcp_pair()
    stocking = Stocking(ours)
    wait_until(lambda: stocking._channel.interest.events)
    with peer:
        stocking.sock.close()  # a rogue caller, before any read took the socket over
        reader, outcome = in_thread(lambda: stocking.read(timeout=None))
        reader.join(15)
        assert outcome == [None]
        wait_until(lambda: stocking.ended)
        assert stocking.end_reason is EndReason.ERROR
        stocking.close()


#: How long a 1.2.3-style reader pauses after a read() that found nothing.
POLL_INTERVAL_OF_A_1_2_3_READER = 0.0005


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_readers_with_mixed_timeouts_get_a_mixed_stream_whole(
    make_pair: Callable[[], tuple[socket.socket, socket.socket]], seed: int, no_leaks: None
) -> None:
    """Three readers (no wait, short waits, waiting for good), sizes from 0 to 300 KiB."""
    rng = random.Random(seed)
    sizes = [rng.choice([0, 1, 100, 5000, 70_000, 300_000]) for _ in range(300)]
    messages = [b"%d:" % i + bytes([i % 251]) * size for i, size in enumerate(sizes)]
    ours, theirs = make_pair()
    stocking = Stocking(ours)
    got: list[list[bytes]] = [[], [], []]
    done = threading.Event()

    def read_into(mine: list[bytes], timeout: float | None) -> None:
        while not done.is_set():
            message = stocking.read(timeout=timeout)
            if message is not None:
                mine.append(message)
            elif stocking.ended:
                return
            elif timeout == 0:
                # A 1.2.3-style reader polls read() at its own pace: the pause
                # between polls is the behaviour under test, and ``done`` is
                # what ends the loop.
                done.wait(POLL_INTERVAL_OF_A_1_2_3_READER)

    def taken_at_least(count: int) -> bool:
        return sum(map(len, got)) >= count

    readers = [
        threading.Thread(target=read_into, args=(got[0], 0), daemon=True),
        threading.Thread(target=read_into, args=(got[1], 0.002), daemon=True),
        threading.Thread(target=read_into, args=(got[2], None), daemon=True),
    ]
    for reader in readers:
        reader.start()
    with theirs:
        encoded = [stockings.encode(message) for message in messages]
        stream = b"".join(encoded)
        ends = list(itertools.accumulate(map(len, encoded)))
        at = 0
        while at < len(stream):
            # Pieces of any size, now and then a pause until the readers have
            # taken every whole message sent so far: they find the socket
            # busy, and idle, often mid-message.
            step = rng.choice([1, 7, 4096, 65536, 500_000])
            theirs.sendall(stream[at : at + step])
            at += step
            if rng.random() < 0.1:
                wait_until(functools.partial(taken_at_least, bisect.bisect_right(ends, at)))
        wait_until(lambda: sum(map(len, got)) == len(messages))
        done.set()
        stocking.close()  # wakes the reader that waits for good
        for reader in readers:
            reader.join(10)
            assert not reader.is_alive()
    assert sorted(m for mine in got for m in mine) == sorted(messages)
    # Each reader took its share in the order it was sent.
    for mine in got:
        order = [int(m.split(b":", 1)[0]) for m in mine]
        assert order == sorted(order)


def test_a_closed_stocking_that_read_directly_is_freed_at_once(no_leaks: None) -> None:
    # The inbox and the direct reader call back into their channel: held
    # weakly, so the parts make no cycle and the cyclic collector is not needed.
    def read_then_close() -> tuple[weakref.ref[Channel], weakref.ref[object]]:
        ours, theirs = tcp_pair()
        stocking, peer = Stocking(ours), Stocking(theirs)
        channel = stocking._channel
        wait_until(lambda: channel.interest.events)
        # A wait that took the socket over, then one served by the hub.
        assert stocking.read(timeout=0.01) is None
        assert channel.direct.wake is not None
        peer.write(b"x")
        assert stocking.read(timeout=10) == b"x"
        stocking.close()
        peer.close()
        return weakref.ref(channel), weakref.ref(channel.direct)

    gc.collect()
    gc.disable()
    try:
        channel, direct = read_then_close()
        assert channel() is None
        assert direct() is None
    finally:
        gc.enable()
