"""AuthStocking: the shared-key handshake, its failures and the attacks it stops."""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
from collections.abc import Callable

import pytest
import trustme

import stockings
from conftest import FLAVOURS, tcp_pair, wait_until
from stockings import AuthStocking, EndReason, HandshakeFailed, NotReady, Stocking

__all__: list[str] = []

pytestmark = pytest.mark.timeout(30)

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
HELLO_PREFIX = b"stockings-auth/1 hello "
PROOF_PREFIX = b"stockings-auth/1 proof "
HELLO_SIZE = len(HELLO_PREFIX) + 1 + 32
PROOF_SIZE = len(PROOF_PREFIX) + hashlib.sha256().digest_size

Pair = Callable[[], "tuple[socket.socket, socket.socket]"]


def auth_class(flavour: type[Stocking]) -> type[AuthStocking]:
    """AuthStocking in the given flavour."""
    if flavour is Stocking:
        return AuthStocking
    return type(f"Auth{flavour.__name__}", (AuthStocking, flavour), {})


def auth_pair(
    flavour: type[Stocking] = Stocking,
    make: Pair = tcp_pair,
    client_key: bytes = KEY,
    server_key: bytes = KEY,
    **kwargs: object,
) -> tuple[AuthStocking, AuthStocking]:
    cls = auth_class(flavour)
    a, b = make()
    client = cls(a, client_key, server_side=False, **kwargs)  # type: ignore[arg-type]
    server = cls(b, server_key, server_side=True, **kwargs)  # type: ignore[arg-type]
    return client, server


def read_raw(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes from a blocking socket."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the peer closed early"
        data += chunk
    return data


def read_message(sock: socket.socket) -> bytes:
    """One bytes message of a handshake (its length is under 8 KiB) from a raw socket."""
    first = read_raw(sock, 1)
    assert first[0] & 0x40, "expected a bytes message"
    if first[0] & 0x80:
        length = first[0] & 0x3F
    else:
        second = read_raw(sock, 1)
        assert second[0] & 0x80
        length = (first[0] & 0x3F) | ((second[0] & 0x7F) << 6)
    return read_raw(sock, length)


def assert_failed(stocking: Stocking, words: str) -> None:
    # The handshake's own verdict is complete once its thread is done.
    assert not stocking.wait_handshake(10)
    wait_until(lambda: stocking.ended)
    assert stocking.end_reason is EndReason.HANDSHAKE_FAILED
    assert isinstance(stocking.end_exception, HandshakeFailed)
    assert words in str(stocking.end_exception)
    assert not stocking.handshake_complete
    with pytest.raises(NotReady):
        stocking.read()
    with pytest.raises(NotReady):
        stocking.write("no")


# ------------------------------------------------------------------- works


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.usefixtures("no_leaks")
def test_right_key_works_both_ways(flavour: type[Stocking], make_pair: Pair) -> None:
    client, server = auth_pair(flavour, make_pair)
    assert client.wait_handshake(10)
    assert server.wait_handshake(10)
    assert isinstance(client, flavour)
    client.write("from the client")
    server.write(b"from the server")
    assert server.read(timeout=10) == "from the client"
    assert client.read(timeout=10) == b"from the server"
    client.close()
    server.close()


@pytest.mark.usefixtures("no_leaks")
def test_messages_written_right_after_the_handshake_are_kept() -> None:
    client, server = auth_pair()
    assert client.wait_handshake(10)
    for i in range(100):
        client.write(f"m{i}")
    assert server.wait_handshake(10)
    assert [server.read(timeout=10) for _ in range(100)] == [f"m{i}" for i in range(100)]
    client.close()
    server.close()


@pytest.mark.usefixtures("no_leaks")
def test_with_the_connect_and_server_helpers() -> None:
    with stockings.Server(
        ("127.0.0.1", 0), cls=AuthStocking, authkey=KEY, server_side=True
    ) as listener:
        client = stockings.connect(
            listener.address, cls=AuthStocking, authkey=KEY, server_side=False, timeout=10
        )
        server = listener.accept(timeout=10)
        assert server is not None
        assert client.wait_handshake(10) and server.wait_handshake(10)
        client.write("hi")
        assert server.read(timeout=10) == "hi"
        client.close()


@pytest.mark.usefixtures("no_leaks")
def test_over_tls_the_role_comes_from_the_tls_socket() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    for server_key, works in ((KEY, True), (OTHER_KEY, False)):
        a, b = tcp_pair()
        client = AuthStocking(
            client_context.wrap_socket(
                a, server_hostname="localhost", do_handshake_on_connect=False
            ),
            KEY,
        )
        server = AuthStocking(
            server_context.wrap_socket(b, server_side=True, do_handshake_on_connect=False),
            server_key,
        )
        if works:
            assert client.wait_handshake(10) and server.wait_handshake(10)
            server.write("secret, twice over")
            assert client.read(timeout=10) == "secret, twice over"
        else:
            assert_failed(client, "different authkeys")
            assert_failed(server, "different authkeys")
        client.close()
        server.close()


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.usefixtures("no_leaks")
def test_wrong_key_ends_both_sides_with_the_reason(
    flavour: type[Stocking], make_pair: Pair
) -> None:
    client, server = auth_pair(flavour, make_pair, server_key=OTHER_KEY)
    assert not client.wait_handshake(10)
    assert not server.wait_handshake(10)
    assert_failed(client, "different authkeys")
    assert_failed(server, "different authkeys")
    client.close()
    server.close()


@pytest.mark.usefixtures("no_leaks")
def test_silent_peer_is_cut_off_at_the_timeout(make_pair: Pair) -> None:
    a, silent = make_pair()
    stocking = AuthStocking(a, KEY, server_side=True, handshake_timeout=0.3)
    with pytest.raises(NotReady):
        stocking.read()
    with pytest.raises(NotReady):
        stocking.write("too early")
    assert not stocking.wait_handshake(10)
    assert_failed(stocking, "no hello within the handshake timeout")
    stocking.close()
    silent.close()


@pytest.mark.usefixtures("no_leaks")
def test_peer_that_stops_after_its_hello_is_cut_off(make_pair: Pair) -> None:
    a, raw = make_pair()
    stocking = AuthStocking(a, KEY, server_side=True, handshake_timeout=0.3)
    read_message(raw)
    raw.sendall(stockings.encode(HELLO_PREFIX + b"C" + bytes(32)))
    assert_failed(stocking, "no proof within the handshake timeout")
    stocking.close()
    raw.close()


@pytest.mark.usefixtures("no_leaks")
def test_peer_closing_during_the_handshake(make_pair: Pair) -> None:
    a, raw = make_pair()
    stocking = AuthStocking(a, KEY, server_side=True)
    read_message(raw)
    raw.close()
    assert_failed(stocking, "while waiting for the peer's hello")
    stocking.close()


@pytest.mark.usefixtures("no_leaks")
def test_a_stocking_that_does_not_speak_the_protocol(make_pair: Pair) -> None:
    a, b = make_pair()
    auth = AuthStocking(a, KEY, server_side=True)
    plain = Stocking(b)
    plain.write("hello, anyone?")
    assert_failed(auth, "does not speak stockings-auth/1")
    wait_until(lambda: plain.ended)
    plain.close()
    auth.close()


@pytest.mark.usefixtures("no_leaks")
def test_both_sides_claiming_the_same_role(make_pair: Pair) -> None:
    a, b = make_pair()
    one = AuthStocking(a, KEY, server_side=True)
    two = AuthStocking(b, KEY, server_side=True)
    assert_failed(one, "both ends act as the server side")
    assert_failed(two, "both ends act as the server side")
    one.close()
    two.close()


def test_arguments_are_checked() -> None:
    a, b = socket.socketpair()
    with a, b:
        with pytest.raises(TypeError):
            AuthStocking(a, "text key", server_side=True)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="empty"):
            AuthStocking(a, b"", server_side=True)
        with pytest.raises(ValueError, match="server_side"):
            AuthStocking(a, KEY)
        with pytest.raises(ValueError, match="handshake_timeout"):
            AuthStocking(a, KEY, server_side=True, handshake_timeout=0)


# ----------------------------------------------------------------- attacks


@pytest.mark.usefixtures("no_leaks")
def test_no_application_message_leaks_before_success(make_pair: Pair) -> None:
    a, raw = make_pair()
    stocking = AuthStocking(a, KEY, server_side=True)
    read_message(raw)
    # A valid hello, then an application message where the proof belongs.
    # One write: the stocking may hang up as soon as it has read the bad proof.
    raw.sendall(
        stockings.encode(HELLO_PREFIX + b"C" + bytes(32))
        + stockings.encode(b"x" * (PROOF_SIZE - 5) + b"evil!")
        + stockings.encode("and then some")
    )
    assert_failed(stocking, "does not speak stockings-auth/1")
    stocking.close()
    raw.close()


@pytest.mark.usefixtures("no_leaks")
def test_reflecting_our_own_messages_back_fails(make_pair: Pair) -> None:
    a, raw = make_pair()
    stocking = AuthStocking(a, KEY, server_side=True)
    hello = read_message(raw)
    # Our own nonce, with the role byte flipped so the role check passes.
    raw.sendall(stockings.encode(HELLO_PREFIX + b"C" + hello[len(HELLO_PREFIX) + 1 :]))
    proof = read_message(raw)
    raw.sendall(stockings.encode(proof))  # our own answer, as the peer's
    assert_failed(stocking, "different authkeys")
    stocking.close()
    raw.close()


@pytest.mark.usefixtures("no_leaks")
def test_relaying_between_two_sessions_fails(make_pair: Pair) -> None:
    # The attacker opens two sessions to the same server, hands each the
    # other's challenge, and relays each one's proof to the other.
    a1, raw1 = make_pair()
    a2, raw2 = make_pair()
    one = AuthStocking(a1, KEY, server_side=True)
    two = AuthStocking(a2, KEY, server_side=True)
    hello1 = read_message(raw1)
    hello2 = read_message(raw2)
    nonce1 = hello1[len(HELLO_PREFIX) + 1 :]
    nonce2 = hello2[len(HELLO_PREFIX) + 1 :]
    raw1.sendall(stockings.encode(HELLO_PREFIX + b"C" + nonce2))
    raw2.sendall(stockings.encode(HELLO_PREFIX + b"C" + nonce1))
    proof1 = read_message(raw1)
    proof2 = read_message(raw2)
    raw1.sendall(stockings.encode(proof2))
    raw2.sendall(stockings.encode(proof1))
    assert_failed(one, "different authkeys")
    assert_failed(two, "different authkeys")
    for stocking in (one, two):
        stocking.close()
    raw1.close()
    raw2.close()


class Recorder:
    """Relays bytes between two sockets, recording what goes from ``left`` to ``right``."""

    def __init__(self, left: socket.socket, right: socket.socket) -> None:
        self.recorded = bytearray()
        self.threads = [
            threading.Thread(target=self._pump, args=(left, right, True)),
            threading.Thread(target=self._pump, args=(right, left, False)),
        ]
        for thread in self.threads:
            thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if record:
                    self.recorded += chunk
                dst.sendall(chunk)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def join(self) -> None:
        for thread in self.threads:
            thread.join(10)


@pytest.mark.usefixtures("no_leaks")
def test_replaying_a_recorded_handshake_fails(make_pair: Pair) -> None:
    client_sock, tap_client = make_pair()
    tap_server, server_sock = make_pair()
    recorder = Recorder(tap_client, tap_server)
    client = AuthStocking(client_sock, KEY, server_side=False)
    server = AuthStocking(server_sock, KEY, server_side=True)
    assert client.wait_handshake(10) and server.wait_handshake(10)
    client.write("transfer all the money")
    assert server.read(timeout=10) == "transfer all the money"
    client.close()
    wait_until(lambda: server.ended)
    server.close()
    recorder.join()
    for sock in (tap_client, tap_server):
        sock.close()
    transcript = bytes(recorder.recorded)
    assert transcript.endswith(stockings.encode("transfer all the money"))

    replayed, attacker = make_pair()
    victim = AuthStocking(replayed, KEY, server_side=True)
    attacker.sendall(transcript)
    assert_failed(victim, "different authkeys")
    victim.close()
    attacker.close()
