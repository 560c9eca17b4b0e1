"""Interpreter exit and server shutdown: nothing holds the exit, nothing is cut silently.

- A custom handshake still running when the main thread finishes is ended
  (``HANDSHAKE_FAILED``, "interpreter shutting down"): the process exits
  at once instead of waiting on a silent peer.
- Messages still queued at exit get the stocking's ``linger`` to flush;
  then the connection is reset. The peer gets every message whole and a
  clean end, or a reset: never a message cut short and a clean end.
- ``Server.close(timeout=...)`` keeps its timeout while a handler runs.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from conftest import wait_until
from stockings import EndReason, IncompleteMessage, Server, Stocking
from stockings._framing import Decoder

#: How long a child may take to start and import stockings on a busy machine.
STARTUP = 30.0


def run_child(source: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(source), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_line(child: subprocess.Popen[str], expected: str) -> float:
    """Read the child's output up to ``expected``; return when it came."""
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    assert line == expected, f"child said {line!r}; stderr: {child.stderr and child.stderr.read()}"
    return time.monotonic()


def finish(child: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        raise AssertionError(f"the child did not exit within {timeout} s; stderr: {err}") from None
    return out, err


# ------------------------------------------------------ handshake at exit

README_HANDSHAKE = """
    import atexit, socket, time
    import stockings

    class MyStocking(stockings.Stocking):
        def handshake(self):
            self._write("my id")
            while self.active:
                read = self._read(timeout=0.5)
                if read is not None:
                    return True
            return False

    a, silent_peer = socket.socketpair()
    stocking = MyStocking(a)
    ready = time.monotonic()
    atexit.register(lambda: print(
        stocking.end_reason.name, stocking.end_exception, time.monotonic() - ready, flush=True
    ))
"""

AUTH_HANDSHAKE = """
    import atexit, socket, time
    import stockings

    a, silent_peer = socket.socketpair()
    stocking = stockings.AuthStocking(
        a, b"k" * 32, server_side=True, handshake_timeout=60.0
    )
    ready = time.monotonic()
    atexit.register(lambda: print(
        stocking.end_reason.name, stocking.end_exception, time.monotonic() - ready, flush=True
    ))
"""


@pytest.mark.parametrize("source", [README_HANDSHAKE, AUTH_HANDSHAKE], ids=["readme", "auth"])
def test_a_running_handshake_does_not_hold_the_exit(source: str) -> None:
    child = run_child(source)
    out, err = finish(child, STARTUP)
    assert child.returncode == 0, err
    *said, took_text = out.split()
    assert " ".join(said) == "HANDSHAKE_FAILED interpreter shutting down", err
    # From the stocking's creation to the end of the non-daemon threads:
    # about 1 s is the promise; the margin is for a loaded machine, far
    # below the 60 s handshake timeout or the forever of the loop.
    assert float(took_text) < 5.0


def test_a_finished_handshake_leaves_exit_alone() -> None:
    source = """
        import socket
        import stockings

        class Hello(stockings.Stocking):
            def handshake(self):
                self._write("hello")
                return self._read(timeout=10) == "hello"

        a, b = socket.socketpair()
        left, right = Hello(a), Hello(b)
        assert left.wait_handshake(10) and right.wait_handshake(10)
        left.write("after")
        assert right.read(timeout=10) == "after"
        print(left.end_reason, flush=True)
    """
    child = run_child(source)
    out, err = finish(child, STARTUP)
    assert child.returncode == 0, err
    assert out.strip() == "None"


# ------------------------------------------------------ queued writes at exit

WRITER = """
    import socket, sys
    import stockings

    sock = socket.socket()
    # Small buffers, so that what the kernel holds cannot hide the test.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
    sock.connect(("127.0.0.1", int(sys.argv[1])))
    stocking = stockings.Stocking(sock, write_high_water=1 << 30)
    if sys.argv[2] != "default":
        stocking.linger = float(sys.argv[2])
    for i in range(64):
        stocking.write(bytes([i]) * (256 * 1024))
    print("queued", flush=True)
"""
COUNT = 64
SIZE = 256 * 1024


def small_listener() -> socket.socket:
    """A loopback listener whose connections get small receive buffers."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    return listener


def read_to_the_end(conn: socket.socket) -> tuple[list[bytes], str]:
    """Read and decode until the stream ends; return the messages and how it ended."""
    decoder = Decoder(None)
    messages: list[bytes] = []
    conn.settimeout(30)
    while True:
        try:
            data = conn.recv(1 << 20)
        except ConnectionResetError:
            return messages, "reset"
        if not data:
            break
        for message in decoder.feed(data):
            assert isinstance(message, bytes)
            messages.append(message)
    try:
        decoder.eof()
    except IncompleteMessage:
        return messages, "torn, then a clean close"
    return messages, "clean"


def check_whole(messages: list[bytes]) -> None:
    for i, message in enumerate(messages):
        assert message == bytes([i]) * SIZE


def test_queued_messages_are_flushed_at_exit() -> None:
    with small_listener() as listener:
        child = run_child(WRITER, str(listener.getsockname()[1]), "default")
        listener.settimeout(STARTUP)
        conn, _ = listener.accept()
    with conn:
        messages, end = read_to_the_end(conn)
    finish(child, STARTUP)
    assert end == "clean"
    assert len(messages) == COUNT
    check_whole(messages)
    assert child.returncode == 0


def test_exit_resets_what_linger_could_not_flush() -> None:
    with small_listener() as listener:
        child = run_child(WRITER, str(listener.getsockname()[1]), "0.5")
        listener.settimeout(STARTUP)
        conn, _ = listener.accept()
    with conn:
        # The peer reads nothing while the child exits: 16 MiB cannot all
        # reach it within the linger.
        queued = wait_for_line(child, "queued")
        finish(child, STARTUP)
        took = time.monotonic() - queued
        messages, end = read_to_the_end(conn)
    assert end == "reset", f"{len(messages)} whole messages, then {end}"
    assert len(messages) < COUNT
    check_whole(messages)
    assert took < 0.5 + 4.0


def test_a_close_that_times_out_resets_rather_than_cut_a_message() -> None:
    with small_listener() as listener:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
        raw.connect(listener.getsockname())
        conn, _ = listener.accept()
    with conn:
        writer = Stocking(raw, write_high_water=1 << 30)
        for i in range(COUNT):
            writer.write(bytes([i]) * SIZE)
        writer.close(timeout=0.2)
        assert writer.end_reason is EndReason.TIMEOUT
        messages, end = read_to_the_end(conn)
    assert end == "reset", f"{len(messages)} whole messages, then {end}"
    check_whole(messages)


# ------------------------------------------------------ Server.close


def close_in_thread(
    server: Server[Stocking], timeout: float
) -> tuple[threading.Thread, list[float]]:
    took: list[float] = []

    def run() -> None:
        started = time.monotonic()
        server.close(timeout=timeout)
        took.append(time.monotonic() - started)

    thread = threading.Thread(target=run, name="test-server-close", daemon=True)
    thread.start()
    return thread, took


def test_server_close_wakes_a_handler_reading_its_client() -> None:
    got: list[object] = []

    def handler(stocking: Stocking) -> None:
        got.append("reading")
        got.append(stocking.read(timeout=None))

    server = Server(("127.0.0.1", 0), handler=handler)
    client = Stocking(socket.create_connection(server.address))
    try:
        wait_until(lambda: got)
        thread, took = close_in_thread(server, 2.0)
        thread.join(5.0)
        assert took and took[0] < 2.0 + 1.0
        assert got == ["reading", None]
        assert client.read(timeout=10) is None and client.ended
    finally:
        client.close()
        thread.join(10)


def test_server_close_keeps_its_timeout_when_a_handler_does_not_return() -> None:
    release = threading.Event()
    entered = threading.Event()

    def handler(stocking: Stocking) -> None:
        entered.set()
        release.wait(30)

    server = Server(("127.0.0.1", 0), handler=handler)
    client = Stocking(socket.create_connection(server.address))
    try:
        assert entered.wait(10)
        thread, took = close_in_thread(server, 0.5)
        thread.join(5.0)
        assert took and took[0] < 0.5 + 1.0
        # The clients were closed all the same.
        assert client.read(timeout=10) is None and client.ended
    finally:
        release.set()
        client.close()
        thread.join(10)


def test_the_shutdown_page_examples_run() -> None:
    page = Path(__file__).parents[2] / "docs" / "topics" / "shutdown.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, str(page), "exec"), {})
