"""A network partition and a restarted host, over a real link between two network namespaces.

The link is cut at the far end (see ``NetnsHost.partition``): packets
vanish, no FIN and no RST arrive, as when the peer host loses power or a
cable is pulled. TCP alone cannot tell that from a quiet peer; ``keepalive``
and ``idle_timeout`` can, within the bounds docs/topics/networks.md gives.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import stockings
from conftest import wait_until
from netns_support import PEER_PORT, NetnsHost, netns_host
from stockings import ConnectionClosed, EndReason, Stocking

__all__: list[str] = []

pytestmark = pytest.mark.timeout(60)

#: keepalive=2: 2 s of silence, then 3 probes 1 s apart (see Stocking's docstring).
KEEPALIVE = 2
KEEPALIVE_BOUND = 2 + 3 * 1
IDLE_TIMEOUT = 2
#: Scheduling slack on a loaded machine, and one retransmission timer's granularity.
SLACK = 1.5


@pytest.fixture
def host(tmp_path: Path) -> Iterator[NetnsHost]:
    with netns_host(tmp_path) as made:
        yield made


class Echo:
    """Numbered messages to an echoing peer, a window of them in flight, each checked on return."""

    def __init__(self, stocking: Stocking, window: int = 64) -> None:
        self.stocking = stocking
        self.window = window
        self.sent = 0
        self.received = 0

    def message(self, number: int) -> bytes:
        return number.to_bytes(8, "big") + b"." * (number % 1000)

    def fill(self) -> None:
        """Write until ``window`` messages are in flight."""
        while self.sent - self.received < self.window:
            self.stocking.write(self.message(self.sent))
            self.sent += 1

    def check(self, message: object) -> None:
        assert message == self.message(self.received), f"echo {self.received} lost or changed"
        self.received += 1

    def pump(self, count: int, timeout: float = 20.0) -> None:
        """Keep the stream going until ``count`` more echoes came back, in order."""
        target = self.received + count
        while self.received < target:
            self.fill()
            message = self.stocking.read(timeout=timeout)
            assert message is not None, f"no echo within {timeout} s ({self.stocking!r})"
            self.check(message)

    def drain(self) -> None:
        """Read (``timeout=None``) until the stocking ends, checking what is still delivered."""
        while (message := self.stocking.read(timeout=None)) is not None:
            self.check(message)


def connect(host: NetnsHost, **options: object) -> Stocking:
    return stockings.connect((host.address, PEER_PORT), timeout=10, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("writing", [False, True], ids=["quiet", "writing"])
def test_keepalive_ends_a_partitioned_stocking_with_timeout(host: NetnsHost, writing: bool) -> None:
    host.peer("echo", "Stocking")
    with connect(host, keepalive=KEEPALIVE) as stocking:
        echo = Echo(stocking)
        echo.pump(2000)
        host.partition()
        start = time.monotonic()
        if writing:
            # Unacknowledged data: the kernel retransmits it and sends no
            # keepalive probe while it does.
            echo.fill()
            stocking.write(b"sent into the partition")
        echo.drain()
        took = time.monotonic() - start
        assert stocking.end_reason is EndReason.TIMEOUT, stocking.end_exception
        assert isinstance(stocking.end_exception, TimeoutError)
        assert took <= KEEPALIVE_BOUND + SLACK, f"keepalive={KEEPALIVE} took {took:.2f} s"


def test_idle_timeout_ends_a_partitioned_stocking_with_timeout(host: NetnsHost) -> None:
    host.peer("echo", "Stocking")
    with connect(host, idle_timeout=IDLE_TIMEOUT) as stocking:
        echo = Echo(stocking)
        echo.pump(2000)
        host.partition()
        start = time.monotonic()
        echo.fill()
        echo.drain()
        took = time.monotonic() - start
        assert stocking.end_reason is EndReason.TIMEOUT, stocking.end_exception
        assert took <= IDLE_TIMEOUT + SLACK, f"idle_timeout={IDLE_TIMEOUT} took {took:.2f} s"


def test_without_keepalive_or_idle_timeout_a_partitioned_stocking_stays_open(
    host: NetnsHost,
) -> None:
    host.peer("echo", "Stocking")
    with connect(host) as stocking:
        echo = Echo(stocking)
        echo.pump(2000)
        host.partition()
        echo.fill()
        stocking.write(b"sent into the partition")
        # Twice as long as keepalive=2 takes to give up: TCP retransmits for
        # about 15 minutes (tcp_retries2) and, with nothing to send, waits forever.
        deadline = time.monotonic() + 2 * KEEPALIVE_BOUND
        while (left := deadline - time.monotonic()) > 0:
            message = stocking.read(timeout=left)
            if message is not None:
                echo.check(message)
        assert stocking.active and not stocking.ended, stocking.end_reason
        stocking.abort()


@pytest.mark.parametrize("options", [{"keepalive": KEEPALIVE}, {"idle_timeout": 4}], ids=repr)
def test_a_healed_partition_loses_nothing(host: NetnsHost, options: dict[str, float]) -> None:
    host.peer("echo", "Stocking")
    with connect(host, **options) as stocking:
        echo = Echo(stocking)
        echo.pump(2000)
        host.partition()
        echo.fill()
        # Outage long enough for several retransmissions, and short of the timeouts.
        before = echo.received
        deadline = time.monotonic() + 1.5
        while (left := deadline - time.monotonic()) > 0:
            message = stocking.read(timeout=left)
            if message is not None:
                echo.check(message)
        assert echo.received - before < echo.window, "echoes came through the partition"
        host.heal()
        echo.pump(5000)
        assert stocking.active, stocking.end_reason


def test_a_restarted_host_resets_on_the_next_write(host: NetnsHost) -> None:
    host.peer("echo", "Stocking")
    with connect(host) as stocking:
        echo = Echo(stocking)
        echo.pump(1000)
        host.restart()
        host.peer("echo", "Stocking")  # a new process, on the same address and port
        # The stocking learns of it with its next segment: this write, or an
        # acknowledgement of its own still on its way, which the new host
        # answers with a reset as well. Either way: a reset, never a hang.
        try:
            stocking.write(b"hello again")
        except ConnectionClosed as exc:
            assert exc.reason is EndReason.RESET
        wait_until(lambda: stocking.ended, 10)
        assert stocking.end_reason is EndReason.RESET, stocking.end_exception
        with pytest.raises(ConnectionClosed) as raised:
            stocking.write(b"and again")
        assert raised.value.reason is EndReason.RESET
        echo.drain()


def test_a_restarted_host_resets_a_waiting_read_with_keepalive(host: NetnsHost) -> None:
    host.peer("echo", "Stocking")
    with connect(host, keepalive=KEEPALIVE) as stocking:
        echo = Echo(stocking)
        echo.pump(1000)
        host.restart()
        host.peer("echo", "Stocking")
        start = time.monotonic()
        # The first keepalive probe reaches the new host, which answers RST.
        echo.drain()
        took = time.monotonic() - start
        assert stocking.end_reason is EndReason.RESET, stocking.end_exception
        assert took <= KEEPALIVE_BOUND + SLACK
