"""Writers and readers on a traced thread: a debugger, coverage, a profiler by lines.

The fast paths of ``write`` and ``read`` change shared state without a lock,
in stretches of bytecode without a call, which CPython runs whole. A trace
function breaks that: it is a call at every line, where its thread may be
switched out (or stopped at a breakpoint) while other threads run. Here
each test plays the worst scheduler: at every line of the library's code
on the traced thread, another thread gets its turn and acts, so any stretch
that relies on running whole is cut in two.
"""

from __future__ import annotations

import socket
import sys
import threading
import types
from _thread import LockType
from collections.abc import Callable
from typing import Any, cast

import pytest

import stockings
from conftest import wait_until
from stockings import _outbox
from stockings._framing import Decoder
from stockings._inbox import Inbox
from stockings._outbox import Outbox
from test_outbox import make

_Tracer = Callable[[types.FrameType, str, Any], Any]

#: How long a turn on a thread of its own may take before the traced thread
#: goes on without it: the turn is then blocked on the lock the traced thread
#: holds.
TURN_WAIT = 0.05


class Interleaver:
    """Gives another thread a turn at the ``at_line``-th line of each call of ``top``.

    Lines are counted in ``top`` and the ``codes`` it calls, on the thread
    that calls :meth:`run`, seen by a trace function (``hook="settrace"``)
    or a ``sys.monitoring`` tool (``hook="monitoring"``, Python 3.12+). A
    turn runs at once, on that thread (neither hook sees its own code),
    while ``lock`` is free; while the thread holds it, the turn runs on a
    thread of its own, which blocks on it: the traced thread then goes on,
    and the turn ends once the lock is free, as a real scheduler would have it.
    """

    def __init__(
        self,
        top: types.CodeType,
        codes: set[types.CodeType],
        turn: Callable[[], None],
        lock: LockType,
        at_line: int,
        hook: str = "settrace",
    ) -> None:
        self._top = top
        self._codes = codes | {top}
        self._turn = turn
        self._lock = lock
        self._at_line = at_line
        self._hook = hook
        self._line = 0
        self._thread = threading.get_ident()
        self._in_turn = False
        self._blocked: threading.Thread | None = None
        #: Whether a call reached the line: past the last line, none does.
        self.reached = False
        self.errors: list[BaseException] = []

    def _take_turn(self) -> None:
        try:
            self._turn()
        except BaseException as exc:  # reported by run()
            self.errors.append(exc)

    def _line_run(self) -> None:
        self._line += 1
        if self._line != self._at_line:
            return
        self.reached = True
        if self._blocked is not None:
            if self._blocked.is_alive():
                # One turn at a time: the blocked one keeps its place.
                return
            self._blocked = None
        if not self._lock.locked():
            self._in_turn = True
            try:
                self._take_turn()
            finally:
                self._in_turn = False
            return
        other = threading.Thread(target=self._take_turn, name="other-thread")
        other.start()
        other.join(TURN_WAIT)
        if other.is_alive():
            self._blocked = other

    # sys.settrace
    def _on_line(self, frame: types.FrameType, event: str, arg: Any) -> _Tracer | None:
        if event == "line":
            self._line_run()
        return self._on_line

    def _on_call(self, frame: types.FrameType, event: str, arg: Any) -> _Tracer | None:
        if frame.f_code is self._top:
            self._line = 0
        return self._on_line if frame.f_code in self._codes else None

    # sys.monitoring: its events come from every thread, turns included.
    def _ours(self) -> bool:
        return threading.get_ident() == self._thread and not self._in_turn

    def _on_start(self, code: types.CodeType, offset: int) -> None:
        if code is self._top and self._ours():
            self._line = 0

    def _on_monitored_line(self, code: types.CodeType, line: int) -> None:
        if self._ours():
            self._line_run()

    def run(self, function: Callable[[], None]) -> None:
        """Call ``function`` hooked, then wait for a blocked turn and report any error."""
        self._thread = threading.get_ident()
        if self._hook == "settrace":
            previous = sys.gettrace()
            sys.settrace(self._on_call)
            try:
                function()
            finally:
                sys.settrace(previous)
        else:
            monitoring = sys.monitoring  # type: ignore[attr-defined,unused-ignore]
            events = monitoring.events
            tool = monitoring.DEBUGGER_ID
            monitoring.use_tool_id(tool, "test_traced_threads")
            try:
                monitoring.register_callback(tool, events.PY_START, self._on_start)
                monitoring.register_callback(tool, events.LINE, self._on_monitored_line)
                for code in self._codes:
                    monitoring.set_local_events(tool, code, events.PY_START | events.LINE)
                function()
            finally:
                for code in self._codes:
                    monitoring.set_local_events(tool, code, 0)
                monitoring.register_callback(tool, events.PY_START, None)
                monitoring.register_callback(tool, events.LINE, None)
                monitoring.free_tool_id(tool)
        if self._blocked is not None:
            self._blocked.join(10)
            assert not self._blocked.is_alive(), "a turn never ended"
        assert not self.errors, self.errors


HOOKS = [
    "settrace",
    pytest.param(
        "monitoring",
        marks=pytest.mark.skipif(
            not hasattr(sys, "monitoring"), reason="sys.monitoring is Python 3.12+"
        ),
    ),
]


def every_line(check: Callable[[int], Interleaver]) -> None:
    """Run ``check`` with a turn at each line in turn, until past the last."""
    for at_line in range(1, 200):
        if not check(at_line).reached:
            assert at_line > 5, "the traced calls ran too few lines: does tracing work?"
            return
    raise AssertionError("the traced calls never ended")


def everything_sent(sock: socket.socket, peer: socket.socket, outbox: Outbox) -> list[object]:
    """Flush ``outbox`` to the end, close the sending side and decode all ``peer`` got."""
    while outbox.pending:
        with outbox.lock:
            assert outbox.flush() is None
    sock.shutdown(socket.SHUT_WR)
    decoder = Decoder(None)
    messages: list[object] = []
    while chunk := peer.recv(1 << 20):
        messages += decoder.feed(chunk)
    return messages


@pytest.fixture
def bursts(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every write after the first joins the batch, however slow tracing is.
    monkeypatch.setattr(_outbox, "BURST_GAP", float("inf"))


OUTBOX_CODES = {Outbox._join_tail.__code__, Outbox._enqueue.__code__}
#: Writes per line position: enough for a batch to build up.
WRITES = 6


@pytest.mark.usefixtures("bursts")
@pytest.mark.parametrize("hook", HOOKS)
@pytest.mark.parametrize("size", [10, 3000], ids=["inline", "joined"])
def test_a_traced_writer_loses_nothing_to_a_flush_between_its_lines(size: int, hook: str) -> None:
    def check(at_line: int) -> Interleaver:
        a, b = socket.socketpair()
        with a, b:
            b.settimeout(10)
            outbox, stand_in = make(a)

            def hub_flushes() -> None:
                # The hub's flush, as it runs when the writer is switched out.
                if outbox.pending:
                    stand_in._flush_from_hub()

            interleaver = Interleaver(
                Outbox.send.__code__, OUTBOX_CODES, hub_flushes, outbox.lock, at_line, hook
            )
            messages = [bytes([n]) * size for n in range(WRITES)]

            def write() -> None:
                # The first starts the batch the others join: after the
                # hook, as a monitoring tool is looked for when one starts.
                outbox.send(b"first")
                for message in messages:
                    outbox.send(message)

            interleaver.run(write)
            assert everything_sent(a, b, outbox) == [b"first", *messages], at_line
            return interleaver

    every_line(check)


@pytest.mark.usefixtures("bursts")
@pytest.mark.parametrize("hook", HOOKS)
def test_a_traced_writer_and_an_untraced_one_never_tear_each_others_messages(hook: str) -> None:
    # The untraced writer's lock-free join must not land inside the traced
    # one's queueing, which holds the lock but may be switched out midway.
    def check(at_line: int) -> Interleaver:
        a, b = socket.socketpair()
        with a, b:
            b.settimeout(10)
            outbox, _ = make(a)
            theirs = iter([b"theirs-%d" % n for n in range(100)])
            sent_by_them: list[bytes] = []

            def other_writer_writes() -> None:
                message = next(theirs)
                outbox.send(message)
                sent_by_them.append(message)

            interleaver = Interleaver(
                Outbox.send.__code__, OUTBOX_CODES, other_writer_writes, outbox.lock, at_line, hook
            )
            ours = [b"ours-%d" % n * 3 for n in range(WRITES)]

            def write() -> None:
                outbox.send(b"first")
                for message in ours:
                    outbox.send(message)

            interleaver.run(write)
            got = everything_sent(a, b, outbox)
            assert got.count(b"first") == 1, at_line
            # Every message whole, each writer's in its order.
            assert [m for m in got if cast(bytes, m).startswith(b"ours")] == ours, at_line
            assert [m for m in got if cast(bytes, m).startswith(b"theirs")] == sent_by_them, at_line
            assert len(got) == 1 + len(ours) + len(sent_by_them), at_line
            return interleaver

    every_line(check)


@pytest.mark.parametrize("hook", HOOKS)
@pytest.mark.parametrize("count", [1, 3])
def test_traced_and_untraced_readers_each_get_every_message_once(count: int, hook: str) -> None:
    def check(at_line: int) -> Interleaver:
        a, b = socket.socketpair()
        with stockings.Stocking(a) as left, stockings.Stocking(b) as right:
            expected = [b"%d" % n for n in range(count)]
            left.write_many(expected)
            inbox = right._channel.inbox
            wait_until(lambda: len(inbox.messages) == count)
            theirs: list[bytes] = []

            def other_reader_reads() -> None:
                message = right.read()
                if message is not None:
                    theirs.append(cast(bytes, message))

            interleaver = Interleaver(
                Inbox.receive.__code__, set(), other_reader_reads, inbox.lock, at_line, hook
            )
            ours: list[bytes] = []

            def read() -> None:
                while (message := right.read()) is not None:
                    ours.append(cast(bytes, message))

            interleaver.run(read)
            assert sorted(ours + theirs, key=lambda m: int(m)) == expected, at_line
            return interleaver

    every_line(check)


def test_the_bytecode_stretches_are_whole_only_without_tools_and_with_a_gil() -> None:
    from stockings import _switching

    assert _switching.thread_trace() is sys.gettrace()
    if hasattr(sys, "monitoring"):
        monitoring = sys.monitoring  # type: ignore[attr-defined,unused-ignore]
        assert _switching.stretches_run_whole()
        monitoring.use_tool_id(monitoring.PROFILER_ID, "test")
        try:
            assert not _switching.stretches_run_whole()
        finally:
            monitoring.free_tool_id(monitoring.PROFILER_ID)
    assert _switching.stretches_run_whole() is _switching._GIL_ENABLED


@pytest.mark.skipif(not hasattr(sys, "monitoring"), reason="sys.monitoring is Python 3.12+")
@pytest.mark.parametrize("tool", [False, True], ids=["no-tool", "tool"])
def test_a_write_the_kernel_could_not_take_asks_for_monitoring_tools(tool: bool) -> None:
    # Not a burst: the write goes to the socket, which is full, so its
    # batch stays queued for later writes to join: under the lock only
    # while a monitoring tool is registered.
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        try:
            while True:
                a.send(b"\0" * 65536)
        except BlockingIOError:
            pass
        outbox, _ = make(a)
        monitoring = sys.monitoring  # type: ignore[attr-defined,unused-ignore]
        if tool:
            monitoring.use_tool_id(monitoring.PROFILER_ID, "test_traced_threads")
        try:
            outbox.send(b"queued")
        finally:
            if tool:
                monitoring.free_tool_id(monitoring.PROFILER_ID)
        assert outbox.pending
        assert outbox._busy is tool
