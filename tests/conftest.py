"""Shared fixtures: socket pairs of every kind, and leak checks."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import stockings

FLAVOURS: list[type[stockings.Stocking]] = [stockings.Stocking, stockings.SelectStocking]
if hasattr(stockings, "PollStocking"):
    FLAVOURS.insert(1, stockings.PollStocking)


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.005
) -> None:
    """Wait for ``predicate()`` to be true, failing the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        threading.Event().wait(interval)


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair of TCP sockets over loopback."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


def unix_pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair from ``socket.socketpair()``."""
    return socket.socketpair()


TRANSPORTS = {"tcp": tcp_pair, "socketpair": unix_pair}


@pytest.fixture(params=sorted(TRANSPORTS))
def make_pair(request: pytest.FixtureRequest) -> Callable[[], tuple[socket.socket, socket.socket]]:
    """Build connected socket pairs of one transport (parametrised over all)."""
    return TRANSPORTS[request.param]


def open_fds() -> int:
    """How many descriptors this process holds (Linux and macOS)."""
    for path in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(path):
            return len(os.listdir(path))
    pytest.skip("no way to count open descriptors here")
    return 0


def library_threads() -> list[threading.Thread]:
    """The live threads stockings started (all are named ``stockings-...``)."""
    return [t for t in threading.enumerate() if t.name.startswith("stockings-")]


def abort_leftovers() -> int:
    """Abort every stocking still open; return how many there were.

    So that one test leaving stockings open fails that test alone, instead
    of making every later leak check wait out its deadline and fail too.
    """
    from stockings._channel import _live_channels

    left = [channel for channel in list(_live_channels) if not channel.ended]
    for channel in left:
        try:
            channel.close(flush=False, timeout=1.0)
        except Exception:
            pass
    return len(left)


def settled(timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for every stockings thread to end."""
    try:
        wait_until(lambda: not library_threads(), timeout)
    except AssertionError:
        return False
    return True


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fail the test if it leaves stockings threads or descriptors behind."""
    if not settled(10.0):
        # Left by an earlier test that did not check: not this test's fault.
        aborted = abort_leftovers()
        warnings.warn(f"aborted {aborted} stockings an earlier test left open", stacklevel=1)
        settled(5.0)
    before = open_fds()
    yield
    if not settled(10.0):
        threads = [t.name for t in library_threads()]
        aborted = abort_leftovers()
        raise AssertionError(f"the test left {aborted} stockings open; threads: {threads}")
    wait_until(lambda: open_fds() <= before)


class _Collect(logging.Handler):
    """Keeps what the library logs at ERROR: exceptions nobody else saw."""

    def __init__(self, into: list[object]) -> None:
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.exc_info[1] if record.exc_info else record.getMessage())


@contextlib.contextmanager
def logged_errors() -> Iterator[list[object]]:
    """Collect the errors the library logs (logger ``stockings``) meanwhile."""
    caught: list[object] = []
    handler = _Collect(caught)
    logger = logging.getLogger("stockings")
    logger.addHandler(handler)
    try:
        yield caught
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def thread_errors(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Collect exceptions that escape any thread or that the library logs as
    errors; the test fails if there are any."""
    caught: list[object] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: caught.append(args.exc_value))
    monkeypatch.setattr(sys, "excepthook", lambda t, v, tb: caught.append(v))
    with logged_errors() as logged:
        yield caught
    assert caught == []
    assert logged == []


@pytest.fixture
def closing() -> Iterator[list[stockings.Stocking]]:
    """Stockings to abort at the end of a test, whatever happened."""
    made: list[stockings.Stocking] = []
    yield made
    for stocking in made:
        stocking.abort()


#: Where Stockings 1.2.3 is installed for the interop tests (``.ci/run`` does
#: it first; the ``stockings123`` fixture on first use otherwise).
STOCKINGS123_DIR = Path(__file__).resolve().parents[1] / ".stockings123"
_PIP_INSTALL = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]


@pytest.fixture(scope="session")
def stockings123() -> Path:
    """The directory holding Stockings 1.2.3, installed there from PyPI if need be."""
    if not (STOCKINGS123_DIR / "Stockings" / "__init__.py").exists():
        result = subprocess.run(
            [*_PIP_INSTALL, "--target", str(STOCKINGS123_DIR), "stockings==1.2.3"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode:
            pytest.fail(f"could not install Stockings 1.2.3 from PyPI:\n{result.stderr}")
    return STOCKINGS123_DIR
