"""Descriptor limits and faults in a hub's loop: only the stockings concerned end.

``select.select`` takes no descriptor from 1024 (``FD_SETSIZE``) up: a
select-flavour stocking refuses such a socket when it is made, and a
select-flavour server refuses such a connection, never the hub. More
generally a fault in a hub's loop ends the stockings it concerns, with the
fault as their end exception, and leaves none waiting forever.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import stockings
from conftest import library_threads, logged_errors, open_fds, wait_until
from stockings import EndReason, Hub, SelectStocking, Server, Stocking
from stockings._channel import Channel
from stockings._opening import DEFAULT_READ_HIGH_WATER, DEFAULT_WRITE_HIGH_WATER
from stockings._options import ChannelOptions

fcntl = pytest.importorskip("fcntl")
resource = pytest.importorskip("resource")

LIMIT = 1024
NO_LIMIT_FLAVOURS: list[type[Stocking]] = [Stocking]
if hasattr(stockings, "PollStocking"):
    NO_LIMIT_FLAVOURS.append(stockings.PollStocking)


@pytest.fixture(autouse=True)
def room_for_high_descriptors() -> Iterator[None]:
    """Let this process hold descriptors well over 1024, as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if wanted <= LIMIT + 64:
        pytest.skip(f"the descriptor limit ({hard}) leaves no room above {LIMIT}")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def high(sock: socket.socket) -> socket.socket:
    """The same connection on a descriptor of 1024 or more; ``sock`` is closed."""
    fd = fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD, LIMIT)
    sock.close()
    return socket.socket(fileno=fd)


def options() -> ChannelOptions:
    return ChannelOptions(
        stockings.DEFAULT_MAX_MESSAGE_SIZE,
        DEFAULT_WRITE_HIGH_WATER,
        None,
        DEFAULT_READ_HIGH_WATER,
        None,
        None,
        0.0,
    )


def echo(writer: Any, reader: Any, message: str = "ping") -> None:
    writer.write(message)
    assert reader.read(timeout=10) == message


# ------------------------------------------------------------ construction


def test_select_stocking_refuses_a_descriptor_over_fd_setsize() -> None:
    a, b = socket.socketpair()
    a = high(a)
    try:
        with pytest.raises(ValueError, match=r"FD_SETSIZE \(1024\)") as caught:
            SelectStocking(a)
        assert "PollStocking" in str(caught.value) and "Stocking" in str(caught.value)
        # Refused before anything was done to it: the caller still owns it.
        assert a.fileno() >= LIMIT
        a.send(b"x")
        assert b.recv(1) == b"x"
    finally:
        a.close()
        b.close()


def test_private_select_stocking_refuses_it_too() -> None:
    a, b = socket.socketpair()
    a = high(a)
    threads = len(library_threads())
    try:
        with pytest.raises(ValueError, match="FD_SETSIZE"):
            SelectStocking(a, private=True)
        assert len(library_threads()) == threads
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("flavour", NO_LIMIT_FLAVOURS, ids=lambda c: c.__name__)
def test_other_flavours_serve_high_descriptors(flavour: type[Stocking]) -> None:
    a, b = socket.socketpair()
    with flavour(high(a)) as left, flavour(b) as right:
        assert left.sock.fileno() >= LIMIT
        echo(left, right)
        echo(right, left)


# ------------------------------------------------------------------ server


def fill_below(limit: int) -> list[int]:
    """Take every free descriptor below ``limit``, so the next ones land above it."""
    placeholder = os.open(os.devnull, os.O_RDONLY)
    taken = [placeholder]
    while True:
        fd = os.dup(placeholder)
        if fd >= limit:
            os.close(fd)
            return taken
        taken.append(fd)


def test_select_server_refuses_connections_over_the_limit_not_the_hub() -> None:
    server = Server(("127.0.0.1", 0), cls=SelectStocking)
    a, b = socket.socketpair()
    bystander_left, bystander_right = SelectStocking(a), SelectStocking(b)
    taken = fill_below(LIMIT)
    try:
        refused = []
        for _ in range(3):
            client = socket.create_connection(server.address, timeout=10)
            refused.append(client)
            # Dropped on accept: the client sees the connection end.
            try:
                assert client.recv(1) == b""
            except ConnectionResetError:
                pass
        error = server.last_accept_error
        assert isinstance(error, OSError) and "FD_SETSIZE" in str(error)
        assert server.accept(timeout=0) is None
        assert server.failure is None
        echo(bystander_left, bystander_right)
    finally:
        for fd in taken:
            os.close(fd)
        for client in refused:
            client.close()
    # Room again below the limit: the same server and hub accept as before.
    with socket.create_connection(server.address, timeout=10) as raw, Stocking(raw) as client:
        accepted = server.accept(timeout=10)
        assert accepted is not None
        echo(client, accepted)
        echo(accepted, client)
    echo(bystander_right, bystander_left)
    bystander_left.close()
    bystander_right.close()
    server.close()


# ------------------------------------------------------------- hub faults


@pytest.mark.parametrize(
    "factory",
    [selectors.SelectSelector, lambda: selectors.SelectSelector()],
    ids=["class", "function"],
)
def test_a_socket_the_selector_refuses_ends_only_its_own_stocking(
    factory: Callable[[], selectors.BaseSelector],
) -> None:
    # Bypass the constructor's check, as a socket handed to a hub some other
    # way would (a factory that is no class hides the limit): the loop must
    # end that connection alone.
    hub = Hub(factory, name="stockings-hub-test-limit")
    a, b = socket.socketpair()
    left, right = Stocking(a, hub=hub), Stocking(b, hub=hub)
    c, d = socket.socketpair()
    intruder = Channel(high(c), hub, options())
    intruder.start()
    try:
        intruder.inbox.wait_ended(10)
        assert intruder.end_reason is EndReason.ERROR
        assert isinstance(intruder.end_exception, ValueError)
        assert intruder.sock.fileno() == -1
        echo(left, right)
        echo(right, left)
        assert left.active and right.active
    finally:
        left.close()
        right.close()
        d.close()
    wait_until(lambda: not hub.running)


class FlakySelector(selectors.PollSelector):
    """A selector whose ``select()`` fails ``failures`` times (class-wide), then works."""

    failures = 0
    error: Exception = OSError(errno.EIO, "injected select() failure")

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if FlakySelector.failures > 0:
            FlakySelector.failures -= 1
            raise FlakySelector.error
        return super().select(timeout)


def test_select_failing_once_ends_nobody(thread_errors: list[object]) -> None:
    hub = Hub(FlakySelector, name="stockings-hub-test-flaky")
    a, b = socket.socketpair()
    with Stocking(a, hub=hub) as left, Stocking(b, hub=hub) as right:
        echo(left, right)
        FlakySelector.error = RuntimeError("injected select() failure")
        FlakySelector.failures = 1
        echo(left, right, "after one failure")
        echo(right, left)
        assert FlakySelector.failures == 0
        assert left.active and right.active and hub.running
    wait_until(lambda: not hub.running)


def test_a_broken_selector_ends_every_stocking_and_orphans_none() -> None:
    fds = open_fds()
    hub = Hub(FlakySelector, name="stockings-hub-test-broken")
    pairs = [socket.socketpair() for _ in range(2)]
    served = [Stocking(sock, hub=hub) for pair in pairs for sock in pair]
    echo(served[0], served[1])
    FlakySelector.error = OSError(errno.EIO, "injected select() failure")
    FlakySelector.failures = 1_000_000
    x, y = socket.socketpair()
    try:
        # A wake-up: the loop now meets the broken selector.
        hub.call_soon(lambda: None)
        for stocking in served:
            assert stocking._channel.inbox.wait_ended(10)
            assert stocking.end_reason is EndReason.ERROR
            assert stocking.end_exception is FlakySelector.error
        wait_until(lambda: not hub.running)
        # One made while the selector is broken ends too, and close() keeps its timeout.
        late = Stocking(x, hub=hub)
        started = time.monotonic()
        late.close(timeout=0.5)
        assert time.monotonic() - started < 1.0
        assert x.fileno() == -1
        assert late.end_reason is EndReason.ERROR
    finally:
        FlakySelector.failures = 0
        y.close()
    wait_until(lambda: not hub.running)
    wait_until(lambda: open_fds() <= fds)


def test_a_callback_that_raises_ends_only_its_stocking(thread_errors: list[object]) -> None:
    hub = Hub(selectors.PollSelector, name="stockings-hub-test-callback")
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    victim, victim_peer = Stocking(a, hub=hub), Stocking(b, hub=hub)
    left, right = Stocking(c, hub=hub), Stocking(d, hub=hub)
    failure = ZeroDivisionError("injected")

    def explode(channel: Channel) -> None:
        raise failure

    hub.call_soon(types.MethodType(explode, victim._channel))
    try:
        assert victim._channel.inbox.wait_ended(10)
        assert victim.end_reason is EndReason.ERROR
        assert victim.end_exception is failure
        echo(left, right)
        echo(right, left)
        assert victim_peer.read(timeout=10) is None
        assert victim_peer.ended
    finally:
        for stocking in (victim, victim_peer, left, right):
            stocking.close()
    wait_until(lambda: not hub.running)


def test_a_bug_in_the_loop_ends_stockings_not_yet_registered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub = Hub(selectors.PollSelector, name="stockings-hub-test-bug")
    bug = RuntimeError("a bug in the loop")

    def broken_calls(selector: selectors.BaseSelector) -> None:
        raise bug

    # The loop breaks before it runs a single callback: no stocking has
    # registered its socket yet.
    monkeypatch.setattr(hub, "_run_calls", broken_calls)
    with logged_errors() as reported:
        pairs = [socket.socketpair() for _ in range(3)]
        waiting = [Stocking(a, hub=hub) for a, _ in pairs]
        try:
            for stocking in waiting:
                assert stocking._channel.inbox.wait_ended(10)
                assert stocking.end_reason is EndReason.ERROR
                assert stocking.end_exception is bug
                started = time.monotonic()
                stocking.close(timeout=0.5)
                assert time.monotonic() - started < 0.5
                assert stocking.sock.fileno() == -1
            wait_until(lambda: not hub.running)
            # Reported, once per thread it broke: a stocking made after the
            # failure starts the loop afresh, which breaks the same way.
            assert reported and all(error is bug for error in reported)
        finally:
            for _, b in pairs:
                b.close()
