"""The measurements behind ``stockings bench``: streams and round trips over loopback.

Both ends of each connection run in this process. Every message is counted
and checked, so a result is also proof that the flavour works here.
"""

from __future__ import annotations

import socket
import ssl
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._cli_common import auth_flavour
from ._errors import StockingError
from ._stocking import Stocking
from ._sync import join_thread

__all__ = [
    "LARGE_SIZE",
    "RTT_SIZE",
    "SMALL_SIZE",
    "BenchResult",
    "BenchmarkFailed",
    "Ends",
    "run_bench",
    "stream",
    "transports",
]

#: The size of the messages in the "small" stream.
SMALL_SIZE = 100
#: The size of the messages in the "large" stream.
LARGE_SIZE = 1024 * 1024
#: The size of the round-trip message.
RTT_SIZE = 16
#: How long one read may wait before the benchmark is declared stuck.
STUCK_AFTER = 30.0

Pair = tuple[socket.socket, socket.socket]


class BenchmarkFailed(StockingError):
    """A benchmark run did not deliver what it sent."""


def _tcp_pair() -> Pair:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


def transports() -> dict[str, Callable[[], Pair]]:
    found: dict[str, Callable[[], Pair]] = {"tcp": _tcp_pair}
    if hasattr(socket, "socketpair"):
        found["socketpair"] = socket.socketpair
    return found


# ---------------------------------------------------------------------- bench


@dataclass
class BenchResult:
    """One row of the ``bench`` table.

    Attributes:
        flavour: the stocking class name.
        transport: ``"tcp"`` or ``"socketpair"``.
        small_rate: small messages per second.
        small_mbps: small-message throughput, in MB (10**6 bytes) per second.
        small_count: how many small messages were sent and received.
        large_rate: large messages per second.
        large_mbps: large-message throughput, in MB per second.
        large_count: how many large messages were sent and received.
        rtt_us: median round-trip time of a 16-byte message, in microseconds.
        rtt_count: how many round trips were timed.
    """

    flavour: str
    transport: str
    small_rate: float
    small_mbps: float
    small_count: int
    large_rate: float
    large_mbps: float
    large_count: int
    rtt_us: float
    rtt_count: int


@dataclass
class Ends:
    """How to make the two ends of a pair beyond the flavour: TLS, authkey, limits.

    Attributes:
        client_tls: the connecting end's TLS context, or ``None`` for none.
        server_tls: the accepting end's TLS context (set with ``client_tls``).
        authkey: the key both ends prove they hold, or ``None``.
        kwargs: more keyword arguments for both stockings.
    """

    client_tls: ssl.SSLContext | None = None
    server_tls: ssl.SSLContext | None = None
    authkey: bytes | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    def make(self, flavour: type[Stocking], sock: socket.socket, server_side: bool) -> Stocking:
        """One end, as a stocking of ``flavour`` (with the authkey handshake if asked)."""
        if server_side and self.server_tls is not None:
            sock = self.server_tls.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        elif not server_side and self.client_tls is not None:
            sock = self.client_tls.wrap_socket(
                sock, server_hostname="localhost", do_handshake_on_connect=False
            )
        if self.authkey is None:
            return flavour(sock, **self.kwargs)
        cls = auth_flavour(flavour)
        return cls(sock, authkey=self.authkey, server_side=server_side, **self.kwargs)


_PLAIN = Ends()


def _open(
    flavour: type[Stocking], make_pair: Callable[[], Pair], ends: Ends = _PLAIN
) -> tuple[Stocking, Stocking]:
    a, b = make_pair()
    try:
        left = ends.make(flavour, a, server_side=False)
    except BaseException:
        a.close()
        b.close()
        raise
    try:
        right = ends.make(flavour, b, server_side=True)
    except BaseException:
        left.close()
        b.close()
        raise
    if ends.authkey is not None:
        for stocking in (left, right):
            if not stocking.wait_handshake(STUCK_AFTER):
                left.close()
                right.close()
                why = stocking.end_exception or "it timed out"
                raise BenchmarkFailed(f"the authkey handshake failed: {why}")
    return left, right


def _read_or_fail(stocking: Stocking) -> Any:
    message = stocking.read(timeout=STUCK_AFTER)
    if message is None:
        why = stocking.end_reason.value if stocking.end_reason else "nothing arrived"
        raise BenchmarkFailed(f"the stream stopped early ({why})")
    return message


def stream(
    flavour: type[Stocking],
    make_pair: Callable[[], Pair],
    size: int,
    count: int,
    duration: float,
    ends: Ends = _PLAIN,
) -> tuple[float, int]:
    """Send up to ``count`` messages of ``size`` bytes one way; return (seconds, count).

    The writer stops early once ``duration`` seconds have passed, then
    sends an empty text message as the end marker: the payloads are bytes,
    so the marker cannot be mistaken for one.
    """
    left, right = _open(flavour, make_pair, ends)
    payload = b"x" * size
    sent = 0
    failure: list[BaseException] = []

    def writer() -> None:
        nonlocal sent
        try:
            deadline = time.perf_counter() + duration
            write = left.write
            while sent < count:
                write(payload)
                sent += 1
                if not sent & 15 and time.perf_counter() > deadline:
                    break
            write("")
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=writer, name="stockings-bench-writer")
    try:
        received = 0
        start = time.perf_counter()
        thread.start()
        while True:
            message = _read_or_fail(right)
            if isinstance(message, str):
                break
            if len(message) != size:
                raise BenchmarkFailed(f"a {size} B message arrived as {len(message)} B")
            received += 1
        elapsed = time.perf_counter() - start
    finally:
        left.close()
        join_thread(thread, None)
        right.close()
    if failure:
        raise BenchmarkFailed(f"the writer failed: {failure[0]!r}") from failure[0]
    if received != sent:
        raise BenchmarkFailed(f"sent {sent} messages of {size} B but received {received}")
    return elapsed, received


def _round_trips(
    flavour: type[Stocking],
    make_pair: Callable[[], Pair],
    count: int,
    duration: float,
    ends: Ends = _PLAIN,
) -> tuple[float, int]:
    """Time up to ``count`` round trips of a 16-byte message; return (median µs, count)."""
    left, right = _open(flavour, make_pair, ends)

    def echo() -> None:
        try:
            for message in right:
                right.write(message)
        except StockingError:
            pass  # the timing side closed first; it reports what went wrong

    thread = threading.Thread(target=echo, name="stockings-bench-echo")
    payload = b"r" * RTT_SIZE
    samples: list[float] = []
    try:
        thread.start()
        for _ in range(min(count, 20)):  # warm the path up before timing it
            left.write(payload)
            _read_or_fail(left)
        deadline = time.perf_counter() + duration
        clock = time.perf_counter
        while len(samples) < count:
            start = clock()
            left.write(payload)
            answer = _read_or_fail(left)
            samples.append(clock() - start)
            if answer != payload:
                raise BenchmarkFailed("a round trip returned a different message")
            if clock() > deadline:
                break
    finally:
        left.close()
        right.close()
        join_thread(thread, None)
    return statistics.median(samples) * 1e6, len(samples)


def run_bench(
    flavour: type[Stocking],
    transport: str,
    make_pair: Callable[[], Pair],
    small_count: int,
    large_count: int,
    rtt_count: int,
    duration: float,
    progress: Callable[[str], None] | None = None,
    ends: Ends = _PLAIN,
) -> BenchResult:
    """Measure one flavour over one transport.

    Args:
        flavour: the stocking class to measure.
        transport: the transport's name, for the result.
        make_pair: makes a connected socket pair.
        small_count: the most 100-byte messages to stream.
        large_count: the most 1 MiB messages to stream.
        rtt_count: the most round trips to time.
        duration: the most seconds each of the three measurements may run;
            a measurement that stops early reports what it did send.
        progress: called with the name of each measurement as it starts.
        ends: TLS, the authkey and other options for the stockings.

    Returns:
        The measured row.

    Raises:
        BenchmarkFailed: a message was lost, changed or stuck.
    """
    say = progress or (lambda what: None)
    say(f"{SMALL_SIZE} B stream")
    small_time, small_n = stream(flavour, make_pair, SMALL_SIZE, small_count, duration, ends)
    say("1 MiB stream")
    large_time, large_n = stream(flavour, make_pair, LARGE_SIZE, large_count, duration, ends)
    say(f"{RTT_SIZE} B round trips")
    rtt, rtt_n = _round_trips(flavour, make_pair, rtt_count, duration, ends)
    return BenchResult(
        flavour=flavour.__name__,
        transport=transport,
        small_rate=small_n / small_time,
        small_mbps=small_n * SMALL_SIZE / small_time / 1e6,
        small_count=small_n,
        large_rate=large_n / large_time,
        large_mbps=large_n * LARGE_SIZE / large_time / 1e6,
        large_count=large_n,
        rtt_us=rtt,
        rtt_count=rtt_n,
    )
