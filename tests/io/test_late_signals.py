"""A signal that lands just before a blocking call sleeps is still handled, within a second.

Such a signal interrupts no system call: its handler runs only once the
main thread executes Python again (``late_signal``). Every call that may
block without a deadline (a read, a write over the high-water mark, a
flushing close, a custom handshake, a ``Waiter``, ``Server.accept``) must
therefore wake now and then, or a Ctrl-C, or a supervisor's single
SIGTERM, would wait for as long as the call does: for ever, here.
"""

from __future__ import annotations

import _thread
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import stockings
from conftest import FLAVOURS
from late_signal import Late, late_signal
from stockings import Stocking
from stockings._sync import (
    SIGNAL_CHECK_INTERVAL,
    join_thread,
    wait_for_condition,
    wait_for_release,
)

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads thread states in /proc"),
    pytest.mark.usefixtures("no_leaks"),
]

#: The longest a blocked call may hold a late handler back: its longest
#: sleep (a second, for reads) and room for a loaded machine.
LIMIT = 3.0


@pytest.fixture
def pair() -> Iterator[Callable[..., tuple[Stocking, Stocking]]]:
    """Makes stockings over socket pairs; aborts them all at the end."""
    made: list[Stocking] = []

    def make(flavour: type[Stocking] = Stocking, **options: Any) -> tuple[Stocking, Stocking]:
        left, right = socket.socketpair()
        ours, theirs = flavour(left, **options), Stocking(right)
        made.extend((ours, theirs))
        return ours, theirs

    yield make
    for stocking in made:
        stocking.abort()


@pytest.fixture
def silent_peer() -> Iterator[Callable[..., Stocking]]:
    """Makes a stocking whose peer is a plain socket that never reads."""
    made: list[tuple[Stocking, socket.socket]] = []

    def make(**options: Any) -> Stocking:
        left, right = socket.socketpair()
        for sock in (left, right):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        ours = Stocking(left, **options)
        made.append((ours, right))
        return ours

    yield make
    for stocking, sock in made:
        stocking.abort()
        sock.close()


def expect_late(call: Callable[[], object]) -> float:
    """Run ``call``, which blocks, with a late signal; return how long its handler waited."""
    with late_signal() as timing, pytest.raises(Late):
        call()
    return timing.delay


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("how", ["read", "read_all", "iterate"])
def test_a_blocked_read(
    pair: Callable[..., tuple[Stocking, Stocking]], flavour: type[Stocking], how: str
) -> None:
    ours, theirs = pair(flavour)
    calls: dict[str, Callable[[], object]] = {
        "read": lambda: ours.read(None),
        "read_all": lambda: ours.read_all(None),
        "iterate": lambda: next(iter(ours)),
    }
    assert expect_late(calls[how]) < LIMIT
    # Nothing lost by the interruption: the stocking reads on.
    theirs.write(b"after")
    assert ours.read(5) == b"after"


def test_a_read_that_receives_on_its_own_thread(
    pair: Callable[..., tuple[Stocking, Stocking]],
) -> None:
    # No spin: the reader goes straight to polling the socket itself.
    ours, theirs = pair(read_spin=0.0)
    assert expect_late(lambda: ours.read(None)) < LIMIT
    theirs.write(b"after")
    assert ours.read(5) == b"after"


def test_a_write_over_the_high_water_mark(silent_peer: Callable[..., Stocking]) -> None:
    ours = silent_peer(write_high_water=64 * 1024)
    chunk = b"x" * (256 * 1024)

    def write_until_blocked() -> None:
        while True:
            ours.write(chunk)

    assert expect_late(write_until_blocked) < LIMIT
    assert ours.active


def test_a_close_that_flushes(silent_peer: Callable[..., Stocking]) -> None:
    ours = silent_peer()
    ours.write(b"x" * (1024 * 1024))
    assert expect_late(lambda: ours.close(timeout=None)) < LIMIT


class _WaitsForTheFirstWord(Stocking):
    def handshake(self) -> Any:
        return self._read(None)


def test_waiting_for_a_custom_handshake(pair: Callable[..., tuple[Stocking, Stocking]]) -> None:
    ours, _ = pair(_WaitsForTheFirstWord)
    assert expect_late(lambda: ours.wait_handshake(None)) < LIMIT
    assert not ours.handshake_complete


@pytest.mark.parametrize("how", ["Waiter", "wait"])
def test_a_waiter(pair: Callable[..., tuple[Stocking, Stocking]], how: str) -> None:
    ours, theirs = pair()
    with stockings.Waiter([ours]) as waiter:
        call = waiter.wait if how == "Waiter" else (lambda: stockings.wait([ours]))
        assert expect_late(call) < LIMIT
        theirs.write(b"after")
        assert waiter.wait(5) == [ours]


def test_accepting() -> None:
    with stockings.Server(("127.0.0.1", 0)) as server:
        assert expect_late(server.accept) < LIMIT


def test_closing_a_server_whose_handler_is_busy() -> None:
    # close() waits for the handler's thread, and this handler does not
    # return when its client is closed.
    busy, release = threading.Event(), threading.Event()

    def handler(client: Stocking) -> None:
        busy.set()
        release.wait(30)

    server = stockings.Server(("127.0.0.1", 0), handler=handler)
    try:
        with stockings.connect(server.address):
            assert busy.wait(10)
            assert expect_late(lambda: server.close(timeout=None)) < LIMIT
    finally:
        release.set()
        server.close()


def test_the_helper_catches_a_wait_with_no_bound() -> None:
    # The test above would pass whatever the delay if the helper failed to
    # hold the handler back: a bare lock, which nothing ever wakes, must.
    lock = _thread.allocate_lock()
    lock.acquire()
    delay = expect_late(lock.acquire)
    assert delay > 5.0


class TestTheSlicedWaits:
    """The waits that wake to let handlers run keep the meaning of the calls they replace."""

    def test_a_release_after_several_slices_is_seen(self) -> None:
        lock = _thread.allocate_lock()
        lock.acquire()
        timer = threading.Timer(2.5 * SIGNAL_CHECK_INTERVAL, lock.release)
        timer.start()
        started = time.monotonic()
        assert wait_for_release(lock, 10 * SIGNAL_CHECK_INTERVAL)
        assert time.monotonic() - started < 9 * SIGNAL_CHECK_INTERVAL
        timer.join()

    @pytest.mark.parametrize("timeout", [None, 10.0])
    def test_a_release_ends_the_wait(self, timeout: float | None) -> None:
        lock = _thread.allocate_lock()
        lock.acquire()
        timer = threading.Timer(1.5 * SIGNAL_CHECK_INTERVAL, lock.release)
        timer.start()
        assert wait_for_release(lock, timeout)
        timer.join()

    @pytest.mark.parametrize("timeout", [0.1, 1.7 * SIGNAL_CHECK_INTERVAL])
    def test_a_timeout_is_kept(self, timeout: float) -> None:
        lock = _thread.allocate_lock()
        lock.acquire()
        started = time.monotonic()
        assert not wait_for_release(lock, timeout)
        assert time.monotonic() - started >= timeout

    def test_no_timeout_left_tries_once(self) -> None:
        lock = _thread.allocate_lock()
        assert wait_for_release(lock, 0)
        assert not wait_for_release(lock, 0)
        assert not wait_for_release(lock, -1.0)

    def test_a_join_with_a_timeout_returns_with_the_thread_alive(self) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait, name="sliced-join")
        thread.start()
        started = time.monotonic()
        join_thread(thread, 1.5 * SIGNAL_CHECK_INTERVAL)
        assert time.monotonic() - started >= 1.5 * SIGNAL_CHECK_INTERVAL
        assert thread.is_alive()
        stop.set()
        join_thread(thread, None)
        assert not thread.is_alive()

    def test_a_condition_wait_sees_the_predicate_and_the_timeout(self) -> None:
        condition = threading.Condition()
        state = {"ready": False}

        def make_ready() -> None:
            with condition:
                state["ready"] = True
                condition.notify_all()

        timer = threading.Timer(1.5 * SIGNAL_CHECK_INTERVAL, make_ready)
        timer.start()
        with condition:
            assert wait_for_condition(condition, lambda: state["ready"])
            assert not wait_for_condition(condition, lambda: not state["ready"], 0.1)
        timer.join()
