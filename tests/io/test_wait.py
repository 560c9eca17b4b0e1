"""stockings.wait and Waiter: readiness of many stockings without a descriptor each."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

import stockings
from conftest import FLAVOURS, open_fds, wait_until
from stockings import EndReason, Stocking, Waiter

Pair = tuple[Stocking, Stocking]


@pytest.fixture
def pairs(no_leaks: None) -> Iterator[Callable[[int], list[Pair]]]:
    """Make ``n`` connected stocking pairs, all closed after the test."""
    made: list[Stocking] = []

    def make(n: int, cls: type[Stocking] = Stocking) -> list[Pair]:
        result = []
        for _ in range(n):
            a, b = socket.socketpair()
            pair = (cls(a), cls(b))
            made.extend(pair)
            result.append(pair)
        return result

    yield make
    for stocking in made:
        stocking.close()


def _in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    return thread, result


def test_nothing_ready_returns_empty(pairs: Callable[[int], list[Pair]]) -> None:
    mine = [a for a, _ in pairs(3)]
    assert stockings.wait(mine, timeout=0) == []
    assert stockings.wait(mine, timeout=0.05) == []
    assert stockings.wait([], timeout=0) == []


def test_returns_those_with_a_message(pairs: Callable[[int], list[Pair]]) -> None:
    (a1, _), (a2, b2), (a3, _) = pairs(3)
    b2.write("for two")
    assert stockings.wait([a1, a2, a3], timeout=5) == [a2]
    # Level-triggered: still ready until read.
    assert stockings.wait([a1, a2, a3], timeout=0) == [a2]
    assert a2.read() == "for two"
    assert stockings.wait([a1, a2, a3], timeout=0) == []


@pytest.mark.timeout(10)
def test_blocks_until_a_message_arrives(pairs: Callable[[int], list[Pair]]) -> None:
    (a1, b1), (a2, _) = pairs(2)
    thread, result = _in_thread(lambda: stockings.wait([a1, a2]))
    # Nothing sent yet: it must still be waiting, whatever the scheduler did.
    thread.join(0.05)
    assert thread.is_alive() and result == []
    b1.write(b"wake")
    thread.join(5)
    assert result == [[a1]]


@pytest.mark.timeout(10)
def test_ended_stockings_are_ready(pairs: Callable[[int], list[Pair]]) -> None:
    (a1, _), (a2, b2) = pairs(2)
    thread, result = _in_thread(lambda: stockings.wait([a1, a2], timeout=5))
    b2.close()
    thread.join(5)
    assert result == [[a2]]
    assert a2.ended and a2.end_reason is EndReason.PEER_CLOSED
    a1.close()
    # Ended ones stay ready, like a closed pipe in select(): in the order given.
    assert stockings.wait([a1, a2], timeout=0) == [a1, a2]


def test_ready_in_order_of_events(pairs: Callable[[int], list[Pair]]) -> None:
    made = pairs(4)
    mine = [a for a, _ in made]
    with Waiter(mine) as waiter:
        made[2][1].write("third first")
        assert waiter.wait(timeout=5) == [mine[2]]
        made[0][1].write("then the first")
        wait_until(lambda: mine[0].unread_bytes)
        made[3][1].close()
        wait_until(lambda: mine[3].ended)
        # Unread messages keep a stocking ready, in the order it became so.
        assert waiter.wait(timeout=5) == [mine[2], mine[0], mine[3]]
        assert mine[2].read() == "third first"
        assert waiter.wait(timeout=5) == [mine[0], mine[3]]
        waiter.discard(mine[3])
        assert mine[3] not in waiter and len(waiter) == 3
        assert waiter.wait(timeout=5) == [mine[0]]
        assert mine[0].read() == "then the first"
        assert waiter.wait(timeout=0) == []


def test_ready_again_after_being_drained(pairs: Callable[[int], list[Pair]]) -> None:
    ((a, b),) = pairs(1)
    with Waiter([a]) as waiter:
        for i in range(20):
            b.write(i.to_bytes(2, "big"))
            assert waiter.wait(timeout=5) == [a]
            assert a.read() == i.to_bytes(2, "big")
            assert waiter.wait(timeout=0) == []


@pytest.mark.timeout(20)
def test_many_stockings(pairs: Callable[[int], list[Pair]]) -> None:
    made = pairs(300)
    mine = [a for a, _ in made]
    fds = open_fds()
    chosen = list(range(0, 300, 7))
    with Waiter(mine) as waiter:
        for i in chosen:
            made[i][1].write(str(i))
        seen: set[int] = set()
        while len(seen) < len(chosen):
            ready = waiter.wait(timeout=5)
            assert ready, "a message never showed up"
            for stocking in ready:
                seen.add(int(stocking.read()))
        assert sorted(seen) == chosen
        assert waiter.wait(timeout=0) == []
    # Waiting made no descriptor per stocking.
    assert open_fds() <= fds


@pytest.mark.timeout(10)
def test_add_while_another_thread_waits(pairs: Callable[[int], list[Pair]]) -> None:
    (a1, _), (a2, b2) = pairs(2)
    waiter = Waiter([a1])
    thread, result = _in_thread(lambda: waiter.wait(timeout=5))
    b2.write("late")
    wait_until(lambda: a2.unread_bytes)
    waiter.add(a2)
    waiter.add(a2)  # a second add is a no-op
    thread.join(5)
    assert result == [[a2]]
    waiter.close()
    assert len(waiter) == 0


@pytest.mark.timeout(10)
def test_handshake_messages_do_not_count(no_leaks: None) -> None:
    release = threading.Event()

    class Slow(Stocking):
        def handshake(self) -> bool:
            release.wait(5)
            return self._read(timeout=5) == "hello"

    a, b = socket.socketpair()
    with Slow(a) as slow, Stocking(b) as plain:
        plain.write("hello")
        wait_until(lambda: slow.unread_bytes)
        assert stockings.wait([slow], timeout=0) == []
        release.set()
        assert slow.wait_handshake(5)
        assert stockings.wait([slow], timeout=0) == []
        plain.write("now")
        assert stockings.wait([slow], timeout=5) == [slow]
        assert slow.read() == "now"


def test_every_flavour(no_leaks: None) -> None:
    made = []
    for cls in FLAVOURS:
        left, right = socket.socketpair()
        made.append((cls(left), cls(right)))
    try:
        for _, b in made:
            b.write("x")
        mine = [a for a, _ in made]
        with Waiter(mine) as waiter:
            seen: list[Stocking] = []
            while len(seen) < len(mine):
                for stocking in waiter.wait(timeout=5):
                    assert stocking.read() == "x"
                    seen.append(stocking)
        assert sorted(map(id, seen)) == sorted(map(id, mine))
    finally:
        for pair in made:
            for stocking in pair:
                stocking.close()


@pytest.mark.timeout(10)
def test_mixed_with_plain_sockets(pairs: Callable[[int], list[Pair]]) -> None:
    ((a, b),) = pairs(1)
    left, right = socket.socketpair()
    with left, right:
        assert stockings.wait([a, left], timeout=0) == []
        right.send(b"raw")
        assert stockings.wait([a, left], timeout=5) == [left]
        b.write("msg")
        wait_until(lambda: a.unread_bytes)
        assert stockings.wait([a, left], timeout=5) == [a, left]


def test_rejects_what_it_cannot_wait_on(pairs: Callable[[int], list[Pair]]) -> None:
    ((a, _),) = pairs(1)
    with pytest.raises(TypeError):
        stockings.wait([a, object()], timeout=0)
    with pytest.raises(TypeError):
        Waiter([object()])
