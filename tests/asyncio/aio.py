"""Running asyncio tests: a fresh loop in debug mode, leak checks after it.

No pytest plugin: each test calls :func:`run` with its coroutine function.
The loop runs in debug mode; ResourceWarnings (an unclosed transport or
socket) fail the test, and so does a task still pending when the test's
coroutine returns.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import warnings
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest

try:
    import uvloop
except ImportError:  # pragma: no cover - where uvloop does not install
    uvloop = None

T = TypeVar("T")

#: The loops a test may ask for: asyncio's own, and uvloop's where it is installed.
LOOPS = ["asyncio", "uvloop"]


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        if uvloop is None:
            pytest.skip("uvloop is not installed here")
        return uvloop.new_event_loop()  # type: ignore[no-any-return]
    return asyncio.new_event_loop()


@contextmanager
def resource_warnings_fail() -> Iterator[list[str]]:
    """Collect ResourceWarnings, also those raised in ``__del__``."""
    seen: list[str] = []
    old_hook = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        seen.append(f"{unraisable.exc_value!r} in {unraisable.object!r}")

    sys.unraisablehook = hook
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            yield seen
            gc.collect()
        seen += [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    finally:
        sys.unraisablehook = old_hook


def run(
    main: Callable[[], Awaitable[T]],
    *,
    loop: str = "asyncio",
    timeout: float = 30.0,
    debug: bool = True,
) -> T:
    """Run ``main()`` on a new loop, in debug mode; fail on leaked tasks or resources."""
    with resource_warnings_fail() as leaks:
        event_loop = new_loop(loop)
        event_loop.set_debug(debug)
        # Under a loaded machine a slow callback is no bug: keep the log quiet.
        event_loop.slow_callback_duration = 10.0
        try:
            result = event_loop.run_until_complete(asyncio.wait_for(main(), timeout))
            # Callbacks already scheduled (a transport's connection_lost) run first.
            for _ in range(5):
                event_loop.run_until_complete(asyncio.sleep(0))
            pending = [t for t in asyncio.all_tasks(event_loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                event_loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            event_loop.run_until_complete(event_loop.shutdown_asyncgens())
        finally:
            event_loop.close()
        del event_loop
    assert not pending, f"tasks left running: {pending}"
    assert not leaks, f"resources leaked: {leaks}"
    return result


async def wait_for_condition(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait for ``predicate()`` to be true, failing after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        await asyncio.sleep(0.005)
