"""``stockings cat`` on a terminal: a pseudo-terminal stands in for a person typing."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator

import pytest

from cli_helpers import DEADLINE, server, terminal

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pty and TIOCSCTTY"),
]


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.settimeout(DEADLINE)
        yield sock


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def test_interactive_session_prompt_lines_and_ctrl_d() -> None:
    with server() as (_, address), terminal("cat", "--wait", "0.2", address) as term:
        term.screen.expect(rb"connected to 127\.0\.0\.1:\d+\r\n> ")
        term.type(b"hello\n")
        # The terminal echoes the typed line, then the server's echo is shown;
        # if the next prompt came first, the echo replaces it.
        redrawn = rb"(> \r\x1b\[K)?"
        at = term.screen.expect(rb"> hello\r\n" + redrawn + rb"hello\r\n> ").end()
        term.type(b"second line\n")
        term.screen.expect(rb"second line\r\n" + redrawn + rb"second line\r\n> ", start=at)
        term.type(b"\x04")  # Ctrl-D: end of input
        term.expect_status(0)
    assert b"connection ended: closed (sent 2, received 2)" in term.screen.data


def test_ctrl_c_at_the_prompt_exits_130() -> None:
    with server() as (_, address), terminal("cat", address) as term:
        term.screen.expect(rb"\r\n> ")
        term.type(b"\x03")  # the terminal turns it into SIGINT
        term.expect_status(130)
    assert term.screen.data.endswith(b"^C\r\nstockings cat: interrupted\r\n")


def test_a_message_arriving_at_the_prompt_is_shown_above_a_new_prompt(
    listener: socket.socket,
) -> None:
    with terminal("cat", _address(listener)) as term:
        conn, _ = listener.accept()
        with conn:
            term.screen.expect(rb"\r\n> ")
            conn.sendall(b"\x84news")
            term.screen.expect(rb"> \r\x1b\[Knews\r\n> ")
        term.expect_status(0)
    assert b"connection ended: peer closed" in term.screen.data


def test_control_characters_are_escaped_on_a_terminal(listener: socket.socket) -> None:
    # Issue 14, item 9: a message with ESC [ 3 1 m recoloured the terminal.
    with terminal("cat", "--expect", "2", _address(listener), stdin_tty=False) as term:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"\x8c\x1b[31mred\x07\tok" + b"\xc5\x1b[31m")
            term.expect_status(0)
    screen = term.screen.data
    assert b"\x1b[31m" not in screen
    assert b"\x07" not in screen
    assert b"\\x1b[31mred\\x07\tok\r\n" in screen
    assert b"00000000  1b 5b 33 31 6d" in screen
    assert b"> " not in screen  # stdin is no terminal: no prompt


def test_binary_bytes_are_a_hex_dump_and_printable_bytes_a_literal(
    listener: socket.socket,
) -> None:
    data = bytes(range(20))
    with terminal("cat", "--expect", "2", _address(listener), stdin_tty=False) as term:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(bytes([0xC0 | len(data)]) + data + b"\xc5plain")
            term.expect_status(0)
    lines = term.screen.data.split(b"\r\n")
    assert b"bytes, 20 B:" in lines
    at = lines.index(b"bytes, 20 B:")
    assert lines[at + 1] == (
        b"00000000  00 01 02 03 04 05 06 07  08 09 0a 0b 0c 0d 0e 0f  |................|"
    )
    assert lines[at + 2].startswith(b"00000010  10 11 12 13")
    assert b"b'plain'" in lines


def test_raw_writes_bytes_unchanged_even_to_a_terminal(listener: socket.socket) -> None:
    with terminal("cat", "--raw", "--expect", "1", _address(listener), stdin_tty=False) as term:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"\xc4\x1b[1m")
            term.expect_status(0)
    assert b"\x1b[1m\r\n" in term.screen.data
