"""The epoll selector of the default flavour: the selectors API, plus ``watch``."""

from __future__ import annotations

import selectors
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from stockings._epoll import EpollSelector, epoll_available

pytestmark = [
    pytest.mark.skipif(not epoll_available, reason="epoll is Linux's"),
    pytest.mark.timeout(20),
]

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


@pytest.fixture
def selector() -> Iterator[EpollSelector]:
    made = EpollSelector()
    yield made
    made.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    with a, b:
        yield a, b


def test_it_reports_what_it_watches(
    selector: EpollSelector, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    key = selector.register(a, READ, "data")
    assert (key.fileobj, key.fd, key.events, key.data) == (a, a.fileno(), READ, "data")
    assert selector.select(0) == []
    b.send(b"x")
    assert selector.select(1) == [(key, READ)]
    key = selector.modify(a, READ | WRITE, "other")
    assert key.data == "other"
    assert selector.select(1) == [(key, READ | WRITE)]
    assert selector.get_key(a) is key
    assert dict(selector.get_map()) == {a.fileno(): key}
    assert selector.unregister(a) is key
    assert selector.select(0) == []
    with pytest.raises(KeyError):
        selector.get_key(a)


def test_it_refuses_what_selectors_refuses(
    selector: EpollSelector, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    with pytest.raises(ValueError):
        selector.register(a, 0)
    with pytest.raises(ValueError):
        selector.register(a, 4)
    selector.register(a, READ)
    with pytest.raises(KeyError):
        selector.register(a, WRITE)
    with pytest.raises(ValueError):
        selector.modify(a, 0)
    with pytest.raises(KeyError):
        selector.unregister(b)
    with pytest.raises(KeyError):
        selector.modify(b, READ)


def test_watching_for_nothing_silences_even_a_hang_up(
    selector: EpollSelector, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    key = selector.register(a, READ)
    b.send(b"x")
    selector.watch(a.fileno(), 0)
    b.close()  # readable and hung up: still nothing to report
    assert selector.select(0) == []
    selector.watch(a.fileno(), WRITE)
    # A hang-up shows as both events, but only the watched one is reported.
    assert selector.select(1) == [(key, WRITE)]
    selector.watch(a.fileno(), READ)
    assert selector.select(1) == [(key, READ)]
    # Watching for nothing keeps the key: unregistering still works.
    selector.watch(a.fileno(), 0)
    assert selector.unregister(a) is key


def test_a_closed_socket_can_be_unregistered(selector: EpollSelector) -> None:
    a, b = socket.socketpair()
    key = selector.register(a, READ)
    a.close()
    assert selector.unregister(a) is key
    b.close()
    assert selector.get_map() == {}


def test_a_change_reaches_a_select_already_waiting(
    selector: EpollSelector, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    key = selector.register(a, WRITE)
    selector.watch(a.fileno(), 0)
    b.send(b"waiting")
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(selector.select(10)), daemon=True)
    waiter.start()
    # Whether the waiter is inside epoll_wait yet or not, the change reaches it.
    selector.watch(a.fileno(), READ)
    waiter.join(10)
    assert got == [[(key, READ)]]


def test_a_reset_peer_is_reported_to_a_watched_socket(selector: EpollSelector) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    with client, server:
        key = selector.register(server, READ)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        assert selector.select(5) == [(key, READ)]
