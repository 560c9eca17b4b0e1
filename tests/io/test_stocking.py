"""Stockings talking to stockings: every flavour with every flavour, over TCP and socketpair.

Covers the public API of :class:`stockings.Stocking`: message types and
sizes, bursts both ways, concurrent writers, ``read`` timeouts, iteration,
``fileno()`` readiness, handshakes, hooks, closing and leaks.
"""

from __future__ import annotations

import array
import inspect
import pickle
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import stockings
from conftest import FLAVOURS, library_threads, wait_until
from stockings import (
    ConnectionClosed,
    EndReason,
    HandshakeFailed,
    MessageTooLarge,
    NotReady,
    Stocking,
)

__all__: list[str] = []

PairMaker = Callable[[], tuple[socket.socket, socket.socket]]
Flavour = type[Stocking]
BOUNDARY_SIZES = [0, 1, 63, 64, 8191, 8192, 1048575, 1048576]
MIB = 1024 * 1024

FLAVOUR_PAIRS = [(left, right) for left in FLAVOURS for right in FLAVOURS]
FLAVOUR_PAIR_IDS = [f"{left.__name__}-{right.__name__}" for left, right in FLAVOUR_PAIRS]


@pytest.fixture(params=FLAVOUR_PAIRS, ids=FLAVOUR_PAIR_IDS)
def flavours(request: pytest.FixtureRequest) -> tuple[Flavour, Flavour]:
    """Every ordered pair of flavours: the two ends may differ."""
    left, right = request.param
    return left, right


@pytest.fixture(params=FLAVOURS, ids=[f.__name__ for f in FLAVOURS])
def flavour(request: pytest.FixtureRequest) -> Flavour:
    """Each flavour once."""
    chosen: Flavour = request.param
    return chosen


@pytest.fixture
def pair(flavours: tuple[Flavour, Flavour], make_pair: PairMaker) -> Iterator[tuple[Any, Any]]:
    """Two connected stockings, one of each flavour of ``flavours``."""
    a, b = make_pair()
    left, right = flavours[0](a), flavours[1](b)
    try:
        yield left, right
    finally:
        left.abort()
        right.abort()


@pytest.fixture
def same_pair(flavour: Flavour, make_pair: PairMaker) -> Iterator[tuple[Any, Any]]:
    """Two connected stockings of one flavour."""
    a, b = make_pair()
    left, right = flavour(a), flavour(b)
    try:
        yield left, right
    finally:
        left.abort()
        right.abort()


def read_n(stocking: Stocking, count: int, timeout: float = 30.0) -> list[Any]:
    """Read exactly ``count`` messages, failing if they do not come within ``timeout``."""
    deadline = time.monotonic() + timeout
    out: list[Any] = []
    while len(out) < count:
        remaining = deadline - time.monotonic()
        message = stocking.read(timeout=max(remaining, 0.001))
        if message is None:
            raise AssertionError(
                f"got {len(out)} of {count} messages; ended={stocking.ended} "
                f"reason={stocking.end_reason}"
            )
        out.append(message)
    return out


def readable(stocking: Stocking, timeout: float = 0.0) -> bool:
    """Whether ``select.select`` says the stocking's fileno is readable."""
    ready, _, _ = select.select([stocking], [], [], timeout)
    return bool(ready)


def burst_message(side: str, i: int) -> str | bytes:
    """Message ``i`` of a burst: text and bytes in turn, sizes 0 to 200 bytes."""
    body = f"{side}{i}:" + "x" * (i % 191)
    if i % 7 == 0:
        return ""
    return body if i % 2 else body.encode()


# --------------------------------------------------------- types and sizes


def test_messages_keep_their_type(pair: tuple[Any, Any]) -> None:
    left, right = pair
    messages: list[Any] = ["text", b"bytes", "", b"", "héllo ✓ 𝄞", bytearray(b"ba"), "\x00"]
    expected = ["text", b"bytes", "", b"", "héllo ✓ 𝄞", b"ba", "\x00"]
    for message in messages:
        left.write(message)
        right.write(message)
    for stocking in (right, left):
        got = read_n(stocking, len(expected))
        assert got == expected
        assert [type(m) for m in got] == [type(m) for m in expected]


def test_sizes_across_every_varint_boundary(pair: tuple[Any, Any]) -> None:
    left, right = pair
    sent = []
    for size in BOUNDARY_SIZES:
        sent.append(bytes([size % 256]) * size)
        sent.append("é" * (size // 2) + "z" * (size % 2))  # ``size`` bytes of UTF-8
    for message in sent:
        left.write(message)
        right.write(message)
    assert read_n(right, len(sent)) == sent
    assert read_n(left, len(sent)) == sent


@pytest.mark.timeout(60)
def test_a_16_mib_message_each_way(pair: tuple[Any, Any]) -> None:
    left, right = pair
    big = bytes(range(256)) * (16 * MIB // 256)
    text = "ü" * (8 * MIB)  # 16 MiB of UTF-8
    left.write(big)
    right.write(text)
    left.write("after")
    assert read_n(right, 2) == [big, "after"]
    assert read_n(left, 1) == [text]


def test_wrong_type_raises_type_error_in_the_caller(pair: tuple[Any, Any]) -> None:
    left, right = pair
    for bad in (123, None, ["list"], {"a": 1}):
        with pytest.raises(TypeError):
            left.write(bad)
    left.write("still fine")
    assert right.read(timeout=10) == "still fine"


def test_bytes_likes_arrive_as_their_raw_bytes(pair: tuple[Any, Any]) -> None:
    left, right = pair
    numbers = array.array("i", [1, -1, 1 << 20])
    buffer = bytearray(b"mutable")
    left.write(memoryview(numbers))
    left.write(buffer)
    buffer[:] = b"changed"  # the message was taken when written
    left.write(memoryview(b"abcdef")[::2])
    assert read_n(right, 3) == [numbers.tobytes(), b"mutable", b"ace"]


def test_any_contiguous_buffer_is_sent_as_its_bytes(pair: tuple[Any, Any]) -> None:
    left, right = pair
    numbers = array.array("i", [1, -1, 1 << 20])
    big = array.array("q", range(20_000))  # 160 KB: the large-payload path
    left.write(numbers)
    left.write(big)
    left.write_many([numbers, array.array("h", [7]), b"end"])
    expected = [
        numbers.tobytes(),
        big.tobytes(),
        numbers.tobytes(),
        array.array("h", [7]).tobytes(),
    ]
    assert read_n(right, 5) == [*expected, b"end"]


def test_a_non_contiguous_buffer_is_refused_and_nothing_sent(pair: tuple[Any, Any]) -> None:
    left, right = pair
    strided = pickle.PickleBuffer(memoryview(b"abcdefgh")[::2])
    with pytest.raises(TypeError, match="C-contiguous"):
        left.write(strided)
    with pytest.raises(TypeError, match="C-contiguous"):
        left.write_many([b"first", strided])
    left.write(b"after")
    assert right.read(timeout=10) == b"after"


def test_writing_over_the_size_limit_raises_and_sends_nothing(make_pair: PairMaker) -> None:
    a, b = make_pair()
    with Stocking(a, max_message_size=100) as left, Stocking(b) as right:
        with pytest.raises(MessageTooLarge):
            left.write(b"x" * 101)
        with pytest.raises(MessageTooLarge):
            left.write("é" * 51)  # 102 bytes of UTF-8
        left.write(b"y" * 100)
        assert right.read(timeout=10) == b"y" * 100
        assert left.active


# ------------------------------------------------------------------ bursts


@pytest.mark.timeout(60)
def test_burst_of_10000_both_ways_without_reading(pair: tuple[Any, Any]) -> None:
    """Both ends write everything before either reads: 1.2.3 deadlocks here."""
    left, right = pair
    count = 10_000
    for i in range(count):
        left.write(burst_message("L", i))
        right.write(burst_message("R", i))
    assert read_n(right, count) == [burst_message("L", i) for i in range(count)]
    assert read_n(left, count) == [burst_message("R", i) for i in range(count)]


@pytest.mark.timeout(60)
def test_burst_of_10000_both_ways_from_two_threads(pair: tuple[Any, Any]) -> None:
    left, right = pair
    count = 10_000
    start = threading.Barrier(4)
    results: dict[str, list[Any]] = {}
    errors: list[BaseException] = []

    def write_all(stocking: Stocking, side: str) -> None:
        try:
            start.wait(10)
            for i in range(count):
                stocking.write(burst_message(side, i))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    def read_all(stocking: Stocking, name: str) -> None:
        try:
            start.wait(10)
            results[name] = read_n(stocking, count)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=write_all, args=(left, "L")),
        threading.Thread(target=write_all, args=(right, "R")),
        threading.Thread(target=read_all, args=(right, "right")),
        threading.Thread(target=read_all, args=(left, "left")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(50)
    assert not errors, errors
    assert results["right"] == [burst_message("L", i) for i in range(count)]
    assert results["left"] == [burst_message("R", i) for i in range(count)]


@pytest.mark.timeout(60)
def test_8_writer_threads_never_interleave(pair: tuple[Any, Any]) -> None:
    left, right = pair
    writers, per_writer = 8, 400
    start = threading.Barrier(writers)
    errors: list[BaseException] = []

    def message(t: int, i: int) -> str | bytes:
        # Mostly small, with large ones that go out in several sends.
        pad = 70_000 + t * 1000 if i % 50 == 0 else (t * 37 + i) % 300
        body = f"{t}:{i}:" + chr(ord("a") + t) * pad
        return body if (t + i) % 2 else body.encode()

    def write(t: int) -> None:
        try:
            start.wait(10)
            for i in range(per_writer):
                left.write(message(t, i))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(writers)]
    for thread in threads:
        thread.start()
    got = read_n(right, writers * per_writer)
    for thread in threads:
        thread.join(10)
    assert not errors, errors
    next_index = [0] * writers
    for received in got:
        text = received if isinstance(received, str) else received.decode()
        t, i, _ = text.split(":", 2)
        writer, index = int(t), int(i)
        assert index == next_index[writer], "a writer's messages arrived out of order"
        assert received == message(writer, index), "a message arrived mangled"
        next_index[writer] += 1
    assert next_index == [per_writer] * writers


# -------------------------------------------------------------- read timeout


def test_read_zero_returns_none_at_once(same_pair: tuple[Any, Any]) -> None:
    _left, right = same_pair
    assert right.read() is None
    assert right.read(timeout=0) is None
    assert right.read(0.0) is None


@pytest.mark.timeout(10)
def test_read_positive_timeout_waits_then_returns_none(same_pair: tuple[Any, Any]) -> None:
    _left, right = same_pair
    got: list[Any] = []
    done = threading.Event()

    def read_briefly() -> None:
        got.append(right.read(timeout=0.5))
        done.set()

    thread = threading.Thread(target=read_briefly)
    thread.start()
    # It really waits (it is counted among the blocked readers), then gives up alone.
    wait_until(lambda: right._channel.inbox._waiting.count == 1, timeout=0.5)
    assert done.wait(10)
    assert got == [None]
    thread.join(5)


@pytest.mark.timeout(20)
def test_read_positive_timeout_returns_a_message_that_arrives(
    same_pair: tuple[Any, Any],
) -> None:
    left, right = same_pair
    got: list[Any] = []
    waiting = threading.Thread(target=lambda: got.append(right.read(timeout=15)))
    waiting.start()
    wait_until(lambda: right._channel.inbox._waiting.count == 1)
    left.write("late")
    waiting.join(15)
    assert got == ["late"]


@pytest.mark.timeout(20)
def test_read_none_waits_for_a_message_then_for_the_end(same_pair: tuple[Any, Any]) -> None:
    left, right = same_pair
    got: list[Any] = []
    done = threading.Event()

    def read_forever() -> None:
        got.append(right.read(timeout=None))
        done.set()

    thread = threading.Thread(target=read_forever)
    thread.start()
    wait_until(lambda: right._channel.inbox._waiting.count == 1)
    assert not done.is_set()
    left.write(b"now")
    assert done.wait(10)
    assert got == [b"now"]

    done.clear()
    thread = threading.Thread(target=read_forever)
    thread.start()
    wait_until(lambda: right._channel.inbox._waiting.count == 1)
    left.close()
    assert done.wait(10)
    assert got == [b"now", None]
    thread.join(5)


# --------------------------------------------------------------- iteration


def test_iteration_yields_everything_then_ends_after_peer_close(pair: tuple[Any, Any]) -> None:
    left, right = pair
    sent = [f"m{i}" if i % 3 else f"m{i}".encode() for i in range(300)] + ["", b"last"]
    for message in sent:
        left.write(message)
    left.close()
    assert list(right) == sent
    assert right.end_reason is EndReason.PEER_CLOSED


def test_iteration_waits_for_messages_written_later(same_pair: tuple[Any, Any]) -> None:
    left, right = same_pair
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.extend(right))
    thread.start()
    for i in range(50):
        left.write(str(i))
    left.close()
    thread.join(10)
    assert not thread.is_alive()
    assert got == [str(i) for i in range(50)]


# ------------------------------------------------------------------- fileno


def test_select_on_fileno_tracks_ready_messages(pair: tuple[Any, Any]) -> None:
    left, right = pair
    assert not readable(right)
    left.write("one")
    left.write("two")
    assert readable(right, timeout=10)
    wait_until(lambda: right.unread_bytes == 6)
    assert right.read() == "one"
    assert readable(right)
    assert right.read() == "two"
    assert not readable(right)
    assert right.read() is None
    assert not readable(right)
    left.write(b"")
    assert readable(right, timeout=10)
    assert right.read() == b""
    assert not readable(right)


def test_fileno_is_readable_once_the_peer_has_ended(same_pair: tuple[Any, Any]) -> None:
    left, right = same_pair
    right.fileno()
    left.write("bye")
    left.close()
    wait_until(lambda: right.ended)
    assert readable(right, timeout=10)
    assert right.read() == "bye"
    # Ended: stays readable so a select() loop notices, and read() says None.
    assert readable(right)
    assert right.read() is None


def test_selectors_can_wait_on_many_stockings(flavour: Flavour) -> None:
    import selectors

    pairs = [socket.socketpair() for _ in range(4)]
    lefts = [flavour(a) for a, _ in pairs]
    rights = [flavour(b) for _, b in pairs]
    try:
        with selectors.DefaultSelector() as selector:
            for index, stocking in enumerate(rights):
                selector.register(stocking, selectors.EVENT_READ, index)
            assert selector.select(0) == []
            lefts[2].write("to two")
            events = selector.select(10)
            assert [key.data for key, _ in events] == [2]
            assert rights[2].read() == "to two"
            assert selector.select(0) == []
            for stocking in rights:
                selector.unregister(stocking)
    finally:
        for stocking in lefts + rights:
            stocking.close()


def test_fileno_is_unique_per_stocking(flavour: Flavour) -> None:
    pairs = [socket.socketpair() for _ in range(5)]
    made = [flavour(sock) for pair in pairs for sock in pair]
    try:
        numbers = [stocking.fileno() for stocking in made]
        assert len(set(numbers)) == len(made)
        assert not set(numbers) & {stocking.sock.fileno() for stocking in made}
        assert [stocking.fileno() for stocking in made] == numbers  # stable
    finally:
        for stocking in made:
            stocking.close()


# ------------------------------------------------------------ queued data


@pytest.mark.timeout(30)
def test_write_data_queued_while_the_peer_does_not_read(flavour: Flavour) -> None:
    a, b = socket.socketpair()
    # A peer that stops reading its socket almost at once, so the bytes back up here.
    sender = flavour(a, write_high_water=64 * MIB)
    receiver = flavour(b, read_high_water=1024, read_low_water=0)
    try:
        assert not sender.write_data_queued()
        assert not sender.writeDataQueued()
        chunk = b"q" * MIB
        for _ in range(16):
            sender.write(chunk)
        assert sender.write_data_queued()
        assert sender.writeDataQueued()
        assert sender.queued_bytes > 0
        assert read_n(receiver, 16) == [chunk] * 16
        wait_until(lambda: not sender.write_data_queued())
        assert not sender.writeDataQueued()
    finally:
        sender.close()
        receiver.close()


# --------------------------------------------------------------- handshakes


class GatedHandshake(Stocking):
    """A handshake that waits for the test to open its gate."""

    def __init__(self, sock: socket.socket, gate: threading.Event) -> None:
        self.gate = gate
        super().__init__(sock)

    def handshake(self) -> Any:
        return self.gate.wait(20)


@pytest.mark.timeout(30)
def test_not_ready_until_a_custom_handshake_completes(make_pair: PairMaker) -> None:
    a, b = make_pair()
    gate = threading.Event()
    gated = GatedHandshake(a, gate)
    plain = Stocking(b)
    try:
        assert not gated.handshake_complete
        assert not gated.handshakeComplete
        with pytest.raises(NotReady):
            gated.write("too soon")
        with pytest.raises(NotReady):
            gated.read()
        with pytest.raises(NotReady):
            iter(gated).__next__()
        plain.write("early")
        # Messages that arrive during the handshake belong to it: not ready for select() yet.
        wait_until(lambda: gated.unread_bytes == 5)
        assert not readable(gated)
        gate.set()
        assert gated.wait_handshake(10)
        assert readable(gated, timeout=10)
        assert gated.handshake_complete is True
        assert gated.handshakeComplete is True
        assert gated.read(timeout=10) == "early"
        gated.write("after")
        assert plain.read(timeout=10) == "after"
    finally:
        gate.set()
        gated.close()
        plain.close()


def test_a_handshake_set_on_the_class_later_is_run(make_pair: PairMaker) -> None:
    # Whether a class has a custom handshake is asked as each stocking is
    # made, not once when the class is: a hook patched in later counts.
    class Patched(Stocking):
        pass

    ran = threading.Event()

    def handshake(self: Stocking) -> Any:
        ran.set()
        return "agreed"

    Patched.handshake = handshake  # type: ignore[method-assign]
    a, b = make_pair()
    patched, plain = Patched(a), Stocking(b)
    try:
        assert patched.wait_handshake(10)
        assert ran.is_set()
        assert patched.handshake_complete == "agreed"
    finally:
        patched.close()
        plain.close()


class ExchangeIds(Stocking):
    """Each side sends its id and learns the peer's, with ``_write`` and ``_read(timeout)``."""

    def __init__(self, sock: socket.socket, unique_id: str, **kwargs: Any) -> None:
        self.unique_id = unique_id
        self.remote_id: Any = None
        super().__init__(sock, **kwargs)

    def pre_write(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("_write must bypass pre_write")

    def post_read(self, message: Any) -> Any:
        raise AssertionError("_read must bypass post_read")

    def handshake(self) -> Any:
        self._write(self.unique_id)
        reply = self._read(timeout=10)
        if reply is None:
            return False
        self.remote_id = reply
        return f"peer is {reply}"


@pytest.mark.timeout(30)
def test_custom_handshake_exchanges_messages(
    flavours: tuple[Flavour, Flavour], make_pair: PairMaker
) -> None:
    a, b = make_pair()
    left_class = type("LeftIds", (ExchangeIds, flavours[0]), {})
    right_class = type("RightIds", (ExchangeIds, flavours[1]), {})
    left = left_class(a, "left-id")
    right = right_class(b, "right-id")
    try:
        assert left.wait_handshake(10)
        assert right.wait_handshake(10)
        assert left.remote_id == "right-id"
        assert right.remote_id == "left-id"
        assert left.handshake_complete == "peer is right-id"
        assert right.handshakeComplete == "peer is left-id"
        assert left.active and right.active
        assert not library_threads_named("stockings-handshake")
    finally:
        left.close()
        right.close()


def library_threads_named(prefix: str) -> list[threading.Thread]:
    """Live library threads whose name starts with ``prefix``."""
    return [t for t in library_threads() if t.name.startswith(prefix) and t.is_alive()]


class Refuses(Stocking):
    def handshake(self) -> Any:
        return False


class Explodes(Stocking):
    def handshake(self) -> Any:
        raise ValueError("no thanks")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("failing", [Refuses, Explodes], ids=["returns-false", "raises"])
def test_failed_handshake_ends_both_sides(
    failing: Flavour, make_pair: PairMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    unreported: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", unreported.append)
    a, b = make_pair()
    failed = failing(a)
    peer = Stocking(b)
    try:
        assert not failed.wait_handshake(10)
        wait_until(lambda: failed.ended)
        assert failed.end_reason is EndReason.HANDSHAKE_FAILED
        assert isinstance(failed.end_exception, HandshakeFailed)
        if failing is Explodes:
            assert isinstance(failed.end_exception.__cause__, ValueError)
        assert not failed.active
        assert not failed.handshake_complete
        with pytest.raises(NotReady):
            failed.write("x")
        # The peer sees the connection end too.
        wait_until(lambda: peer.ended)
        assert peer.end_reason in (EndReason.PEER_CLOSED, EndReason.RESET)
        with pytest.raises(ConnectionClosed):
            peer.write("anyone there?")
        assert not unreported
    finally:
        failed.close()
        peer.close()


class AwaitsHello(Stocking):
    """A handshake that waits for the peer's hello, and fails without one."""

    def handshake(self) -> Any:
        return self._read(timeout=20) is not None


@pytest.mark.timeout(30)
def test_an_end_under_a_handshake_is_its_failure_from_the_moment_it_ends(
    make_pair: PairMaker,
) -> None:
    a, b = make_pair()
    gate = threading.Event()
    gated = GatedHandshake(a, gate)
    try:
        b.close()
        wait_until(lambda: gated.ended)
        # The handshake is still waiting on its gate: the label is the end's own.
        assert gated.end_reason is EndReason.HANDSHAKE_FAILED
        assert isinstance(gated.end_exception, HandshakeFailed)
        assert "ended during the handshake" in str(gated.end_exception)
        # A handshake that then claims success changes nothing.
        gate.set()
        gated.wait_handshake(10)
        assert gated.end_reason is EndReason.HANDSHAKE_FAILED
    finally:
        gate.set()
        gated.close()


@pytest.mark.timeout(30)
def test_a_close_during_a_custom_handshake_stays_a_close(make_pair: PairMaker) -> None:
    a, b = make_pair()
    waiting = AwaitsHello(a)
    peer = Stocking(b)
    try:
        waiting.close()
        # The handshake's read ends with the connection, and the handshake fails.
        assert not waiting.wait_handshake(10)
        assert waiting.end_reason is EndReason.CLOSED
        assert waiting.end_exception is None
    finally:
        waiting.close()
        peer.close()


# -------------------------------------------------------------------- hooks


class UserStatus(Stocking):
    def pre_write(self, user: str, status: str = "OK") -> str:
        return f"{user}:{status}"

    def post_read(self, message: Any) -> Any:
        user, status = message.split(":")
        return user, status


def test_pre_write_and_post_read_overrides(make_pair: PairMaker) -> None:
    a, b = make_pair()
    with UserStatus(a) as left, UserStatus(b) as right:
        left.write("alice", status="ERROR")
        left.write("bob")
        assert read_n(right, 2) == [("alice", "ERROR"), ("bob", "OK")]
        right.write("carol", "AWAY")
        assert list_of_one(left) == [("carol", "AWAY")]


def test_pre_write_takes_keyword_only_calls_and_extra_arguments(make_pair: PairMaker) -> None:
    a, b = make_pair()
    with UserStatus(a) as left, Stocking(b) as right:
        left.write(user="dave", status="BUSY")
        left.write(user="erin")
        assert read_n(right, 2) == ["dave:BUSY", "erin:OK"]


def test_the_default_pre_write_sends_the_first_argument_and_ignores_the_rest(
    make_pair: PairMaker,
) -> None:
    a, b = make_pair()
    with Stocking(a) as left, Stocking(b) as right:
        # 1.2.3's README: the first positional argument, whatever follows it.
        left.write("first", "second", flag=True)
        assert right.read(timeout=10) == "first"


def test_write_is_shown_as_taking_any_arguments() -> None:
    # What help() and the API reference show, and what pre_write receives.
    assert str(inspect.signature(Stocking.write)) == "(self, *args, **kwargs) -> None"
    # A plain stocking's own write (its outbox's method) is shown the same way.
    a, b = socket.socketpair()
    with Stocking(a) as plain, LoudWrite(b) as hooked:
        for stocking in (plain, hooked):
            assert str(inspect.signature(stocking.write)) == "(*args, **kwargs) -> None"


def _files_entered(call: Callable[[], object]) -> set[str]:
    """The source files of the Python functions ``call`` runs."""
    files: set[str] = set()

    def profile(frame: Any, event: str, arg: object) -> None:
        if event == "call":
            files.add(frame.f_code.co_filename.rsplit("/", 1)[-1])

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return files


class LoudWrite(Stocking):
    def pre_write(self, message: Any) -> Any:
        return f"{message}!"


def test_a_plain_write_skips_the_stocking_and_a_hooked_one_goes_through_it(
    make_pair: PairMaker,
) -> None:
    # A plain stocking's write() is its outbox's method, bound once (a
    # Python call less per message); a class that overrides write or
    # pre_write keeps its own, and so its hook.
    a, b = make_pair()
    with Stocking(a) as plain, LoudWrite(b) as loud:
        assert "_stocking.py" not in _files_entered(lambda: plain.write("hey"))
        assert plain.write_many(["you"]) is None
        assert loud.read(timeout=10) == "hey"
        assert loud.read(timeout=10) == "you"
        assert "_stocking.py" in _files_entered(lambda: loud.write("ho"))
        assert plain.read(timeout=10) == "ho!"


def test_a_handshake_marked_incomplete_again_refuses_read_and_write(
    make_pair: PairMaker,
) -> None:
    # 1.2.3 code may set the flag; the bound fast read and write must not
    # skip the check it then asks for.
    a, b = make_pair()
    with Stocking(a) as left, Stocking(b) as right:
        left.handshake_complete = False
        with pytest.raises(NotReady):
            left.write("early")
        with pytest.raises(NotReady):
            left.read()
        left.handshakeComplete = True
        left.write("now")
        assert right.read(timeout=10) == "now"
        right.write("back")
        assert left.read(timeout=10) == "back"


class LoudRead(Stocking):
    def read(self, timeout: float | None = 0.0) -> Any:
        message = super().read(timeout)
        return None if message is None else f"{message}!"


def test_a_read_override_is_called_on_every_flavour_of_binding(make_pair: PairMaker) -> None:
    # A plain stocking's read() is its inbox's method, bound once; a class
    # that overrides read (or post_read, or the handshake) keeps its own.
    a, b = make_pair()
    with LoudRead(a) as loud, Stocking(b) as plain:
        plain.write("hey")
        assert loud.read(timeout=10) == "hey!"
        loud.write("ho")
        assert plain.read(timeout=10) == "ho"
        assert plain.read() is None


def list_of_one(stocking: Stocking) -> list[Any]:
    """Read one message through the iterator, the way a ``for`` loop would."""
    iterator = iter(stocking)
    return [next(iterator)]


# ------------------------------------------------------------------ closing


def test_writing_to_a_closed_stocking_raises(same_pair: tuple[Any, Any]) -> None:
    left, _right = same_pair
    left.close()
    assert not left.active
    with pytest.raises(ConnectionClosed):
        left.write("nope")
    left.close()  # idempotent


def test_writing_after_the_peer_closed_raises(pair: tuple[Any, Any]) -> None:
    left, right = pair
    right.close()
    wait_until(lambda: left.ended)
    assert left.end_reason is EndReason.PEER_CLOSED
    assert not left.active
    with pytest.raises(ConnectionClosed) as raised:
        left.write("nope")
    assert raised.value.reason is EndReason.PEER_CLOSED


def test_close_keeps_received_messages_readable(pair: tuple[Any, Any]) -> None:
    left, right = pair
    sent = ["one", b"two", "", "three"]
    for message in sent:
        left.write(message)
    wait_until(lambda: right.unread_bytes == sum(map(len, sent)))
    right.close()
    assert right.ended
    assert right.end_reason is EndReason.CLOSED
    assert [right.read() for _ in sent] == sent
    assert right.read() is None
    assert right.read(timeout=None) is None  # ended: never blocks


def test_close_flushes_what_was_written(pair: tuple[Any, Any]) -> None:
    left, right = pair
    big = b"f" * (4 * MIB)
    left.write(big)
    left.write("tail")
    left.close()
    assert list(right) == [big, "tail"]


def test_context_manager_closes(flavour: Flavour) -> None:
    a, b = socket.socketpair()
    with flavour(a) as left, flavour(b) as right:
        left.write("in context")
        assert right.read(timeout=10) == "in context"
    assert not left.active and not right.active
    # ``right`` exits first, so ``left`` may see the peer's close before its own.
    assert right.end_reason is EndReason.CLOSED
    assert left.end_reason in (EndReason.CLOSED, EndReason.PEER_CLOSED)
    assert left.sock.fileno() == -1


# -------------------------------------------------------------------- leaks


@pytest.mark.timeout(60)
@pytest.mark.parametrize("private", [False, True], ids=["shared-hub", "private-hub"])
def test_200_open_close_cycles_leave_nothing(
    flavour: Flavour, private: bool, no_leaks: None
) -> None:
    for i in range(200):
        a, b = socket.socketpair()
        left = flavour(a, private=private)
        right = flavour(b, private=private)
        left.fileno()
        right.fileno()
        left.write(f"cycle {i}")
        assert right.read(timeout=10) == f"cycle {i}"
        if i % 2:
            left.close()
            right.close()
        else:
            right.abort()
            left.close()


@pytest.mark.timeout(60)
def test_open_close_cycles_over_tcp_with_handshakes_leave_nothing(no_leaks: None) -> None:
    for i in range(50):
        with socket.create_server(("127.0.0.1", 0)) as listener:
            client = socket.create_connection(listener.getsockname())
            server, _ = listener.accept()
        left = ExchangeIds(client, f"c{i}")
        right = ExchangeIds(server, f"s{i}")
        assert left.wait_handshake(10) and right.wait_handshake(10)
        left.close()
        right.close()


def test_public_names_are_exported() -> None:
    for name in ("Stocking", "SelectStocking", "NotReady", "ConnectionClosed", "EndReason"):
        assert hasattr(stockings, name)
