"""``half_close=True``: a peer's half-close leaves the stocking open for replies."""

from __future__ import annotations

import socket

import pytest

import stockings
from conftest import FLAVOURS, tcp_pair


def _read_all(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


@pytest.mark.timeout(20)
@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.__name__)
@pytest.mark.usefixtures("no_leaks")
def test_a_reply_to_a_message_that_came_with_the_fin_still_goes_out(
    flavour: type[stockings.Stocking],
) -> None:
    client, server_sock = tcp_pair()
    with client:
        # The message and the FIN leave together, before the stocking exists.
        client.sendall(b"\x82hi")
        client.shutdown(socket.SHUT_WR)
        with flavour(server_sock, half_close=True) as stocking:
            assert stocking.read(timeout=10) == "hi"
            assert stocking.read(timeout=10) is None
            assert stocking.peer_closed
            assert not stocking.ended
            assert stockings.wait([stocking], timeout=10) == [stocking]
            stocking.write("hi")
            stocking.write(b"!")
        assert stocking.end_reason is stockings.EndReason.CLOSED
        assert _read_all(client) == b"\x82hi\xc1!"


@pytest.mark.timeout(20)
@pytest.mark.usefixtures("no_leaks")
def test_fileno_turns_readable_at_the_half_close() -> None:
    import select

    client, server_sock = tcp_pair()
    with client, stockings.Stocking(server_sock, half_close=True) as stocking:
        fd = stocking.fileno()
        assert select.select([fd], [], [], 0)[0] == []
        client.shutdown(socket.SHUT_WR)
        assert select.select([fd], [], [], 10)[0] == [fd]
        assert stocking.read() is None
        assert stocking.peer_closed and not stocking.ended


@pytest.mark.timeout(20)
@pytest.mark.usefixtures("no_leaks")
def test_without_half_close_the_fin_ends_the_stocking() -> None:
    client, server_sock = tcp_pair()
    with client:
        client.sendall(b"\x82hi")
        client.shutdown(socket.SHUT_WR)
        with stockings.Stocking(server_sock) as stocking:
            assert stocking.read(timeout=10) == "hi"
            assert stocking.read(timeout=10) is None
            assert stocking.end_reason is stockings.EndReason.PEER_CLOSED
            assert stocking.peer_closed
            with pytest.raises(stockings.ConnectionClosed):
                stocking.write("hi")


@pytest.mark.timeout(20)
@pytest.mark.usefixtures("no_leaks")
def test_a_handshake_cut_by_a_half_close_says_so_at_once() -> None:
    client, server_sock = tcp_pair()
    with client:
        client.shutdown(socket.SHUT_WR)
        with stockings.AuthStocking(
            server_sock, b"k" * 32, server_side=True, half_close=True, handshake_timeout=30
        ) as stocking:
            assert not stocking.wait_handshake(10)
            assert stocking.end_reason is stockings.EndReason.HANDSHAKE_FAILED
            assert "ended (peer closed) while waiting for the peer's hello" in str(
                stocking.end_exception
            )
