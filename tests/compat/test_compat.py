"""Compatibility with Stockings 1.2.3 code: its module name, its spellings, its flavours."""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import sys
import textwrap
from typing import Any, ClassVar

import pytest

import Stockings
import stockings
from conftest import wait_until
from stockings import _outbox

__all__: list[str] = []


def test_the_1_2_3_module_hands_out_the_same_objects() -> None:
    assert Stockings.__all__ == stockings.__all__
    assert Stockings.__version__ == stockings.__version__
    for name in stockings.__all__:
        assert getattr(Stockings, name) is getattr(stockings, name), name
    # The names 1.2.3 code uses.
    assert Stockings.Stocking is stockings.Stocking
    assert Stockings.SelectStocking is stockings.SelectStocking
    assert Stockings.NotReady is stockings.NotReady
    if hasattr(stockings, "PollStocking"):
        assert Stockings.PollStocking is stockings.PollStocking


def test_a_stocking_made_through_either_name_is_both() -> None:
    a, b = socket.socketpair()
    with Stockings.Stocking(a) as old, stockings.Stocking(b) as new:
        assert isinstance(old, stockings.Stocking)
        assert isinstance(new, Stockings.Stocking)
        old.write("from the old name")
        assert new.read(timeout=10) == "from the old name"


def test_camel_case_attributes_and_calls() -> None:
    a, b = socket.socketpair()
    with Stockings.Stocking(a) as left, Stockings.Stocking(b) as right:
        assert left.handshakeComplete is True
        assert left.handshakeComplete == left.handshake_complete
        assert left.writeDataQueued() is False
        assert left.writeDataQueued() == left.write_data_queued()
        assert left.preWrite("x", "ignored", key=1) == "x"
        assert left.postRead("y") == "y"
        assert left.active
        assert left.addr == a.getpeername()
        assert left.sock is a
        left.write("ok")
        assert right.read(timeout=10) == "ok"


class CamelHooks(Stockings.Stocking):
    """1.2.3 spellings overridden."""

    def preWrite(self, user: str, status: str = "OK") -> str:
        return f"{user}:{status}"

    def postRead(self, message: Any) -> Any:
        return tuple(message.split(":"))


class SnakeHooks(Stockings.Stocking):
    """The new spellings overridden."""

    def pre_write(self, user: str, status: str = "OK") -> str:
        return f"{user}={status}"

    def post_read(self, message: Any) -> Any:
        return tuple(message.split("="))


class CamelOverSnake(SnakeHooks):
    """1.2.3 spellings calling up to a parent that used the new ones."""

    def preWrite(self, user: str, status: str = "OK") -> str:
        return "[" + super().preWrite(user, status) + "]"

    def postRead(self, message: Any) -> Any:
        return ("camel", *super().postRead(message.strip("[]")))


class SnakeOverCamel(CamelHooks):
    """The new spellings calling up to a parent that used 1.2.3's."""

    def pre_write(self, user: str, status: str = "OK") -> str:
        return super().pre_write(user.upper(), status)

    def post_read(self, message: Any) -> Any:
        return ("snake", *super().postRead(message))


class SuperOnly(Stockings.Stocking):
    """Overrides that only add to the defaults through ``super()``."""

    def preWrite(self, *args: Any, **kwargs: Any) -> Any:
        return super().preWrite(*args, **kwargs) + "!"

    def post_read(self, message: Any) -> Any:
        return super().post_read(message) + "?"


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (CamelHooks, ("ann", "ERROR")),
        (SnakeHooks, ("ann", "ERROR")),
        (CamelOverSnake, ("camel", "ann", "ERROR")),
        (SnakeOverCamel, ("snake", "ANN", "ERROR")),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else "",
)
def test_hook_overrides_in_either_spelling(cls: type[stockings.Stocking], expected: Any) -> None:
    a, b = socket.socketpair()
    with cls(a) as left, cls(b) as right:
        left.write("ann", status="ERROR")
        assert right.read(timeout=10) == expected
        # Both spellings lead to the override, whichever one it used.
        assert left.preWrite("u", "S") == left.pre_write("u", "S")
        assert right.postRead(left.pre_write("u", "S")) == right.post_read(left.pre_write("u", "S"))


def test_super_calls_reach_the_defaults() -> None:
    a, b = socket.socketpair()
    with SuperOnly(a) as left, SuperOnly(b) as right:
        left.write("hey")
        assert right.read(timeout=10) == "hey!?"


class CamelHandshake(Stockings.Stocking):
    """A 1.2.3-style handshake that polls ``_read()`` while ``active``."""

    def handshake(self) -> bool:
        self._write("hello from " + self.side)
        while self.active:
            reply = self._read(timeout=0.05)
            if reply is not None:
                self.remote = reply
                return True
        return False

    def __init__(self, sock: socket.socket, side: str) -> None:
        self.side = side
        self.remote = None
        super().__init__(sock)


@pytest.mark.timeout(20)
def test_1_2_3_style_handshake_sets_handshake_complete() -> None:
    a, b = socket.socketpair()
    left, right = CamelHandshake(a, "left"), CamelHandshake(b, "right")
    try:
        wait_until(lambda: left.handshakeComplete and right.handshakeComplete)
        assert left.remote == "hello from right"
        assert right.remote == "hello from left"
        left.write("after")
        assert right.read(timeout=10) == "after"
    finally:
        left.close()
        right.close()


# --------------------------------------------------------- SelectStocking

NO_POLL_SCRIPT = textwrap.dedent(
    """
    import select
    del select.poll
    import selectors, socket
    import stockings, Stockings

    assert not hasattr(Stockings, "PollStocking"), "PollStocking exists without poll"
    assert "PollStocking" not in Stockings.__all__
    for flavour in (Stockings.SelectStocking, Stockings.Stocking):
        a, b = socket.socketpair()
        with Stockings.SelectStocking(a) as left, flavour(b) as right:
            for i in range(2000):
                left.write("m%d" % i if i % 2 else b"b%d" % i)
                right.write("r%d" % i)
            for i in range(2000):
                got = right.read(timeout=10)
                assert got == ("m%d" % i if i % 2 else b"b%d" % i), got
                assert left.read(timeout=10) == "r%d" % i
            left.write(b"x" * 3000000)
            assert right.read(timeout=10) == b"x" * 3000000
            ready, _, _ = select.select([right], [], [], 0)
            assert not ready
            left.write("ping")
            ready, _, _ = select.select([right], [], [], 10)
            assert ready == [right]
            assert right.read() == "ping"
    print("OK")
    """
)


@pytest.mark.timeout(60)
def test_select_stocking_works_without_poll() -> None:
    result = subprocess.run(
        [sys.executable, "-c", NO_POLL_SCRIPT],
        capture_output=True,
        text=True,
        timeout=50,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"


class RecordingSelector(selectors.SelectSelector):
    """A ``select.select`` selector that records every timeout it is asked to wait."""

    timeouts: ClassVar[list[float | None]] = []

    def select(self, timeout: float | None = None) -> Any:
        RecordingSelector.timeouts.append(timeout)
        return super().select(timeout)


class RecordedSelectStocking(stockings.SelectStocking):
    selector_factory = RecordingSelector


@pytest.mark.timeout(20)
def test_select_stocking_never_wakes_periodically_without_the_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STOCKING_SELECT_SEND_INTERVAL", raising=False)
    # No write here is part of a burst, whose end the hub sends after a
    # one-shot hold (tests/io/test_hot_path.py): only the idle waits are in question.
    monkeypatch.setattr(_outbox, "BURST_GAP", 0.0)
    RecordingSelector.timeouts = []
    a, b = socket.socketpair()
    left = RecordedSelectStocking(a, private=True)
    right = RecordedSelectStocking(b, private=True)
    try:
        for i in range(20):
            left.write(f"m{i}")
            assert right.read(timeout=10) == f"m{i}"
        wait_until(lambda: None in RecordingSelector.timeouts)
        # Idle waits are unbounded: data to send wakes the loop through its socket pair.
        assert all(t is None or t == 0 for t in RecordingSelector.timeouts)
    finally:
        left.close()
        right.close()


@pytest.mark.timeout(20)
def test_send_interval_is_only_an_upper_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKING_SELECT_SEND_INTERVAL", "0.02")
    RecordingSelector.timeouts = []
    a, b = socket.socketpair()
    left = RecordedSelectStocking(a, private=True)
    right = RecordedSelectStocking(b, private=True)
    try:
        wait_until(lambda: len(RecordingSelector.timeouts) >= 10)
        assert all(t is not None and t <= 0.02 for t in RecordingSelector.timeouts)
        left.write("still works")
        assert right.read(timeout=10) == "still works"
    finally:
        left.close()
        right.close()


@pytest.mark.timeout(30)
def test_a_huge_send_interval_does_not_delay_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    # 1.2.3 sleeps up to the interval before sending; a message arriving
    # within the read timeout at all proves nothing waits for a periodic wake.
    monkeypatch.setenv("STOCKING_SELECT_SEND_INTERVAL", "1000000")
    a, b = socket.socketpair()
    left = stockings.SelectStocking(a, private=True)
    right = stockings.SelectStocking(b, private=True)
    try:
        assert left._channel.hub.max_wait == 1000000.0
        for i in range(200):
            left.write(f"q{i}")
            assert right.read(timeout=10) == f"q{i}"
            right.write(f"a{i}")
            assert left.read(timeout=10) == f"a{i}"
    finally:
        left.close()
        right.close()


@pytest.mark.parametrize("value", ["", "abc", "0", "-5"])
def test_meaningless_send_intervals_are_ignored(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STOCKING_SELECT_SEND_INTERVAL", value)
    assert stockings.SelectStocking._max_wait() is None
