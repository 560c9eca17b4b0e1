"""Misuse is refused at once, with an error that names the problem."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

import stockings
from conftest import FLAVOURS, tcp_pair
from stockings._client import resolve_address

ALL_KINDS: list[type[stockings.Stocking[Any, ...]]] = [*FLAVOURS, stockings.AuthStocking]


def make(cls: type[stockings.Stocking[Any, ...]], sock: object) -> stockings.Stocking[Any, ...]:
    if issubclass(cls, stockings.AuthStocking):
        return cls(sock, b"k" * 32, server_side=True)  # type: ignore[arg-type]
    return cls(sock)  # type: ignore[arg-type]


def has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False


# ------------------------------------------------------------------ sockets


@pytest.mark.parametrize("cls", ALL_KINDS, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("sock", [5, None, "127.0.0.1:80", ("127.0.0.1", 80)])
def test_not_a_socket_is_a_type_error_naming_the_socket_expected(
    cls: type[stockings.Stocking[Any, ...]], sock: object
) -> None:
    with pytest.raises(TypeError, match=r"connected socket\.socket of type SOCK_STREAM"):
        make(cls, sock)


@pytest.mark.parametrize("cls", ALL_KINDS, ids=lambda cls: cls.__name__)
def test_a_listening_socket_says_to_accept_first_or_use_server(
    cls: type[stockings.Stocking[Any, ...]],
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with pytest.raises(ValueError, match=r"listening: accept\(\) a connection.*Server"):
            make(cls, listener)
        assert listener.fileno() >= 0  # still the caller's, untouched


@pytest.mark.parametrize("cls", ALL_KINDS, ids=lambda cls: cls.__name__)
def test_a_connected_udp_socket_is_refused_at_construction(
    cls: type[stockings.Stocking[Any, ...]],
) -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
    ):
        receiver.bind(("127.0.0.1", 0))
        sender.connect(receiver.getsockname())
        with pytest.raises(ValueError, match=r"stream socket \(SOCK_STREAM\), not a SOCK_DGRAM"):
            make(cls, sender)


def test_a_datagram_socketpair_is_refused() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b, pytest.raises(ValueError, match="SOCK_STREAM"):
        stockings.Stocking(a)


def test_an_unconnected_socket_still_says_not_connected() -> None:
    with socket.socket() as sock, pytest.raises(OSError) as info:
        stockings.Stocking(sock)
    assert not isinstance(info.value, ValueError)
    assert info.value.errno is not None


# -------------------------------------------------------------------- write


@pytest.mark.parametrize("cls", FLAVOURS, ids=lambda cls: cls.__name__)
def test_write_without_a_message_is_a_clear_type_error(
    cls: type[stockings.Stocking[Any, ...]],
) -> None:
    a, b = socket.socketpair()
    with cls(a) as left, cls(b) as right:
        with pytest.raises(TypeError, match=r"write\(\) needs the message to send"):
            left.write()  # type: ignore[call-arg]
        with pytest.raises(TypeError, match=r"one positional argument, not by keyword \(data\)"):
            left.write(data="x")  # type: ignore[call-arg]
        with pytest.raises(TypeError, match=r"write\(\) needs the message"):
            left.pre_write()  # type: ignore[call-arg]
        left.write("still fine")
        assert right.read(timeout=10) == "still fine"


def test_a_pre_write_override_still_takes_any_arguments() -> None:
    class Keyword(stockings.Stocking[Any, ...]):
        def pre_write(self, *, user: str = "nobody", status: str = "OK") -> str:
            return f"{user}:{status}"

    class Calls123Base(stockings.Stocking[Any, ...]):
        def preWrite(self, *args: Any, **kwargs: Any) -> Any:
            return super().preWrite(*args, **kwargs)

    a, b = socket.socketpair()
    with Keyword(a) as left, stockings.Stocking(b) as right:
        left.write()
        left.write(user="u", status="ERROR")
        assert right.read(timeout=10) == "nobody:OK"
        assert right.read(timeout=10) == "u:ERROR"
    a, b = socket.socketpair()
    with Calls123Base(a) as left, stockings.Stocking(b) as right:
        left.write("first", "ignored, as in 1.2.3")
        assert right.read(timeout=10) == "first"
        with pytest.raises(TypeError, match=r"write\(\) needs the message"):
            left.write()


# -------------------------------------------------------------------- ports


@pytest.mark.parametrize("port", [99999, 65536, -1, 0])
def test_connect_checks_the_port_range(port: int) -> None:
    with pytest.raises(ValueError, match=r"port must be 1-65535 to connect to"):
        stockings.connect(("127.0.0.1", port), timeout=5)
    if port >= 0:
        with pytest.raises(ValueError, match=r"port must be 1-65535"):
            stockings.connect(f"127.0.0.1:{port}", timeout=5)


@pytest.mark.parametrize("port", [99999, 65536, -1])
def test_server_checks_the_port_range(port: int) -> None:
    with pytest.raises(ValueError, match=r"port must be 0-65535 \(0 picks a free one\)"):
        stockings.Server(("127.0.0.1", port))


@pytest.mark.parametrize("port", [1.5, b"80", "http", True])
def test_a_port_that_is_no_number_is_a_type_error(port: object) -> None:
    with pytest.raises(TypeError, match="a port is an int"):
        stockings.connect(("127.0.0.1", port), timeout=5)  # type: ignore[arg-type]


def test_port_zero_still_picks_a_free_port_for_a_server() -> None:
    with stockings.Server(("127.0.0.1", 0)) as server:
        assert isinstance(server.address, tuple)
        assert 0 < server.address[1] <= 65535


# ---------------------------------------------------------------- addresses


def test_connect_takes_a_host_port_string(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with stockings.Server("127.0.0.1:0") as server:
        assert isinstance(server.address, tuple)
        assert server.address[0] == "127.0.0.1"
        with stockings.connect(f"127.0.0.1:{server.address[1]}", timeout=5) as client:
            conn = server.accept(timeout=10)
            assert conn is not None
            client.write("over TCP")
            assert conn.read(timeout=10) == "over TCP"
            assert conn.sock.family == socket.AF_INET
            conn.close()
    assert os.listdir(tmp_path) == []  # no socket file named "127.0.0.1:0"


@pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback")
def test_an_ipv6_host_port_string_and_the_server_address_as_it_is() -> None:
    with stockings.Server("[::1]:0") as server:
        assert isinstance(server.address, tuple)
        assert server.address[0] == "::1"
        # The four-tuple getsockname() gives for IPv6 connects as it is.
        with stockings.connect(server.address, timeout=5) as client:
            conn = server.accept(timeout=10)
            assert conn is not None
            client.write("v6")
            assert conn.read(timeout=10) == "v6"
            conn.close()
        with stockings.connect(f"[::1]:{server.address[1]}", timeout=5) as client:
            assert client.sock.family == socket.AF_INET6


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("/tmp/x.sock", "/tmp/x.sock"),
        ("./a:1", "./a:1"),
        ("relative.sock", "relative.sock"),
        ("\0abstract:1", "\0abstract:1"),
        (Path("/tmp/a:1"), "/tmp/a:1"),
        (b"/tmp/b.sock", "/tmp/b.sock"),
        ("localhost:8000", ("localhost", 8000)),
        (":8000", ("", 8000)),
        ("[::1]:8000", ("::1", 8000)),
        (("::1", 8000, 0, 0), ("::1", 8000)),
        (("127.0.0.1", "8000"), ("127.0.0.1", 8000)),
        ((None, 8000), ("", 8000)),
    ],
)
def test_the_address_rule(address: object, expected: object) -> None:
    assert resolve_address(address, listen=False) == expected


@pytest.mark.parametrize("address", ["::1:8000", "host:", "host:http", "[::1]8000", "a:b:c"])
def test_a_malformed_host_port_string_is_refused_with_a_hint(address: str) -> None:
    with pytest.raises(ValueError, match=r"neither 'host:port' nor a Unix socket path.*'\./"):
        stockings.connect(address, timeout=5)
    with pytest.raises(ValueError, match=r"\[::1\]:8000"):
        stockings.Server(address)


@pytest.mark.parametrize("address", [8000, ("127.0.0.1",), ["127.0.0.1", 8000], None])
def test_no_address_at_all_is_a_type_error(address: object) -> None:
    with pytest.raises(TypeError):
        stockings.connect(address, timeout=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        stockings.Server(address)  # type: ignore[arg-type]


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
def test_unix_paths_keep_working(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for given, connect_to in [
        (str(tmp_path / "abs.sock"), str(tmp_path / "abs.sock")),
        ("relative.sock", "relative.sock"),
        ("./with:colon", tmp_path / "with:colon"),
    ]:
        with stockings.Server(given) as server:
            assert server.address == given
            with stockings.connect(connect_to, timeout=5) as client:
                conn = server.accept(timeout=10)
                assert conn is not None
                client.write("over Unix")
                assert conn.read(timeout=10) == "over Unix"
                assert conn.sock.family == socket.AF_UNIX
                conn.close()


# ------------------------------------------------------------------ options


def test_a_misspelt_server_option_is_refused_when_the_server_is_made() -> None:
    with pytest.raises(
        TypeError,
        match=r"Server\(\): Stocking\(\) got an unexpected keyword argument 'max_mesage_size' "
        r"\(did you mean 'max_message_size'\?\)",
    ):
        stockings.Server(("127.0.0.1", 0), max_mesage_size=10)


@pytest.mark.parametrize("cls", ALL_KINDS, ids=lambda cls: cls.__name__)
def test_a_misspelt_option_is_refused_for_every_kind(
    cls: type[stockings.Stocking[Any, ...]],
) -> None:
    extra: dict[str, Any] = {}
    if cls is stockings.AuthStocking:
        extra = {"authkey": b"k" * 32, "server_side": True}
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'nodelya'"):
        stockings.Server(("127.0.0.1", 0), cls=cls, nodelya=False, **extra)


def test_a_missing_required_option_is_refused_when_the_server_is_made() -> None:
    with pytest.raises(TypeError, match=r"AuthStocking\(\) missing a required argument: 'authkey'"):
        stockings.Server(("127.0.0.1", 0), cls=stockings.AuthStocking, server_side=True)


def test_connect_refuses_a_misspelt_option_before_connecting() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        with pytest.raises(TypeError, match=r"connect\(\): .*'bad'"):
            stockings.connect(listener.getsockname(), timeout=5, bad=1)
        with pytest.raises(TypeError, match=r"did you mean 'write_timeout'"):
            stockings.connect(listener.getsockname(), timeout=5, write_timout=1)
        # A connection made would wait in the accept queue by now.
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_subclass_options_are_known_and_a_users_kwargs_are_left_to_it() -> None:
    class Named(stockings.Stocking):
        def __init__(self, sock: socket.socket, *, colour: str = "red", **kwargs: Any) -> None:
            self.colour = colour
            super().__init__(sock, **kwargs)

    class NoKwargs(stockings.Stocking):
        def __init__(self, sock: socket.socket, *, size: int = 1) -> None:
            super().__init__(sock, max_message_size=size)

    class Pops(stockings.Stocking):
        def __init__(self, sock: socket.socket, **kwargs: Any) -> None:
            self.colour = kwargs.pop("colour", "red")
            super().__init__(sock, **kwargs)

    with stockings.Server(("127.0.0.1", 0), cls=Named, colour="blue", private=True) as server:
        with stockings.connect(server.address, timeout=5, cls=Named, colour="green") as client:
            conn = server.accept(timeout=10)
            assert conn is not None and conn.colour == "blue" and client.colour == "green"
            conn.close()
        # Named takes **kwargs: a name it does not know may be one it uses
        # itself (as Pops does), so only making the stocking can tell.
        with pytest.raises(TypeError, match=r"unexpected keyword argument 'color'"):
            stockings.connect(server.address, timeout=5, cls=Named, color="green")
    with pytest.raises(
        TypeError, match=r"NoKwargs\(\) got an unexpected keyword argument 'colour'"
    ):
        stockings.Server(("127.0.0.1", 0), cls=NoKwargs, colour="blue")
    with (
        stockings.Server(("127.0.0.1", 0), cls=Pops, colour="blue") as server,
        stockings.connect(server.address, timeout=5, cls=Pops, colour="green") as client,
    ):
        conn = server.accept(timeout=10)
        assert conn is not None and conn.colour == "blue" and client.colour == "green"
        conn.close()


# -------------------------------------------------------------- nodelay


def nodelay_of(stocking: stockings.Stocking[Any, ...]) -> bool:
    return bool(stocking.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_connect_nodelay_false_leaves_nagle_on() -> None:
    with stockings.Server(("127.0.0.1", 0), nodelay=False) as server:
        with stockings.connect(server.address, timeout=5, nodelay=False) as client:
            assert not nodelay_of(client)
            conn = server.accept(timeout=10)
            assert conn is not None
            assert not nodelay_of(conn)
            conn.close()
        with stockings.connect(server.address, timeout=5) as client:
            assert nodelay_of(client)
            conn = server.accept(timeout=10)
            assert conn is not None
            conn.close()


@pytest.mark.parametrize("nodelay", [True, False])
def test_the_stocking_sets_nodelay_as_its_option_says(nodelay: bool) -> None:
    client, server = tcp_pair()
    with stockings.Stocking(client, nodelay=nodelay) as stocking:
        assert nodelay_of(stocking) is nodelay
    server.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_message_size": -1}, "max_message_size cannot be negative"),
        ({"read_high_water": 10, "read_low_water": 20}, "a low-water mark cannot exceed"),
        ({"write_high_water": -5}, "high-water marks cannot be negative"),
        ({"idle_timeout": 0}, "idle_timeout must be a positive number"),
        ({"read_spin": -1}, "read_spin must be a number of seconds"),
        ({"keepalive": -3}, "keepalive must be True, None or a positive number"),
    ],
)
def test_out_of_range_limits_are_refused_when_the_server_is_made(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=rf"^Server\(\): {message}"):
        stockings.Server(("127.0.0.1", 0), **options)
    with pytest.raises(ValueError, match=rf"^Server\(\): {message}"):
        stockings.Server(("127.0.0.1", 0), cls=stockings.AuthStocking, authkey=b"k" * 32, **options)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        with pytest.raises(ValueError, match=rf"^connect\(\): {message}"):
            stockings.connect(listener.getsockname(), timeout=5, **options)
        with pytest.raises(BlockingIOError):
            listener.accept()  # refused before connecting


@pytest.mark.parametrize(
    "options",
    [
        {"max_message_size": -1},
        {"read_high_water": 10, "read_low_water": 20},
        {"idle_timeout": 0},
        {"read_spin": -1},
        {"linger": -1},
        {"keepalive": -3},
    ],
)
def test_a_refused_limit_leaves_the_socket_as_it_was(options: dict[str, Any]) -> None:
    """Judged before the socket is touched: it stays the caller's, blocking and with Nagle on."""
    client, server = tcp_pair()
    with client, server:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        with pytest.raises(ValueError):
            stockings.Stocking(client, private=True, **options)
        assert client.fileno() >= 0
        assert client.getblocking()
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        client.sendall(b"still usable")
        assert server.recv(64) == b"still usable"


def test_a_limit_a_subclass_names_is_its_own_to_judge() -> None:
    class Doubles(stockings.Stocking):
        def __init__(self, sock: socket.socket, *, max_message_size: int = 1) -> None:
            super().__init__(sock, max_message_size=abs(max_message_size) * 2)

    with (
        stockings.Server(("127.0.0.1", 0), cls=Doubles, max_message_size=-8) as server,
        stockings.connect(server.address, timeout=5) as client,
    ):
        conn = server.accept(timeout=10)
        assert conn is not None
        client.write(b"x" * 16)
        assert conn.read(timeout=10) == b"x" * 16
        conn.close()


def test_tcp_address_follows_the_same_rule() -> None:
    from stockings._client import tcp_address

    assert tcp_address("localhost:8000") == ("localhost", 8000)
    assert tcp_address(("::1", 8000, 0, 0)) == ("::1", 8000)
    with pytest.raises(TypeError, match="not the path"):
        tcp_address("/run/app.sock")
    with pytest.raises(ValueError, match="port must be 0-65535"):
        tcp_address(("127.0.0.1", 99999))


def test_each_call_is_judged_on_its_own_options() -> None:
    address = ("127.0.0.1", 0)
    for _ in range(2):  # the second time from what the first one learnt
        with pytest.raises(TypeError, match="'max_mesage_size'"):
            stockings.Server(address, max_mesage_size=10)
        with pytest.raises(TypeError, match="'read_hi_water'"):
            stockings.Server(address, read_hi_water=10)
        with pytest.raises(ValueError, match="max_message_size cannot be negative"):
            stockings.Server(address, max_message_size=-1)
        with stockings.Server(address, max_message_size=10) as server:
            assert server.address


@pytest.mark.parametrize("cls", ALL_KINDS, ids=lambda cls: cls.__name__)
def test_a_second_stocking_on_a_socket_is_refused_and_the_first_carries_on(
    cls: type[stockings.Stocking[Any, ...]],
) -> None:
    a, b = socket.socketpair()
    first, peer = stockings.Stocking(a), stockings.Stocking(b)
    # The same descriptor under another socket object is the same socket.
    alias = socket.socket(fileno=a.fileno())
    try:
        for sock in (a, alias):
            with pytest.raises(ValueError, match=r"already belongs to a stocking \(fd\d+\)"):
                make(cls, sock)
        peer.write(b"still mine")
        assert first.read(10) == b"still mine"
        first.write(b"and back")
        assert peer.read(10) == b"and back"
        assert first.end_reason is None and peer.end_reason is None
    finally:
        alias.detach()
        first.close()
        peer.close()


def test_a_descriptor_number_is_free_again_once_its_stocking_has_ended() -> None:
    a, b = socket.socketpair()
    fd = a.fileno()
    first, peer = stockings.Stocking(a), stockings.Stocking(b)
    first.close()
    peer.close()
    c, d = socket.socketpair()
    try:
        if c.fileno() != fd:
            # The number went to d, or elsewhere: either is free all the same.
            c, d = d, c
        again, other = stockings.Stocking(c), stockings.Stocking(d)
        other.write(b"new owner")
        assert again.read(10) == b"new owner"
        again.close()
        other.close()
    finally:
        c.close()
        d.close()


@pytest.mark.parametrize("cls", [int, "Stocking", stockings.Waiter])
def test_a_cls_that_is_no_stocking_class_is_named_before_anything_is_made(cls: object) -> None:
    before = open_fds_now()
    with pytest.raises(
        TypeError, match=r"^Server\(\): cls must be stockings\.Stocking or a subclass"
    ):
        stockings.Server(("127.0.0.1", 0), cls=cls)  # type: ignore[arg-type]
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        with pytest.raises(TypeError, match=r"^connect\(\): cls must be stockings\.Stocking"):
            stockings.connect(listener.getsockname(), cls=cls)  # type: ignore[arg-type]
        with pytest.raises(BlockingIOError):
            listener.accept()  # refused before connecting
    # At most as many: a hub an earlier test left may still be closing its own.
    assert open_fds_now() <= before  # no listening socket left behind


def test_a_handler_that_cannot_be_called_is_refused() -> None:
    with pytest.raises(TypeError, match=r"^Server\(\): handler must be callable, not int$"):
        stockings.Server(("127.0.0.1", 0), handler=5)  # type: ignore[arg-type]


def open_fds_now() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
