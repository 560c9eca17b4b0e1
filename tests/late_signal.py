"""A signal whose handler is owed while the main thread sleeps: the worst moment for one.

A signal that arrives while the main thread runs Python code or sleeps in a
system call is handled at once: the sleep ends with ``EINTR``. One that
arrives in the instant between the interpreter's last check and the start of
a sleep interrupts nothing, and its handler runs only when the main thread
next executes Python. :func:`late_signal` stages that instant at will: a
helper thread waits until the main thread has been asleep in the same place
for a while, then directs the signal at *itself*, so that the C-level
handler runs there and the main thread is left sleeping with the Python
handler owed. A wait that never ends on its own would then keep the handler
(Ctrl-C's ``KeyboardInterrupt``, a supervisor's ``SIGTERM``) waiting for ever;
after :data:`RESCUE_AFTER` the helper interrupts the main thread's sleep with
a second signal, so such a test fails with the delay rather than hangs.

Linux only: a thread's state comes from ``/proc``. Also run as a script by
the command-line tests (``python late_signal.py SIGNAL -- ARGS``): it runs
``stockings.__main__`` with ``ARGS``, sending ``SIGNAL`` late.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType

#: The signal sent late, unless told otherwise.
LATE = signal.SIGUSR1
#: The signal that ends the main thread's sleep if the late one did not run.
RESCUE = signal.SIGUSR2
#: How long the main thread must have slept in one place before the signal.
SETTLED = 0.05
#: When the helper gives up on the late handler and interrupts the sleep.
RESCUE_AFTER = 8.0


class Late(BaseException):
    """What the late signal's handler raises: like ``KeyboardInterrupt``, not an ``Exception``."""


@dataclass
class Timing:
    """When the signal was sent, and when its handler ran (``time.monotonic()``)."""

    sent: list[float] = field(default_factory=list)
    ran: list[float] = field(default_factory=list)
    #: Where the main thread slept when the signal was sent.
    asleep_at: str = ""

    @property
    def delay(self) -> float:
        """How long the handler waited to run, in seconds."""
        assert self.sent, f"the main thread never slept long enough in one place ({self.asleep_at})"
        assert self.ran, "the handler never ran"
        return self.ran[0] - self.sent[0]


def _state(native_id: int) -> str:
    with open(f"/proc/self/task/{native_id}/stat") as stat:
        # The command name, in parentheses, may hold spaces: the state follows it.
        return stat.read().rsplit(")", 1)[1].split()[0]


def _where(frame: FrameType | None) -> tuple[object, ...] | None:
    if frame is None:
        return None
    return (frame.f_code, frame.f_lineno)


def _describe(frame: FrameType | None) -> str:
    if frame is None:
        return "nowhere"
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


@contextmanager
def late_signal(signum: int = LATE, raise_late: bool = True) -> Iterator[Timing]:
    """Send ``signum`` late once the main thread sleeps, for the length of the block.

    Args:
        signum: the signal; its handler is set to raise :class:`Late` unless
            ``raise_late`` is false, when the caller's handler stays.
        raise_late: install the handler that records when it ran and raises.

    Yields:
        The :class:`Timing` of the signal, filled in as it happens.
    """
    main = threading.main_thread()
    assert threading.current_thread() is main, "signal handlers run on the main thread"
    timing = Timing()
    done = threading.Event()

    def on_late(signum: int, frame: FrameType | None) -> None:
        timing.ran.append(time.monotonic())
        raise Late

    def on_rescue(signum: int, frame: FrameType | None) -> None:
        """Only there to end the sleep: the late handler runs beside it."""

    def helper() -> None:
        native_id = main.native_id
        assert native_id is not None
        since = time.monotonic()
        last: tuple[object, ...] | None = None
        deadline = since + 20.0
        while not done.is_set():
            frame = sys._current_frames().get(main.ident or 0)
            where = _where(frame)
            if where != last or _state(native_id) != "S":
                last, since = where, time.monotonic()
            elif time.monotonic() - since >= SETTLED:
                timing.asleep_at = _describe(frame)
                break
            if time.monotonic() > deadline:
                timing.asleep_at = f"last seen at {_describe(frame)}"
                return
            done.wait(0.002)  # sampling the main thread: nothing to be told by
        else:
            return
        timing.sent.append(time.monotonic())
        signal.pthread_kill(threading.get_ident(), signum)
        if not done.wait(RESCUE_AFTER):
            signal.pthread_kill(main.ident or 0, RESCUE)

    previous_late = signal.signal(signum, on_late) if raise_late else None
    previous_rescue = signal.signal(RESCUE, on_rescue)
    thread = threading.Thread(target=helper, name="late-signal", daemon=True)
    thread.start()
    try:
        yield timing
    finally:
        done.set()
        thread.join()
        signal.signal(RESCUE, previous_rescue)
        if previous_late is not None:
            signal.signal(signum, previous_late)


def _main(argv: list[str]) -> int:
    """``late_signal.py SIGNAL -- ARGS``: the command line, with SIGNAL sent late.

    Says on stderr where the main thread slept and how long after the
    signal the command returned.
    """
    signum = signal.Signals[argv[0]]
    from stockings._cli import main

    with late_signal(signum, raise_late=False) as timing:
        status = main(argv[2:])
        returned = time.monotonic()
    print(f"late signal: asleep at {timing.asleep_at}", file=sys.stderr)
    if timing.sent:
        print(f"late signal: returned {returned - timing.sent[0]:.3f} s after", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
