"""LazyCondition: the small condition variable every channel holds two of."""

from __future__ import annotations

import threading
import tracemalloc

import pytest

from conftest import wait_until
from stockings._sync import LazyCondition

pytestmark = pytest.mark.timeout(10)


def test_wait_times_out_and_keeps_the_lock() -> None:
    lock = threading.Lock()
    cond = LazyCondition(lock)
    with lock:
        assert cond.wait(0.01) is False
        assert cond.wait(0) is False
        assert lock.locked()
    assert cond.wait_for(lambda: 0, timeout=0) == 0


def test_notify_without_waiters_is_a_no_op() -> None:
    lock = threading.Lock()
    cond = LazyCondition(lock)
    with lock:
        cond.notify()
        cond.notify_all()


def test_notify_wakes_one_and_notify_all_the_rest() -> None:
    lock = threading.Lock()
    cond = LazyCondition(lock)
    woke: list[bool] = []

    def run() -> None:
        with lock:
            woke.append(cond.wait(5))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(cond._waiters or ()) == 3)
    with lock:
        cond.notify()
    wait_until(lambda: len(woke) == 1)
    assert woke == [True]
    with lock:
        assert len(cond._waiters or ()) == 2
        cond.notify_all()
    for thread in threads:
        thread.join(5)
    assert woke == [True, True, True]


def test_wait_for_sees_the_predicate_turn_true() -> None:
    lock = threading.Lock()
    cond = LazyCondition(lock)
    box: list[int] = []
    result: list[object] = []

    def run() -> None:
        with lock:
            result.append(cond.wait_for(lambda: box and box[0], timeout=5))

    thread = threading.Thread(target=run)
    thread.start()
    wait_until(lambda: cond._waiters)
    with lock:
        # A wake-up with the predicate still false: it waits on.
        cond.notify_all()
    wait_until(lambda: cond._waiters)
    with lock:
        box.append(42)
        cond.notify_all()
    thread.join(5)
    assert result == [42]


def test_is_much_smaller_than_threading_condition() -> None:
    locks = [threading.Lock() for _ in range(200)]
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        lazy = [LazyCondition(lock) for lock in locks]
        middle = tracemalloc.get_traced_memory()[0]
        full = [threading.Condition(lock) for lock in locks]
        end = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(lazy) == len(full)
    assert (middle - start) * 5 < end - middle


def test_a_registered_waiter_waits_unlocked_and_is_forgotten_however_it_ends() -> None:
    lock = threading.Lock()
    cond = LazyCondition(lock)
    with lock:
        waiter = cond.register()
    # Timed out: forgotten, and the lock is free again.
    assert cond.wait_registered(waiter, 0.01) is False
    assert not lock.locked()
    with lock:
        assert not cond._waiters
        waiter = cond.register()
    notifier = threading.Timer(0.02, lambda: _notify_all(lock, cond))
    notifier.start()
    # Notified: no bound needed, and the lock was not held meanwhile.
    assert cond.wait_registered(waiter, None) is True
    notifier.join(5)
    assert not lock.locked()
    with lock:
        assert not cond._waiters


def _notify_all(lock: threading.Lock, cond: LazyCondition) -> None:
    with lock:
        cond.notify_all()
