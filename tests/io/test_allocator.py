"""Received messages freed by a reader leave their memory for the next ones (glibc).

The hub's thread makes each message and the reader's thread frees it, here
32 in a row, as a reader emptying its inbox does. Without the raised trim
threshold (``_allocator``) glibc gives the freed pages back on each such
run, and the next 32 messages fault 4 to 16 pages each in again.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

from stockings import _allocator

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the trim threshold is glibc's"
)

_STREAM = textwrap.dedent(
    """
    import resource, socket, sys
    import stockings
    from stockings import _allocator

    if sys.argv[1] == "off":
        _allocator._raised = True
    SIZE, BATCH, ROUNDS = 64 * 1024, 32, 16
    left, right = socket.socketpair()
    writer, reader = stockings.Stocking(left), stockings.Stocking(right)
    payload = b"x" * SIZE

    def run_batch():
        writer.write_many([payload] * BATCH)
        batch = [reader.read(timeout=10.0) for _ in range(BATCH)]
        assert all(message == payload for message in batch)

    run_batch()  # the heap grows once: those faults are not the question
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(ROUNDS):
        run_batch()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    writer.close()
    reader.close()
    print(faults / (BATCH * ROUNDS))
    """
)


def faults_per_message(mode: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _STREAM, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return float(done.stdout)


def test_a_reader_freeing_a_run_of_messages_costs_no_page_faults() -> None:
    assert faults_per_message("on") < 1.0


def test_without_the_raised_threshold_the_pages_fault_in_again() -> None:
    # The measure above can fail: the same stream, the threshold left alone.
    assert faults_per_message("off") > 2.0


def test_the_raising_block_covers_the_default_read_high_water_mark() -> None:
    from stockings._opening import DEFAULT_READ_HIGH_WATER

    assert _allocator.RAISING_BLOCK_SIZE > DEFAULT_READ_HIGH_WATER
    # glibc follows a freed block only up to 32 MiB.
    assert 2 * _allocator.RAISING_BLOCK_SIZE <= 64 * 1024 * 1024


def test_it_raises_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[int] = []
    monkeypatch.setattr(_allocator, "_raised", False)
    monkeypatch.setattr(_allocator, "bytes", lambda size: made.append(size) or b"", raising=False)
    _allocator.keep_freed_messages()
    _allocator.keep_freed_messages()
    assert made == [_allocator.RAISING_BLOCK_SIZE]
