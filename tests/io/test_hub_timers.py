"""The hub's timers: each runs at its deadline, and only an earlier one wakes the loop.

A writer's burst posts a timer per connection (the held flush); waking the
loop for each costs a system call and a switch of the GIL, so a timer due
after the loop's current sleep is only taken in when it next wakes.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator

import pytest

from conftest import wait_until
from stockings._hub import Hub


class CountingWaker:
    """Stands in for the hub's waker socket and counts the wake-ups sent."""

    def __init__(self, sock: object) -> None:
        self.sock = sock
        self.sends = 0

    def send(self, data: bytes) -> int:
        self.sends += 1
        return self.sock.send(data)  # type: ignore[attr-defined, no-any-return]

    def close(self) -> None:
        self.sock.close()  # type: ignore[attr-defined]


@pytest.fixture
def hub() -> Iterator[Hub]:
    """A running hub with nothing attached but the test, asleep with no timer."""
    hub = Hub(name="test-hub-timers")
    hub.attach(lambda: None)
    wait_until(lambda: hub.running and hub._sleep_until == math.inf)
    yield hub
    hub.call_soon(hub.detach)
    wait_until(lambda: not hub.running)


def _count_wakes(hub: Hub) -> CountingWaker:
    with hub._lock:
        waker = hub._waker = CountingWaker(hub._waker)  # type: ignore[assignment]
    return waker


@pytest.mark.timeout(20)
def test_timers_due_after_the_loop_wakes_do_not_wake_it_and_run_in_time(hub: Hub) -> None:
    first = threading.Event()
    hub.call_later(0.2, first.set)
    # Asleep until the first timer: later ones are taken in when it fires.
    wait_until(lambda: math.isfinite(hub._sleep_until))
    waker = _count_wakes(hub)
    ran: list[tuple[float, float]] = []
    done = threading.Event()

    def record(deadline: float) -> None:
        ran.append((deadline, time.monotonic()))
        if len(ran) == 20:
            done.set()

    for _ in range(20):
        deadline = time.monotonic() + 0.5
        hub.call_later(0.5, lambda deadline=deadline: record(deadline))
    assert waker.sends == 0, "a timer due after the loop's sleep woke it"
    assert done.wait(10), f"{len(ran)} of 20 timers ran"
    assert first.is_set()
    assert all(when >= deadline for deadline, when in ran), "a timer ran before its deadline"


@pytest.mark.timeout(20)
def test_a_timer_due_before_the_loop_wakes_wakes_it(hub: Hub) -> None:
    far = hub.call_later(60, lambda: None)
    wait_until(lambda: math.isfinite(hub._sleep_until))
    waker = _count_wakes(hub)
    soon = threading.Event()
    posted = time.monotonic()
    hub.call_later(0.05, soon.set)
    assert waker.sends == 1
    assert soon.wait(10), "the loop slept past a timer due before its wake-up"
    assert time.monotonic() - posted < 30
    far.cancel()


@pytest.mark.timeout(20)
def test_a_timer_posted_on_the_hub_thread_needs_no_wake_up(hub: Hub) -> None:
    waker = _count_wakes(hub)
    ran = threading.Event()
    hub.call_soon(lambda: hub.call_later(0.05, ran.set))
    assert ran.wait(10)
    # One wake-up for call_soon; the loop was awake when it posted the timer.
    assert waker.sends == 1


@pytest.mark.timeout(20)
def test_timers_posted_before_the_thread_starts_run_once_it_does() -> None:
    hub = Hub(name="test-hub-timers-unstarted")
    ran = threading.Event()
    hub.call_later(0.01, ran.set)
    assert not hub.running
    hub.attach(lambda: None)
    try:
        assert ran.wait(10)
    finally:
        hub.call_soon(hub.detach)
        wait_until(lambda: not hub.running)
