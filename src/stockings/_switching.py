"""Whether a stretch of bytecode without a call runs whole, with no other thread in it.

CPython, with its GIL, hands the interpreter to another thread, and runs
signal handlers, only at calls, function starts and backward jumps. The
write and read fast paths lean on that: a stretch between two calls is one
step for every other thread, so it may test and change shared state
without the lock (see ``Outbox.send``).

Three things break the rule:

- a trace function (``sys.settrace``: debuggers, coverage) is a call at
  every line of the thread it traces, where that thread may be switched
  out, or stopped at a breakpoint while others run;
- a ``sys.monitoring`` tool (Python 3.12+) calls Python code at lines,
  branches or bytecodes of any thread;
- a free-threaded build runs threads at once.

The lock-free writes ask here first and take the lock when the rule does
not hold (the lock-free read needs no answer: ``Inbox.receive`` checks
what it popped). A thread's trace function is asked for on each write: it
costs one C call, and a debugger may start stepping at any moment. A
monitoring tool is looked for when a batch is left in the queue for later
writes to join (:func:`stretches_run_whole`); one that registers after
that sees at most that one batch (a millisecond's worth, or
``WRITER_FLUSH_SIZE`` bytes) joined without the lock.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

__all__ = ["stretches_run_whole", "thread_trace"]

#: This thread's trace function (``sys.gettrace``), ``None`` without one.
thread_trace: Callable[[], Any] = sys.gettrace

# A free-threaded build that runs without its GIL never makes a stretch
# whole. Its GIL may come back at run time (an extension that needs it),
# but never goes away once there: asked once.
_GIL_ENABLED: bool = getattr(sys, "_is_gil_enabled", lambda: True)()
# sys.monitoring's tool identifiers are 0 to 5; no tool has a name.
_TOOL_IDS = range(6)
_NO_TOOLS = (None,) * len(_TOOL_IDS)


if hasattr(sys, "monitoring"):

    def stretches_run_whole() -> bool:
        """Whether no other thread runs inside a stretch of bytecode without a call.

        Apart from the calling thread's own trace function
        (:data:`thread_trace`), which each caller asks for at the stretch.
        """
        if not _GIL_ENABLED:
            return False
        get_tool = sys.monitoring.get_tool  # type: ignore[attr-defined,unused-ignore]
        # In C throughout: a third less than a generator's loop.
        return tuple(map(get_tool, _TOOL_IDS)) == _NO_TOOLS

else:

    def stretches_run_whole() -> bool:
        """Whether no other thread runs inside a stretch of bytecode without a call.

        Apart from the calling thread's own trace function
        (:data:`thread_trace`), which each caller asks for at the stretch.
        """
        return _GIL_ENABLED
