"""Our stockings against the real Stockings 1.2.3 from PyPI, both ways, every flavour.

1.2.3 is installed into ``.stockings123/`` (``.ci/run`` does it; the
``stockings123`` fixture does it on first use otherwise) and runs in a
subprocess, ``peer123.py``, because its package name ``Stockings`` is also
the name of our compatibility module.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import FLAVOURS
from peer123 import PEER_ID, scripted_messages
from stockings import EndReason, Stocking

__all__: list[str] = []

ROOT = Path(__file__).resolve().parents[2]
PEER = ROOT / "tests" / "peer123.py"
THEIR_FLAVOURS = ["PollStocking", "SelectStocking"]

Peer = Callable[[str, str, type[Stocking]], tuple[Any, "subprocess.Popen[str]"]]


@pytest.fixture
def peer(stockings123: Path) -> Iterator[Peer]:
    """Start a 1.2.3 endpoint that connects to us; yields a starter function."""
    started: list[tuple[Any, subprocess.Popen[str]]] = []

    def start(
        part: str, their_flavour: str, our_flavour: type[Stocking]
    ) -> tuple[Any, subprocess.Popen[str]]:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.settimeout(30)
            env = {
                **os.environ,
                "PYTHONPATH": str(stockings123),
                "PYTHONDONTWRITEBYTECODE": "1",
                # 1.2.3's SelectStocking sends only when its select() wakes: every 0.5 s by default.
                "STOCKING_SELECT_SEND_INTERVAL": "0.005",
            }
            process = subprocess.Popen(
                [sys.executable, str(PEER), part, their_flavour, str(listener.getsockname()[1])],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                conn, _ = listener.accept()
            except OSError:
                process.kill()
                _, err = process.communicate(timeout=10)
                raise AssertionError(f"the 1.2.3 peer never connected:\n{err}") from None
        stocking = our_flavour(conn)
        started.append((stocking, process))
        return stocking, process

    yield start
    for stocking, process in started:
        stocking.abort()
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def finished_ok(process: subprocess.Popen[str]) -> None:
    """Wait for the peer to exit and check that it says it succeeded."""
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, f"1.2.3 peer failed ({process.returncode}):\n{err}"
    assert out.strip() == "peer123: ok", err


def echo_of(message: str | bytes) -> str | bytes:
    """What the echo peer answers: the message, or a note for an empty one."""
    return message if len(message) else f"EMPTY {type(message).__name__}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("their_flavour", THEIR_FLAVOURS)
@pytest.mark.parametrize("our_flavour", FLAVOURS, ids=[f.__name__ for f in FLAVOURS])
def test_we_write_and_1_2_3_echoes(
    peer: Peer, their_flavour: str, our_flavour: type[Stocking]
) -> None:
    """Our writer -> 1.2.3's reader, and 1.2.3's writer -> our reader."""
    stocking, process = peer("echo", their_flavour, our_flavour)
    # One at a time: 1.2.3 deadlocks on bursts of large messages.
    for message in scripted_messages():
        stocking.write(message)
        reply = stocking.read(timeout=20)
        assert reply == echo_of(message), f"{len(message)}-byte {type(message).__name__}"
        assert type(reply) is type(echo_of(message))
    # Small messages may come in a burst: ours coalesces them, 1.2.3 reads them apart.
    burst = [f"burst {i}" if i % 2 else f"burst {i}".encode() for i in range(300)]
    for message in burst:
        stocking.write(message)
    assert [stocking.read(timeout=20) for _ in burst] == burst
    stocking.close()
    finished_ok(process)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("their_flavour", THEIR_FLAVOURS)
@pytest.mark.parametrize("our_flavour", FLAVOURS, ids=[f.__name__ for f in FLAVOURS])
def test_1_2_3_writes_first_and_we_read(
    peer: Peer, their_flavour: str, our_flavour: type[Stocking]
) -> None:
    stocking, process = peer("script", their_flavour, our_flavour)
    got = []
    while True:
        message = stocking.read(timeout=20)
        assert message is not None, f"nothing more after {len(got)} messages"
        if message == "END":
            break
        got.append(message)
    # 1.2.3's writer drops empty messages: they never reach the wire.
    expected = [m for m in scripted_messages() if len(m)]
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected, strict=True):
        assert type(mine) is type(theirs)
        assert mine == theirs
    stocking.write("DONE")
    finished_ok(process)
    assert list(stocking) == []
    assert stocking.end_reason is EndReason.PEER_CLOSED


@pytest.mark.timeout(60)
@pytest.mark.parametrize("their_flavour", THEIR_FLAVOURS)
def test_empty_messages_reach_1_2_3_and_its_empties_are_never_sent(
    peer: Peer, their_flavour: str
) -> None:
    stocking, process = peer("echo", their_flavour, Stocking)
    sent: list[str | bytes] = ["a", "", b"", "b", "", "c"]
    for message in sent:
        stocking.write(message)
    # 1.2.3 reads each empty message (its reader delivers them) and says so.
    assert [stocking.read(timeout=20) for _ in sent] == [echo_of(m) for m in sent]
    assert stocking.read(timeout=0.2) is None
    stocking.close()
    finished_ok(process)


class HandshakeWithIds(Stocking):
    """Our side of the README's id exchange, written with ``_read(timeout)``."""

    unique_id = "ours-2.0"

    def handshake(self) -> Any:
        self._write(self.unique_id)
        self.remote_id = self._read(timeout=20)
        return self.remote_id is not None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("their_flavour", THEIR_FLAVOURS)
@pytest.mark.parametrize("our_flavour", FLAVOURS, ids=[f.__name__ for f in FLAVOURS])
def test_custom_handshakes_meet(
    peer: Peer, their_flavour: str, our_flavour: type[Stocking]
) -> None:
    """A 1.2.3 client with the README's handshake and an upgraded server with its own."""
    ours = type("Ours", (HandshakeWithIds, our_flavour), {})
    stocking, process = peer("handshake", their_flavour, ours)
    assert stocking.wait_handshake(20)
    assert stocking.remote_id == PEER_ID
    assert stocking.read(timeout=20) == "remote id: " + HandshakeWithIds.unique_id
    stocking.write(b"after both handshakes")
    assert stocking.read(timeout=20) == b"after both handshakes"
    stocking.close()
    finished_ok(process)
