"""``stockings cat`` end to end: child processes talking to each other over loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_helpers import DEADLINE, Watched, one_line_error, run_cli, sent_late, server, started

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A bare TCP listener standing in for a server that misbehaves."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.settimeout(DEADLINE)
        yield sock


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def test_bytes_sends_binary_data_unchanged() -> None:
    # Issue 14, item 1: bytes that are not UTF-8 ended in a UnicodeEncodeError.
    with server() as (_, address):
        result = run_cli("cat", "--bytes", "--expect", "2", address, stdin=b"ok\n\xff\xfe\x00bin\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"ok\n\xff\xfe\x00bin\n"


def test_text_that_is_not_utf8_is_one_line_pointing_at_bytes() -> None:
    with server() as (_, address):
        result = run_cli("cat", address, stdin=b"ok\n\xff\xfe\n")
    assert result.returncode == 1
    error = one_line_error(result.stderr)
    assert "input record 2 is not valid utf-8 text" in error.lower()
    assert "--bytes" in error


def test_a_message_over_the_limit_is_one_line_naming_the_option() -> None:
    # Issue 14, item 2: a line over the limit gave a MessageTooLarge traceback.
    with server() as (_, address):
        result = run_cli("cat", "--max-message-size", "1K", address, stdin="x" * 2000 + "\n")
    assert result.returncode == 1
    error = one_line_error(result.stderr)
    assert "message 1 is too large" in error
    assert "2000 bytes exceeds the limit of 1024 bytes" in error
    assert "--max-message-size" in error


def test_the_limit_can_be_raised_on_both_ends() -> None:
    line = "y" * 3000
    with server("--max-message-size", "4K") as (_, address):
        result = run_cli("cat", "--max-message-size", "4k", "--expect", "1", address, stdin=line)
    assert result.returncode == 0, result.stderr
    assert result.stdout == line.encode() + b"\n"


def test_a_bad_size_is_a_usage_error() -> None:
    result = run_cli("cat", "--max-message-size", "lots", "127.0.0.1:1")
    assert result.returncode == 2
    assert "64M" in one_line_error(result.stderr)


@pytest.mark.parametrize("address", ["127.0.0.1:99999", "127.0.0.1:65536", "[::1]:-1", "0"])
def test_an_out_of_range_port_is_a_usage_error(address: str) -> None:
    # Issue 14, item 3: 127.0.0.1:99999 silently connected to another port.
    result = run_cli("cat", address)
    assert result.returncode == 2
    assert "out of range" in one_line_error(result.stderr)


def test_the_end_notice_gives_the_reason_and_its_exception(listener: socket.socket) -> None:
    # Issue 14, item 5: against an HTTP server only "protocol error" was said.
    with started("cat", _address(listener)) as cat:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            assert cat.wait() == 1
    err = cat.err.until_closed().decode()
    assert "Traceback" not in err
    assert "connected to 127.0.0.1:" in err
    assert "connection ended: protocol error: message header longer than 10 bytes" in err


def test_ctrl_c_exits_130() -> None:
    # Issue 14, item 6: Ctrl-C exited 0.
    with server() as (_, address), started("cat", address) as cat:
        cat.err.expect(rb"connected to")
        cat.popen.send_signal(signal.SIGINT)
        cat.expect_status(130)
        assert cat.err.until_closed().endswith(b"stockings cat: interrupted\n")


def test_sigterm_exits_143() -> None:
    with server() as (_, address), started("cat", address) as cat:
        cat.err.expect(rb"connected to")
        cat.popen.send_signal(signal.SIGTERM)
        cat.expect_status(143)


def test_a_sigterm_that_lands_as_the_main_thread_goes_to_sleep_still_stops_it() -> None:
    # It interrupts no system call, and nothing else wakes the main thread
    # (stdin stays open and quiet): only a wait that wakes now and then
    # runs the handler. CI once saw cat still running 30 s after SIGTERM.
    late = sent_late(signal.SIGTERM)
    with server() as (_, address), started("cat", address, command=late) as cat:
        cat.err.expect(rb"connected to")
        cat.expect_status(143)
        match = cat.err.expect(rb"late signal: returned ([0-9.]+) s after")
        assert float(match.group(1)) < 3.0


def test_exits_when_the_peer_closes_though_stdin_is_open(listener: socket.socket) -> None:
    # Issue 14, item 7: cat sat on an open stdin after the server had closed.
    with started("cat", _address(listener)) as cat:
        conn, _ = listener.accept()
        cat.err.expect(rb"connected to")
        conn.sendall(b"\x85hello")
        conn.close()
        assert cat.wait() == 0  # stdin (a pipe) is still open
        assert cat.popen.stdin is not None and not cat.popen.stdin.closed
    assert cat.out is not None and cat.out.until_closed() == b"hello\n"
    assert b"connection ended: peer closed (sent 0, received 1)" in cat.err.until_closed()


def test_null_separated_records() -> None:
    with server() as (_, address):
        result = run_cli("cat", "--null", "--expect", "3", address, stdin="a\nb\0c\0\0")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"a\nb\0c\0\0"


def test_json_lines_are_checked_sent_as_text_and_pretty_printed() -> None:
    with server("--print", "--echo") as (serve, address):
        result = run_cli("cat", "--json", "--expect", "2", address, stdin='{"a": [1, 2]}\n\n"x"\n')
        assert result.returncode == 0, result.stderr
        assert json.loads(b'{"a": [1, 2]}') == json.loads(result.stdout.split(b'\n"x"')[0])
        assert result.stdout.startswith(b'{\n  "a": [\n    1,\n    2\n  ]\n}\n')
        assert serve.out is not None
        serve.out.expect(rb'text: \{"a": \[1, 2\]\}')


def test_a_line_that_is_not_json_is_one_line() -> None:
    with server() as (_, address):
        result = run_cli("cat", "--json", address, stdin='{"a": 1}\n{oops\n')
    assert result.returncode == 1
    assert "input line 2 is not JSON" in one_line_error(result.stderr)


@pytest.mark.parametrize("as_bytes", [False, True], ids=["text", "bytes"])
def test_file_is_sent_as_one_message(tmp_path: Path, as_bytes: bool) -> None:
    path = tmp_path / "data"
    content = b"line one\nline two\n"
    path.write_bytes(content)
    extra = ["--bytes"] if as_bytes else []
    with server("--print") as (serve, address):
        result = run_cli("cat", "--file", str(path), *extra, address)
        assert result.returncode == 0, result.stderr
        assert serve.out is not None
        shown = repr(content) if as_bytes else "line one\\x0aline two\\x0a"
        kind = "bytes" if as_bytes else "text"
        serve.out.expect(f"{kind}: {shown}".encode().replace(b"\\", b"\\\\"))


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("cat", "--file", str(tmp_path / "nope"), "127.0.0.1:1")
    assert result.returncode == 2
    assert "cannot read --file" in one_line_error(result.stderr)


def test_in_a_pipe_bytes_and_control_characters_pass_unchanged() -> None:
    payload = b"\x1b[31mred\x07\n"
    with server() as (_, address):
        text = run_cli("cat", "--expect", "1", address, stdin=payload)
        raw = run_cli("cat", "--bytes", "--expect", "1", address, stdin=payload)
    assert text.stdout == raw.stdout == payload


def test_no_prompt_in_a_pipe() -> None:
    with server() as (_, address):
        result = run_cli("cat", "--expect", "1", address, stdin="hi\n")
    assert b">" not in result.stderr
    assert result.stderr.splitlines()[0].startswith(b"stockings cat: connected to 127.0.0.1:")


def test_stdin_left_open_ends_after_a_quiet_wait() -> None:
    with server() as (_, address), started("cat", "--wait", "0.2", address) as cat:
        assert cat.popen.stdin is not None
        cat.popen.stdin.write(b"one\n")
        cat.popen.stdin.flush()
        assert cat.out is not None
        cat.out.expect(rb"one\n")
        cat.popen.stdin.close()
        assert cat.wait() == 0


def test_connect_timeout_must_be_positive() -> None:
    result = run_cli("cat", "--connect-timeout", "0", "127.0.0.1:1")
    assert result.returncode == 2
    assert "must be above 0" in one_line_error(result.stderr)


def test_a_refused_connection_fails_fast_whatever_stdin_holds() -> None:
    with socket.create_server(("127.0.0.1", 0)) as spare:
        port = spare.getsockname()[1]
    result = run_cli("cat", f"127.0.0.1:{port}", stdin=b"x\n" * 10)
    assert result.returncode == 1
    assert f"cannot connect to 127.0.0.1:{port}" in one_line_error(result.stderr)


def test_a_message_over_our_limit_from_the_peer_is_explained(listener: socket.socket) -> None:
    with started("cat", "--max-message-size", "100", _address(listener)) as cat:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"\x24\x82" + b"z" * 164)  # a header announcing 164 bytes of text
            assert cat.wait() == 1
    error = one_line_error(cat.err.until_closed())
    assert "connection ended: message too large: message of 164 bytes exceeds" in error
    assert error.endswith("--max-message-size raises the limit")


def test_a_command_that_does_not_stop_shows_where_its_threads_are() -> None:
    # The diagnosis a hung CLI test prints instead of a bare timeout.
    with server() as (_, address), started("cat", address) as cat:
        cat.err.expect(rb"connected to")
        with pytest.raises(AssertionError) as failure:
            cat.wait(timeout=0.2)
    message = str(failure.value)
    assert "still running after 0.2 s" in message
    assert "Current thread" in message and "in _send_input" in message


def test_a_watched_stream_never_reads_a_descriptor_its_owner_closed_and_reused() -> None:
    # CI once saw `serve` print nothing: the stream watcher of an earlier
    # command, closed under it, read the new command's stderr, which had
    # been given the same descriptor number.
    old_read, old_write = os.pipe()
    watched = Watched(old_read)
    os.close(old_read)
    new_read, new_write = os.pipe()
    try:
        os.write(new_write, b"new")
        os.write(old_write, b"old")
        os.close(old_write)
        assert watched.until_closed() == b"old"
        assert os.read(new_read, 16) == b"new"
    finally:
        os.close(new_read)
        os.close(new_write)
