"""What type checkers accept and refuse: checked by ``mypy --strict``, never run.

``tests/docs/test_typing.py`` runs mypy over this file. ``assert_type`` pins the
types the library promises; each line that must be refused carries a
``# type: ignore[code]``, and ``warn_unused_ignores`` (part of ``--strict``)
turns a line mypy accepts into an error, so a regression fails either way.
"""

from __future__ import annotations

import array
import json
import socket
import sys
from typing import Any

import stockings
from stockings import Server, Stocking

if sys.version_info >= (3, 11):
    from typing import assert_type
else:
    from typing_extensions import assert_type

Message = str | bytes


def plain(sock: socket.socket) -> None:
    conn = Stocking(sock)
    assert_type(conn.read(), str | bytes | None)
    assert_type(conn.read(timeout=5), str | bytes | None)
    assert_type(conn.read_all(), list[str | bytes])
    for message in conn:
        assert_type(message, str | bytes)

    conn.write("text")
    conn.write(b"bytes")
    conn.write(bytearray(b"bytes"))
    conn.write(memoryview(b"bytes"))
    conn.write(array.array("i", [1, 2]))

    conn.write(12345)  # type: ignore[arg-type]
    conn.write()  # type: ignore[call-arg]
    conn.write(data="text")  # type: ignore[call-arg]
    conn.write("text", "more")  # type: ignore[call-arg]
    n: int = conn.read(timeout=5)  # type: ignore[assignment]
    text: str = conn.read()  # type: ignore[assignment]
    print(n, text)


def client() -> None:
    with stockings.connect(("127.0.0.1", 8000), timeout=5) as conn:
        conn.write(12345)  # type: ignore[arg-type]
        assert_type(conn.read(timeout=5), str | bytes | None)
    stockings.connect("127.0.0.1:8000")
    stockings.connect("[::1]:8000")
    stockings.connect("/run/app.sock")
    stockings.connect(8000)  # type: ignore[call-overload]


class JsonStocking(Stocking[Any]):
    """Changes what read returns: says so with the first parameter."""

    def post_read(self, message: Message) -> Any:
        return json.loads(message)


class Tagged(Stocking[tuple[str, str], [str, str]]):
    """Changes both: write takes a tag and a text, read returns the pair."""

    def pre_write(self, tag: str, text: str) -> str:
        return f"{tag}:{text}"

    def post_read(self, message: Message) -> tuple[str, str]:
        tag, _, text = str(message).partition(":")
        return tag, text


class UserStatus(Stocking[tuple[str, ...], ...]):
    """1.2.3's README example, typed: camelCase hooks, any write arguments."""

    def preWrite(self, user: str, status: str = "OK") -> str:
        return f"{user}:{status}"

    def postRead(self, message: Message) -> tuple[str, ...]:
        return tuple(str(message).split(":"))


class SelectJson(stockings.SelectStocking[dict[str, int]]):
    def post_read(self, message: Message) -> dict[str, int]:
        return {"length": len(message)}


def subclasses(sock: socket.socket) -> None:
    assert_type(JsonStocking(sock).read(), Any | None)
    JsonStocking(sock).write(b"{}")
    JsonStocking(sock).write({})  # type: ignore[arg-type]

    tagged = Tagged(sock)
    tagged.write("greeting", "hello")
    tagged.write("greeting")  # type: ignore[call-arg]
    assert_type(tagged.read(timeout=1), tuple[str, str] | None)
    assert_type(tagged.read_all(), list[tuple[str, str]])
    for pair in tagged:
        assert_type(pair, tuple[str, str])

    user = UserStatus(sock)
    user.write("Username", status="ERROR")
    assert_type(user.read(), tuple[str, ...] | None)

    assert_type(SelectJson(sock).read(), dict[str, int] | None)

    def takes_plain(stocking: Stocking) -> None: ...

    def takes_any(stocking: Stocking[Any, ...]) -> None: ...

    takes_plain(Stocking(sock))
    takes_plain(tagged)  # type: ignore[arg-type]
    takes_any(tagged)
    takes_any(user)


def servers() -> None:
    with Server(("127.0.0.1", 0)) as server:
        assert_type(server.address, tuple[str, int] | tuple[str, int, int, int] | str)
        stockings.connect(server.address)
        conn = server.accept(timeout=5)
        assert_type(conn, Stocking | None)
        for accepted in server:
            assert_type(accepted.read(), str | bytes | None)
    with Server("127.0.0.1:0", cls=Tagged) as tagged_server:
        assert_type(tagged_server.accept(), Tagged | None)
    assert_type(stockings.connect(("127.0.0.1", 1), cls=Tagged), Tagged)


def waiting(sock: socket.socket, other: socket.socket) -> None:
    a, b = Stocking(sock), Stocking(other)
    assert_type(stockings.wait([a, b]), list[Stocking])
    assert_type(stockings.wait([a, b], timeout=0), list[Stocking])
    server = Server(("127.0.0.1", 0))
    with stockings.Waiter([server]) as waiter:
        assert_type(waiter.wait(), list[Server[Stocking]])
        waiter.add(a)  # type: ignore[arg-type]
    mixed: stockings.Waiter[Stocking | Server[Stocking]] = stockings.Waiter([server])
    mixed.add(a)
    for ready in mixed.wait(timeout=1):
        if isinstance(ready, Server):
            assert_type(ready.accept(timeout=0), Stocking | None)
        else:
            assert_type(ready.read(), str | bytes | None)
    assert_type(stockings.Waiter().wait(), list[Stocking[Any, ...] | Server[Any]])
    stockings.Waiter([5])  # type: ignore[type-var]
