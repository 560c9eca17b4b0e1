"""Many connections at once: the small version of benchmarks/scale.py.

500 client stockings against a server in the same process: the thread
count stays bounded whatever the number of connections, every echo comes
back, and nothing is left behind after closing.
"""

from __future__ import annotations

import gc
import resource
import socket
import tracemalloc
from collections.abc import Iterator

import pytest

import stockings
from conftest import library_threads, open_fds

COUNT = 500


@pytest.fixture
def enough_fds() -> Iterator[None]:
    """Room for 1,000 sockets even where the soft limit is the usual 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * COUNT
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.fail(f"the hard limit of {hard} open files is too low for this test")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.timeout(60)
def test_500_connections_echo_with_bounded_threads(enough_fds: None, no_leaks: None) -> None:
    fds_before = open_fds()
    with stockings.Server(("127.0.0.1", 0)) as server:
        clients = [stockings.connect(server.address, timeout=10) for _ in range(COUNT)]
        peers: list[stockings.Stocking] = []
        while len(peers) < COUNT:
            peer = server.accept(timeout=10)
            assert peer is not None, f"only {len(peers)} connections were accepted"
            peers.append(peer)
        # One hub thread serves all 1,000 stockings.
        assert len(library_threads()) == 1
        # One descriptor per stocking, none for readiness until fileno() is asked.
        assert open_fds() - fds_before <= 2 * COUNT + 4

        expected = {id(c): f"echo {i}" for i, c in enumerate(clients)}
        for client in clients:
            client.write(expected[id(client)])
        with stockings.Waiter(peers) as incoming:
            answered = 0
            while answered < COUNT:
                ready = incoming.wait(timeout=10)
                assert ready, f"only {answered} messages arrived"
                for peer in ready:
                    while (message := peer.read()) is not None:
                        peer.write(message)
                        answered += 1
        with stockings.Waiter(clients) as outgoing:
            echoed = 0
            while echoed < COUNT:
                ready = outgoing.wait(timeout=10)
                assert ready, f"only {echoed} echoes came back"
                for client in ready:
                    assert client.read() == expected[id(client)]
                    echoed += 1
        assert len(library_threads()) == 1
        for client in clients:
            client.close()
    assert all(peer.ended for peer in peers)
    assert server.clients == []


def test_idle_stockings_are_small(no_leaks: None) -> None:
    # A first pair starts the hub, whose shared buffer is not per stocking.
    warm = [stockings.Stocking(sock) for sock in socket.socketpair()]
    pairs = [socket.socketpair() for _ in range(100)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        made = [stockings.Stocking(sock) for pair in pairs for sock in pair]
        gc.collect()
        per_stocking = (tracemalloc.get_traced_memory()[0] - before) / len(made)
    finally:
        tracemalloc.stop()
    for stocking in made + warm:
        stocking.close()
    # The target: at most 10 KiB of memory per idle stocking.
    assert per_stocking <= 10 * 1024, f"{per_stocking:.0f} bytes per idle stocking"
