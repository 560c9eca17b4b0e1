"""What one measurement of the comparison benchmark produced, and its one-line name.

Shared by the orchestration (:mod:`comparison.run`), which fills a
:class:`Result` per run and reports progress with :func:`describe`, and by
the report, which tabulates them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Result", "describe", "size_name"]


@dataclass
class Result:
    """One measurement of one system: a rate or a round trip, and memory."""

    system: str
    test: str
    size: int
    count: int
    seconds: float = 0.0
    #: CPU seconds (user + system) of both processes in the timed part.
    cpu: float = 0.0
    client_rss: int = 0
    server_rss: int = 0
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the run delivered every message."""
        return not self.error

    @property
    def rate(self) -> float:
        """Messages per second (stream)."""
        return self.count / self.seconds if self.seconds else 0.0

    @property
    def mbps(self) -> float:
        """Payload megabytes (10**6) per second (stream)."""
        return self.rate * self.size / 1e6

    @property
    def cpu_us(self) -> float:
        """CPU microseconds (both processes) per message, or per round trip."""
        return self.cpu / self.count * 1e6 if self.count else 0.0

    @property
    def rtt_us(self) -> float:
        """Mean round trip in microseconds (rtt)."""
        return self.seconds / self.count * 1e6 if self.count else 0.0


#: What the client and the server processes do in each test.
_SIDES = {
    "stream": ("writer", "reader"),
    "tls": ("writer", "reader"),
    "fanin": ("writers", "reader"),
    "rtt": ("client", "server"),
}


def describe(result: Result) -> str:
    """One progress line for a finished run: what ran, and its rate, round trip or error.

    Args:
        result: the finished run.

    Returns:
        The line, without a newline.
    """
    what = f"{result.system:16} {result.test:6} {size_name(result.size):>6} x{result.count}"
    if not result.ok:
        return f"{what}: FAILED: {result.error}"
    cpu = f", CPU {result.cpu_us:.2f} us/msg"
    sides = _SIDES.get(result.test)
    client, server = result.extra.get("client_cpu"), result.extra.get("server_cpu")
    if sides is not None and client is not None and server is not None and result.count:
        # Which side is busier says which one bounds the rate.
        per = 1e6 / result.count
        cpu += f" ({sides[0]} {client * per:.2f}, {sides[1]} {server * per:.2f})"
    if result.test == "rtt":
        return f"{what}: {result.rtt_us:.1f} us{cpu}"
    return f"{what}: {result.rate:,.0f} msg/s {result.mbps:,.1f} MB/s{cpu}"


def size_name(size: int) -> str:
    """A message size as people write it: ``16 B``, ``4 KiB``, ``1 MiB``.

    Args:
        size: bytes.

    Returns:
        The size in the largest binary unit it reaches.
    """
    if size >= 1 << 20:
        return f"{size >> 20} MiB"
    if size >= 1024:
        return f"{size >> 10} KiB"
    return f"{size} B"
