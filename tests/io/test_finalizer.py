"""A stocking dropped unclosed is aborted when collected, with a ResourceWarning.

As ``socket.socket`` does: the warning names the stocking, and its
descriptors and (for ``private=True``) its hub thread are freed. The hub
holds the connection, never the stocking, so dropping the stocking is
enough. A subclass whose ``__init__`` raises after ``Stocking.__init__`` is
covered the same way. Closed or ended stockings, and stockings still open
when the interpreter exits, give no warning.
"""

from __future__ import annotations

import gc
import socket
import subprocess
import sys
import textwrap
import warnings
import weakref
from collections.abc import Callable
from typing import ClassVar

import pytest

from conftest import FLAVOURS, library_threads, open_fds, tcp_pair, wait_until
from stockings import EndReason, Server, Stocking, Waiter
from stockings._channel import Channel

Pair = Callable[[], tuple[socket.socket, socket.socket]]


def peer_sees_the_end(peer: socket.socket) -> bool:
    """Whether ``peer``'s connection ended (a reset or an end of stream)."""
    peer.settimeout(10)
    try:
        while peer.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def unclosed(records: list[warnings.WarningMessage]) -> list[str]:
    return [
        str(record.message)
        for record in records
        if issubclass(record.category, ResourceWarning)
        and str(record.message).startswith("unclosed stocking")
    ]


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda c: c.__name__)
def test_dropped_stockings_warn_and_free_everything(
    flavour: type[Stocking], make_pair: Pair
) -> None:
    gc.collect()
    wait_until(lambda: not library_threads())
    fds = open_fds()
    peers = []
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        for _ in range(50):
            a, b = make_pair()
            stocking = flavour(a)
            stocking.write("unsent, perhaps")
            peers.append(b)
        ref = weakref.ref(stocking)
        del stocking
        gc.collect()
        # Nothing but the caller held it: gone without waiting for the collector.
        assert ref() is None
    messages = unclosed(records)
    assert len(messages) == 50
    assert messages[0].startswith(f"unclosed stocking <{flavour.__name__} ")
    for peer in peers:
        assert peer_sees_the_end(peer)
        peer.close()
    wait_until(lambda: not library_threads())
    wait_until(lambda: open_fds() <= fds)


def test_dropped_private_stockings_leave_no_thread() -> None:
    gc.collect()
    wait_until(lambda: not library_threads())
    fds = open_fds()
    peers = []
    with pytest.warns(ResourceWarning, match="unclosed stocking"):
        for _ in range(20):
            a, b = socket.socketpair()
            Stocking(a, private=True)
            peers.append(b)
        gc.collect()
    wait_until(lambda: not library_threads())
    for peer in peers:
        assert peer_sees_the_end(peer)
        peer.close()
    wait_until(lambda: open_fds() <= fds)


def test_the_abort_resets_a_tcp_peer() -> None:
    a, b = tcp_pair()
    with pytest.warns(ResourceWarning, match="unclosed stocking"):
        Stocking(a)
        gc.collect()
    b.settimeout(10)
    with pytest.raises(ConnectionResetError):
        b.recv(1)
    b.close()


class Broken(Stocking):
    made: ClassVar[list[Channel]] = []

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        Broken.made.append(self._channel)
        raise RuntimeError("a subclass that fails after Stocking.__init__")


def test_a_subclass_init_that_raises_leaks_nothing() -> None:
    gc.collect()
    wait_until(lambda: not library_threads())
    fds = open_fds()
    a, b = socket.socketpair()
    with pytest.warns(ResourceWarning, match="unclosed stocking <Broken "):
        with pytest.raises(RuntimeError, match="subclass"):
            Broken(a)
        gc.collect()
    assert peer_sees_the_end(b)
    b.close()
    wait_until(lambda: not library_threads())
    wait_until(lambda: open_fds() <= fds)


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda c: c.__name__)
def test_closed_or_ended_stockings_give_no_warning(flavour: type[Stocking]) -> None:
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        a, b = socket.socketpair()
        left, right = flavour(a), flavour(b)
        left.close()
        assert right.read(timeout=10) is None and right.ended
        del left, right  # right ended (the peer closed) but was never closed
        gc.collect()
    assert unclosed(records) == []
    wait_until(lambda: not library_threads())


def test_warnings_as_errors_still_abort() -> None:
    source = """
        import gc, socket
        import stockings

        a, b = socket.socketpair()
        stockings.Stocking(a)
        gc.collect()
        b.settimeout(10)
        assert b.recv(1) == b""
        print("ended", flush=True)
    """
    child = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-c", textwrap.dedent(source)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "ended"
    assert "ResourceWarning: unclosed stocking <Stocking " in child.stderr


def test_stockings_open_at_exit_are_left_to_exit() -> None:
    # No warning, and no abort: an idle connection still open at exit ends
    # cleanly, its last message delivered.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        source = """
            import socket, sys
            import stockings

            sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
            stocking = stockings.Stocking(sock)
            stocking.write("last words")
        """
        child = subprocess.Popen(
            [
                sys.executable,
                "-X",
                "dev",
                "-c",
                textwrap.dedent(source),
                str(listener.getsockname()[1]),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        listener.settimeout(30)
        conn, _ = listener.accept()
    with conn, Stocking(conn) as peer:
        assert peer.read(timeout=30) == "last words"
        assert peer.read(timeout=30) is None
        assert peer.end_reason is not None and peer.end_reason.clean
    _, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert "unclosed stocking" not in err


def test_a_server_aborts_a_connection_its_class_failed_to_make() -> None:
    gc.collect()
    fds = open_fds()
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        with Server(("127.0.0.1", 0), cls=Broken) as server:
            client = socket.create_connection(server.address)
            Broken.made.clear()
            with pytest.raises(RuntimeError, match="subclass"):
                server.accept(timeout=10)
            # Aborted through its channel, not closed under the hub's feet.
            [channel] = Broken.made
            assert channel.ended and channel.end_reason is EndReason.ABORTED
            Broken.made.clear()
            assert peer_sees_the_end(client)
            client.close()
        gc.collect()
    assert unclosed(records) == []
    wait_until(lambda: not library_threads())
    wait_until(lambda: open_fds() <= fds)


def test_stockings_dropped_with_their_waiter_are_finalized() -> None:
    gc.collect()
    wait_until(lambda: not library_threads())
    fds = open_fds()
    peers = []
    with pytest.warns(ResourceWarning, match="unclosed stocking") as records:
        waiter = Waiter()
        for _ in range(5):
            a, b = socket.socketpair()
            waiter.add(Stocking(a))
            peers.append(b)
        del waiter
        gc.collect()
    assert len(unclosed(records.list)) == 5
    for peer in peers:
        assert peer_sees_the_end(peer)
        peer.close()
    wait_until(lambda: not library_threads())
    wait_until(lambda: open_fds() <= fds)
