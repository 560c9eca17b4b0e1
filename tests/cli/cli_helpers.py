"""Running the ``stockings`` command as a person would: child processes, pipes, terminals.

Nothing here sleeps to synchronise: a test waits for what a process
prints (``listening on``, ``connected to``) with a deadline.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

# PYTHONFAULTHANDLER: a command that fails to stop in time is sent SIGABRT,
# and the stacks of its threads show where it was stuck.
ENV = {
    **os.environ,
    "PYTHONIOENCODING": "utf-8",
    "PYTHONUNBUFFERED": "1",
    "PYTHONFAULTHANDLER": "1",
}
COMMAND = [sys.executable, "-m", "stockings"]
_LATE_SIGNAL = str(Path(__file__).resolve().parents[1] / "late_signal.py")


def sent_late(signum: signal.Signals) -> list[str]:
    """The command that runs ``stockings`` and sends it ``signum`` as its main thread sleeps.

    See ``tests/late_signal.py``: the handler is owed while the main thread
    sleeps, interrupting no system call.
    """
    return [sys.executable, _LATE_SIGNAL, signum.name, "--"]


DEADLINE = 30.0

# Makes the terminal on fd 0 (or 1) the controlling terminal of the new
# session, so that Ctrl-C typed on it sends SIGINT, then runs the command.
_WITH_TERMINAL = """\
import fcntl, os, sys, termios
for fd in (0, 1, 2):
    if os.isatty(fd):
        fcntl.ioctl(fd, termios.TIOCSCTTY, 0)
        break
os.execv(sys.executable, [sys.executable, "-m", "stockings", *sys.argv[1:]])
"""


def run_cli(
    *args: str, stdin: bytes | str = b"", timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m stockings ARGS`` to the end, with pipes for stdin, stdout, stderr."""
    data = stdin.encode() if isinstance(stdin, str) else stdin
    return subprocess.run(
        [*COMMAND, *args],
        input=data,
        capture_output=True,
        env=ENV,
        timeout=timeout,
        check=False,
    )


def one_line_error(stderr: bytes | str) -> str:
    """The single line a failed command printed; fails if there is a traceback or more."""
    text = stderr.decode() if isinstance(stderr, bytes) else stderr
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) >= 1, text
    return lines[-1]


class Watched:
    """Collects what a stream gives, on a thread, so a test can wait for a pattern."""

    def __init__(self, fd: int) -> None:
        # A descriptor of its own, which only this thread closes, at the end
        # of the stream: were it to read the caller's after the caller closed
        # it, it could read the pipe of the next command to get that number.
        self.fd = os.dup(fd)
        self.data = b""
        self.closed = False
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._pump, name="test-cli-watch", daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # EIO: the terminal's other side closed
                chunk = b""
            with self.changed:
                if not chunk:
                    os.close(self.fd)
                    self.closed = True
                    self.changed.notify_all()
                    return
                self.data += chunk
                self.changed.notify_all()

    def expect(
        self, pattern: bytes | str, timeout: float = DEADLINE, start: int = 0
    ) -> re.Match[bytes]:
        """Wait for ``pattern`` (a regex) to appear after offset ``start``; return the match."""
        regex = re.compile(pattern.encode() if isinstance(pattern, str) else pattern, re.S)
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                match = regex.search(self.data, start)
                if match:
                    return match
                remaining = deadline - time.monotonic()
                if self.closed or remaining <= 0:
                    raise AssertionError(f"{regex.pattern!r} not seen in {self.data!r}")
                self.changed.wait(remaining)

    def until_closed(self, timeout: float = DEADLINE) -> bytes:
        """Everything the stream gave, once it is closed."""
        with self.changed:
            if not self.changed.wait_for(lambda: self.closed, timeout):
                raise AssertionError(f"the stream stayed open; so far: {self.data!r}")
            return self.data


def _abort_for_stacks(popen: subprocess.Popen[bytes], output: Watched) -> str:
    """Abort a command that is stuck; return what it printed, its threads' stacks last."""
    popen.send_signal(signal.SIGABRT)
    try:
        popen.wait(DEADLINE)
    except subprocess.TimeoutExpired:
        return "(no stacks: it did not abort)"
    try:
        return output.until_closed().decode(errors="replace")
    except AssertionError as exc:
        return str(exc)


class Process:
    """A running ``stockings`` command whose stderr (and maybe stdout) is watched."""

    def __init__(self, popen: subprocess.Popen[bytes], err: Watched, out: Watched | None) -> None:
        self.popen = popen
        self.err = err
        self.out = out

    def wait(self, timeout: float = DEADLINE) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            stacks = _abort_for_stacks(self.popen, self.err)
            raise AssertionError(
                f"still running after {timeout} s; its threads:\n{stacks}"
            ) from None

    def expect_status(self, status: int) -> None:
        """Wait for the end; if its status is not ``status``, fail with what it printed."""
        ended = self.wait()
        if ended != status:
            raise AssertionError(
                f"exit status {ended}, not {status}; stderr:\n"
                + self.err.until_closed().decode(errors="replace")
            )

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def started(
    *args: str, stdin: int | IO[bytes] | None = subprocess.PIPE, command: Sequence[str] = COMMAND
) -> Iterator[Process]:
    """Start ``python -m stockings ARGS`` with stdout and stderr watched; kill it at the end.

    ``command`` replaces ``python -m stockings`` (:func:`sent_late`).
    """
    popen = subprocess.Popen(
        [*command, *args], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV
    )
    assert popen.stdout is not None and popen.stderr is not None
    process = Process(popen, Watched(popen.stderr.fileno()), Watched(popen.stdout.fileno()))
    try:
        yield process
    finally:
        process.kill()


@contextmanager
def server(*args: str) -> Iterator[tuple[Process, str]]:
    """``stockings serve --port 0 ARGS``, once it listens; yields it and ``HOST:PORT``."""
    with started("serve", "--port", "0", *args, stdin=subprocess.DEVNULL) as process:
        match = process.err.expect(rb"listening on (\S+:\d+)")
        yield process, match.group(1).decode()


class Terminal:
    """A command run on a pseudo-terminal, as if typed at a shell prompt."""

    def __init__(self, args: Sequence[str], stdin_tty: bool = True) -> None:
        self.master, slave = os.openpty()
        self.popen = subprocess.Popen(
            [sys.executable, "-c", _WITH_TERMINAL, *args],
            stdin=slave if stdin_tty else subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
            env=ENV,
            start_new_session=True,
        )
        os.close(slave)
        self.screen = Watched(self.master)

    def type(self, text: bytes) -> None:
        os.write(self.master, text)

    def wait(self, timeout: float = DEADLINE) -> int:
        try:
            status = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            screen = _abort_for_stacks(self.popen, self.screen)
            raise AssertionError(
                f"still running after {timeout} s; its screen and threads:\n{screen}"
            ) from None
        self.screen.until_closed()
        return status

    def expect_status(self, status: int) -> None:
        """Wait for the end; if its status is not ``status``, fail with the screen."""
        ended = self.wait()
        if ended != status:
            raise AssertionError(
                f"exit status {ended}, not {status}; the screen:\n"
                + self.screen.data.decode(errors="replace")
            )

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        os.close(self.master)


@contextmanager
def terminal(*args: str, stdin_tty: bool = True) -> Iterator[Terminal]:
    """Run ``stockings ARGS`` on a pseudo-terminal; kill it at the end."""
    term = Terminal(args, stdin_tty)
    try:
        yield term
    finally:
        term.close()
