"""Every wait of the API takes no bound as ``None``, ``inf`` or a huge number; refuses the rest.

The waits underneath (lock acquires, ``select``, socket timeouts) overflow on
``inf``; a close or a hub's loop that failed so half way would leave the work
half done. A timeout that is no number of seconds is refused before anything
happens, with an error naming it.
"""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest

import stockings
from conftest import tcp_pair, unix_pair, wait_until

NO_BOUND = [math.inf, 1e300]
NOT_SECONDS: list[tuple[object, type[Exception], str]] = [
    (math.nan, ValueError, "not NaN"),
    ("1", TypeError, "not str"),
    (True, TypeError, "not bool"),
]


def later(delay: float, action: Callable[[], object]) -> threading.Timer:
    """Run ``action`` on another thread after ``delay`` seconds, so that a wait ends."""
    timer = threading.Timer(delay, action)
    timer.start()
    return timer


@pytest.fixture
def pair() -> Any:
    a, b = unix_pair()
    left, right = stockings.Stocking(a), stockings.Stocking(b)
    yield left, right
    left.abort()
    right.abort()


@pytest.mark.parametrize("no_bound", NO_BOUND)
def test_read_and_read_all_wait_without_bound(pair: Any, no_bound: float) -> None:
    left, right = pair
    later(0.05, lambda: right.write(b"first")).join()
    assert left.read(no_bound) == b"first"
    timer = later(0.05, lambda: right.write(b"second"))
    assert left.read_all(no_bound) == [b"second"]
    timer.join()


@pytest.mark.parametrize(("wrong", "error", "says"), NOT_SECONDS)
def test_read_refuses_a_timeout_that_is_no_number_of_seconds(
    pair: Any, wrong: object, error: type[Exception], says: str
) -> None:
    left, right = pair
    with pytest.raises(error, match=rf"^timeout must be a number of seconds or None, {says}$"):
        left.read(wrong)
    with pytest.raises(error, match=says):
        left.read_all(wrong)
    right.write(b"still there")
    assert left.read(5) == b"still there"


@pytest.mark.parametrize("no_bound", NO_BOUND)
def test_close_without_bound_flushes_and_ends_cleanly(pair: Any, no_bound: float) -> None:
    left, right = pair
    left.write(b"last words")
    left.close(timeout=no_bound)
    assert left.end_reason is stockings.EndReason.CLOSED
    assert right.read(5) == b"last words"


@pytest.mark.parametrize(("wrong", "error", "says"), NOT_SECONDS)
def test_a_close_refused_for_its_timeout_has_done_nothing(
    pair: Any, wrong: object, error: type[Exception], says: str
) -> None:
    left, right = pair
    with pytest.raises(error, match=says):
        left.close(timeout=wrong)
    assert left.active
    assert not left.ended
    left.write(b"after")
    assert right.read(5) == b"after"
    left.close()
    assert left.end_reason is stockings.EndReason.CLOSED


@pytest.mark.parametrize("no_bound", NO_BOUND)
def test_wait_and_waiter_wait_without_bound(pair: Any, no_bound: float) -> None:
    left, right = pair
    timer = later(0.05, lambda: right.write(b"x"))
    assert stockings.wait([left], timeout=no_bound) == [left]
    timer.join()
    assert left.read() == b"x"
    with stockings.Waiter([left]) as waiter:
        timer = later(0.05, lambda: right.write(b"y"))
        assert waiter.wait(no_bound) == [left]
        timer.join()
        with pytest.raises(ValueError, match="not NaN"):
            waiter.wait(math.nan)
    with pytest.raises(TypeError, match="not str"):
        stockings.wait([left], timeout="1")  # type: ignore[arg-type]


@pytest.mark.parametrize("no_bound", NO_BOUND)
def test_server_accept_close_and_connect_without_bound(no_bound: float) -> None:
    server = stockings.Server(("127.0.0.1", 0))
    made: list[stockings.Stocking] = []
    try:
        timer = later(
            0.05, lambda: made.append(stockings.connect(server.address, timeout=no_bound))
        )
        accepted = server.accept(no_bound)
        timer.join()
        assert accepted is not None
        made[0].write(b"hello")
        assert accepted.read(5) == b"hello"
        with pytest.raises(ValueError, match="not NaN"):
            server.accept(math.nan)
        with pytest.raises(TypeError, match="not str"):
            stockings.connect(server.address, timeout="5")  # type: ignore[arg-type]
    finally:
        for stocking in made:
            stocking.close()
        server.close(timeout=no_bound)
    assert server.closed


class SlowHello(stockings.Stocking):
    """A handshake that waits for a word from the peer."""

    def handshake(self) -> bool:
        return self._read(10) == b"hello"


@pytest.mark.parametrize("no_bound", NO_BOUND)
def test_wait_handshake_without_bound(no_bound: float) -> None:
    a, b = unix_pair()
    gated, other = SlowHello(a), stockings.Stocking(b)
    try:
        timer = later(0.05, lambda: other.write(b"hello"))
        assert gated.wait_handshake(no_bound) is True
        timer.join()
        with pytest.raises(ValueError, match="not NaN"):
            gated.wait_handshake(math.nan)
    finally:
        gated.abort()
        other.abort()


def test_an_idle_timeout_of_inf_is_none_and_harms_no_stocking_on_the_shared_hub() -> None:
    # It once put an infinite timer on the shared hub: its next select()
    # overflowed, and the hub ended every stocking it served with ERROR.
    bystander_a, bystander_b = unix_pair()
    left, right = stockings.Stocking(bystander_a), stockings.Stocking(bystander_b)
    c, d = unix_pair()
    never_idle = stockings.Stocking(c, idle_timeout=math.inf)
    peer = stockings.Stocking(d)
    try:
        for round_trip in range(20):
            right.write(b"ping %d" % round_trip)
            assert left.read(5) == b"ping %d" % round_trip
            peer.write(b"pong")
            assert never_idle.read(5) == b"pong"
        assert left.active and never_idle.active
        assert left.end_reason is None and never_idle.end_reason is None
    finally:
        for stocking in (left, right, never_idle, peer):
            stocking.close()
    assert never_idle.end_reason is stockings.EndReason.CLOSED


def test_a_hub_timer_without_bound_never_fires_and_a_nan_one_is_refused() -> None:
    hub = stockings.Hub(name="stockings-hub-test-timers")
    a, b = unix_pair()
    # Attached, so that the hub has a thread to run its timers on.
    left, right = stockings.Stocking(a, hub=hub), stockings.Stocking(b, hub=hub)
    fired: list[str] = []
    ran = threading.Event()
    try:
        hub.call_later(math.inf, lambda: fired.append("never"))
        hub.call_later(1e300, lambda: fired.append("never either"))
        with pytest.raises(ValueError, match="NaN"):
            hub.call_later(math.nan, lambda: fired.append("nan"))
        hub.call_later(0.01, ran.set)
        assert ran.wait(10)
        # The loop still turns after sleeping towards the far timers.
        right.write(b"still served")
        assert left.read(10) == b"still served"
        assert left.end_reason is None
        assert fired == []
    finally:
        left.close()
        right.close()


@pytest.mark.parametrize(
    ("options", "error", "says"),
    [
        (
            {"max_message_size": 1.5},
            TypeError,
            "max_message_size must be a whole number of bytes or None, not float",
        ),
        ({"max_message_size": True}, TypeError, "not bool"),
        (
            {"write_high_water": "64k"},
            TypeError,
            "write_high_water must be a whole number of bytes, not str",
        ),
        (
            {"read_low_water": 0.5},
            TypeError,
            "read_low_water must be a whole number of bytes or None",
        ),
        ({"write_timeout": -1}, ValueError, "write_timeout must be a number of seconds, 0 or more"),
        (
            {"write_timeout": "1"},
            TypeError,
            "write_timeout must be a number of seconds or None, not str",
        ),
        ({"linger": "5"}, TypeError, "linger must be a number of seconds or None, not str"),
        ({"idle_timeout": "5"}, TypeError, "idle_timeout must be a number of seconds or None"),
        ({"read_spin": None}, TypeError, "read_spin must be a number of seconds, not NoneType"),
        ({"read_spin": math.inf}, ValueError, "read_spin must be a number of seconds, 0 or more"),
        ({"keepalive": 1e9}, ValueError, "at most 32767"),
        ({"keepalive": math.inf}, ValueError, "at most 32767"),
    ],
)
def test_an_option_of_the_wrong_kind_is_named_at_once_everywhere(
    options: dict[str, Any], error: type[Exception], says: str
) -> None:
    client, server = tcp_pair()
    with client, server:
        with pytest.raises(error, match=says):
            stockings.Stocking(client, **options)
        assert client.getblocking()  # untouched, still the caller's
    with pytest.raises(error, match=rf"^Server\(\): .*{says}"):
        stockings.Server(("127.0.0.1", 0), **options)


def test_a_hub_that_is_no_hub_is_named() -> None:
    a, b = unix_pair()
    with a, b, pytest.raises(TypeError, match=r"^hub must be a stockings\.Hub or None, not str$"):
        stockings.Stocking(a, hub="shared")  # type: ignore[arg-type]


def test_numpy_like_integers_are_sizes_too() -> None:
    class Index:
        """Any object with ``__index__`` (numpy's integers) is a whole number."""

        def __index__(self) -> int:
            return 1 << 20

    a, b = unix_pair()
    left = stockings.Stocking(a, max_message_size=Index())  # type: ignore[arg-type]
    right = stockings.Stocking(b)
    try:
        right.write(b"x" * 1000)
        assert left.read(5) == b"x" * 1000
    finally:
        left.close()
        right.close()


def test_write_timeout_inf_waits_for_the_queue_to_drain() -> None:
    a, b = unix_pair()
    writer = stockings.Stocking(a, write_high_water=1024, write_timeout=math.inf)
    reader = stockings.Stocking(b, read_high_water=1024)
    assert writer.write_timeout is None
    payload = b"p" * 512
    done = threading.Event()
    sent = 200

    def write_all() -> None:
        for _ in range(sent):
            writer.write(payload)
        done.set()

    thread = threading.Thread(target=write_all, name="test-writer")
    try:
        thread.start()
        # The writer blocks above the mark until the reader catches up.
        received = 0
        while received < sent:
            message = reader.read(10)
            assert message == payload
            received += 1
        assert done.wait(10)
    finally:
        thread.join(10)
        writer.close()
        reader.close()
    wait_until(lambda: not thread.is_alive())


def test_linger_inf_is_no_bound(pair: Any) -> None:
    left, _ = pair
    left.linger = math.inf
    assert left.linger is None
    with pytest.raises(TypeError, match=r"^linger must be a number of seconds or None, not str$"):
        left.linger = "5"  # type: ignore[assignment]
    assert left.linger is None


def test_write_timeout_set_later_is_checked_as_when_made(pair: Any) -> None:
    left, _ = pair
    left.write_timeout = math.inf
    assert left.write_timeout is None
    with pytest.raises(
        TypeError, match=r"^write_timeout must be a number of seconds or None, not str$"
    ):
        left.write_timeout = "5"  # type: ignore[assignment]
    with pytest.raises(ValueError, match=r"^write_timeout must be a number of seconds, 0 or more"):
        left.write_timeout = -1
    assert left.write_timeout is None
    left.write_timeout = 2
    assert left.write_timeout == 2


def test_a_negative_timeout_waits_for_nothing(pair: Any) -> None:
    left, _ = pair
    assert left.read(-1) is None
    assert left.read_all(-1) == []
    assert stockings.wait([left], timeout=-1) == []
    assert isinstance(socket.socket, type)
