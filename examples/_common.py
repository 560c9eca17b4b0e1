"""Small helpers the example programs share: addresses and a clean stop."""

from __future__ import annotations

import argparse
import signal
from types import FrameType


def host_port(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` for argparse."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def stop_on_sigterm() -> None:
    """Make SIGTERM stop a server the way Ctrl-C does: by KeyboardInterrupt."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def announce(address: object) -> None:
    """Print where a server listens, as the first line of its output."""
    if isinstance(address, tuple):
        address = f"{address[0]}:{address[1]}"
    print(f"listening on {address}", flush=True)
