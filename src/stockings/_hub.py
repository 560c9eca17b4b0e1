"""The I/O loop: one selector and one thread serving many connections.

A hub owns a selector, a wake-up socket pair and a thread. Connections attach
to it; the thread waits on all their sockets at once and calls back into the
connection that is ready. Other threads never touch the selector, but for
one exception (:attr:`Hub.interest_from_any_thread`): they post a callable
with :meth:`Hub.call_soon`, which wakes the loop through the socket pair (a
socket rather than a pipe so that ``select.select`` on Windows can wait on it
too).

The thread starts when the first connection attaches and ends, releasing its
selector and wake-up sockets, when the last one detaches: an idle process
holds no thread and no descriptor for stockings.

A fault is contained where it happens: it ends only the connections it
concerns, or every one if the loop itself broke (see ``_hub_faults``).
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from ._allocator import keep_freed_messages
from ._epoll import EpollSelector
from ._hub_faults import Containment, fd_limit_of
from ._live import LiveSet
from ._timeouts import LONGEST_SLEEP

__all__ = ["Hub", "Timer", "shared_hub"]

#: One receive buffer per hub, shared by all its connections: an idle
#: connection costs no buffer of its own.
RECV_BUFFER_SIZE = 256 * 1024


class Attached(Protocol):
    """What a hub needs from a connection it serves."""

    def handle_events(self, mask: int) -> None:
        """Act on readiness; must not raise."""

    def hub_failed(self, exc: BaseException) -> None:
        """The loop itself broke; end the connection with ``exc``."""


class Timer:
    """A callback scheduled with :meth:`Hub.call_later`; cancel it to drop it."""

    __slots__ = ("callback", "cancelled", "deadline")

    def __init__(self, deadline: float, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        """Make sure the callback does not run (a no-op once it has run)."""
        self.cancelled = True


class Hub:
    """An I/O loop that serves many connections from one thread.

    Args:
        selector_factory: makes the selector, e.g. ``selectors.PollSelector``.
        name: the thread's name, for debuggers and ``threading.enumerate()``.
        max_wait: the longest the loop sleeps in one ``select`` call, in
            seconds; ``None`` sleeps until something happens.
    """

    def __init__(
        self,
        selector_factory: Callable[[], selectors.BaseSelector] = selectors.DefaultSelector,
        name: str = "stockings-hub",
        max_wait: float | None = None,
    ) -> None:
        self.name = name
        self.max_wait = max_wait
        self._selector_factory = selector_factory
        self._lock = threading.Lock()
        self._calls: deque[Callable[[], None]] = deque()
        self._timers: list[tuple[float, int, Timer]] = []
        # Timers posted from any thread, for the loop to take in before it
        # next sleeps; and until when it sleeps (-inf while it runs), so
        # that only a timer due before then has to wake it.
        self._new_timers: list[Timer] = []
        self._sleep_until = math.inf
        self._sequence = itertools.count()
        self._attached = 0
        # The connections attached (those that said who they are), so that
        # a broken loop can end each, registered yet or not.
        self._members: set[Attached] = set()
        #: Ends the connections a fault concerns (see ``_hub_faults``).
        self._faults = Containment(self)
        self._thread: threading.Thread | None = None
        self._thread_id = -1
        self._wake_pending = False
        self._selector: selectors.BaseSelector | None = None
        self._waker: socket.socket | None = None
        self._wakee: socket.socket | None = None
        #: Whether a connection may change its own socket's interest from
        #: another thread: an epoll set takes changes at once, even while the
        #: loop waits on it, and the loop reads each key afresh.
        self.interest_from_any_thread = isinstance(selector_factory, type) and issubclass(
            selector_factory, EpollSelector
        )
        #: The first descriptor this hub's selector cannot watch; ``None`` for no limit.
        self.fd_limit = fd_limit_of(selector_factory)
        self.recv_buffer = bytearray(RECV_BUFFER_SIZE)
        self.recv_view = memoryview(self.recv_buffer)
        _live_hubs.add(self)

    def __repr__(self) -> str:
        return f"<Hub {self.name} attached={self._attached}>"

    @property
    def selector(self) -> selectors.BaseSelector:
        """The live selector: the hub thread's, but see :attr:`interest_from_any_thread`."""
        assert self._selector is not None, "the hub thread is not running"
        return self._selector

    @property
    def attached(self) -> int:
        """How many connections the hub serves now."""
        return self._attached

    @property
    def running(self) -> bool:
        """True while the hub's thread is alive."""
        return self._thread is not None

    def in_hub_thread(self) -> bool:
        """True when called from the hub's own thread."""
        return threading.get_ident() == self._thread_id

    def attach(self, on_loop: Callable[[], None], member: Attached | None = None) -> None:
        """Count a new connection in and run ``on_loop`` on the hub thread.

        ``on_loop`` registers the connection's socket with :attr:`selector`.
        A ``member`` given is told (``hub_failed``) if the loop breaks, even
        before ``on_loop`` has run; it must then :meth:`detach` itself.
        """
        with self._lock:
            self._attached += 1
            if member is not None:
                self._members.add(member)
            self._calls.append(on_loop)
            if self._thread is None:
                self._start_locked()
            else:
                self._wake_locked()

    def detach(self, member: Attached | None = None) -> None:
        """Count a connection out; call on the hub thread after unregistering it."""
        with self._lock:
            if member is not None:
                if member not in self._members:
                    return  # counted out already, by a failing loop
                self._members.discard(member)
            self._attached -= 1

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the hub thread as soon as it can.

        Callbacks for a hub with no thread (nothing attached) run when one
        next attaches; connections only post callbacks while attached.
        """
        with self._lock:
            # Wake first: a signal handler's exception between the two then
            # leaves a spare wake-up, never a call that waits for the next one.
            self._wake_locked()
            self._calls.append(callback)

    def call_soon_unlocked(self, callback: Callable[[], None]) -> None:
        """Like :meth:`call_soon`, but without taking any lock.

        For a garbage collector's callback, which may run on any thread
        while that thread holds any lock, this hub's included. Only for a
        connection still attached: the thread then keeps running until the
        callback has run.
        """
        # deque.append is atomic; a spare wake-up byte costs one empty turn.
        self._calls.append(callback)
        waker = self._waker
        if waker is not None:
            try:
                waker.send(b"\0")
            except OSError:
                pass  # full of wake-ups already, or the thread just stopped

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` on the hub thread after ``delay`` seconds.

        The loop is woken only if it sleeps past the deadline: a writer's
        burst posts a timer per connection, and waking the loop for each
        would cost a system call and a switch of the GIL.
        """
        deadline = time.monotonic() + delay
        if deadline != deadline:
            # A NaN deadline would break the timers' heap order.
            raise ValueError("delay must be a number of seconds, not NaN")
        timer = Timer(deadline, callback)
        with self._lock:
            # Wake first: an interrupt between the two leaves a spare wake-up.
            if timer.deadline < self._sleep_until:
                self._wake_locked()
            self._new_timers.append(timer)
        return timer

    def _wake_locked(self) -> None:
        if self._wake_pending or self._waker is None:
            return
        self._wake_pending = True
        try:
            self._waker.send(b"\0")
        except (BlockingIOError, InterruptedError):
            # The socket buffer is full of wake-ups already: the loop will wake.
            pass

    def _start_locked(self) -> None:
        keep_freed_messages()
        self._selector = self._selector_factory()
        self._wakee, self._waker = socket.socketpair()
        self._wakee.setblocking(False)
        self._waker.setblocking(False)
        self._selector.register(self._wakee, selectors.EVENT_READ, None)
        self._wake_pending = False
        thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread = thread
        thread.start()

    def _drain_waker(self) -> None:
        assert self._wakee is not None
        try:
            while self._wakee.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _run(self) -> None:
        self._thread_id = threading.get_ident()
        selector = self.selector
        faults = self._faults
        try:
            while self._run_once(selector, faults):
                pass
        except BaseException as exc:
            faults.loop_failed(selector, exc)

    def _run_once(self, selector: selectors.BaseSelector, faults: Containment) -> bool:
        """One turn of the loop; returns False once the thread should end."""
        with self._lock:
            new_timers = self._new_timers
            if new_timers:
                for timer in new_timers:
                    heapq.heappush(self._timers, (timer.deadline, next(self._sequence), timer))
                new_timers.clear()
            if self._calls:
                # Callbacks wait: no sleep, and no clock read on a busy loop.
                timeout: float | None = 0.0
                self._sleep_until = -math.inf
            else:
                now = time.monotonic()
                timeout = self._next_timeout(now)
                self._sleep_until = math.inf if timeout is None else now + timeout
        try:
            ready = selector.select(timeout)
        except Exception as exc:
            ready = faults.select_failed(selector, exc)
        else:
            faults.select_failures = 0
        # Awake: it takes new timers in before it sleeps again.
        self._sleep_until = -math.inf
        for key, mask in ready:
            connection = key.data
            if connection is None:
                self._drain_waker()
                with self._lock:
                    self._wake_pending = False
            else:
                try:
                    connection.handle_events(mask)
                except Exception as exc:
                    faults.member_failed(selector, connection, exc)
        self._run_calls(selector)
        if self._timers:
            self._run_timers(selector)
        with self._lock:
            if self._attached or self._calls:
                return True
            self._stop_locked(selector)
            return False

    def _next_timeout(self, now: float) -> float | None:
        timeout = self.max_wait
        if self._timers:
            # A timer that far off (an ``idle_timeout`` of ``inf``) is
            # slept towards in steps: ``select`` cannot take it in one.
            until = min(max(0.0, self._timers[0][0] - now), LONGEST_SLEEP)
            timeout = until if timeout is None else min(timeout, until)
        return timeout

    def _run_calls(self, selector: selectors.BaseSelector) -> None:
        calls = self._calls
        # Bounded by the length now, so a callback that posts another does
        # not starve the sockets.
        for _ in range(len(calls)):
            callback = calls.popleft()
            try:
                callback()
            except Exception as exc:
                self._faults.callback_failed(selector, callback, exc)

    def _run_timers(self, selector: selectors.BaseSelector) -> None:
        now = time.monotonic()
        timers = self._timers
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)[2]
            if not timer.cancelled:
                timer.cancelled = True
                try:
                    timer.callback()
                except Exception as exc:
                    self._faults.callback_failed(selector, timer.callback, exc)

    def _members_now(self) -> list[Attached]:
        """The connections attached now (for the fault containment)."""
        with self._lock:  # other threads attach meanwhile
            return list(self._members)

    def _disband(self, selector: selectors.BaseSelector, unnamed: list[Attached]) -> list[Attached]:
        """The loop broke: give up every member and ``unnamed``; stop if there are none."""
        with self._lock:
            members = list(self._members)
            self._members.clear()
            members += [member for member in unnamed if member not in members]
            if not members:
                # Whoever attaches from now on starts a fresh thread.
                self._attached = 0
                self._calls.clear()
                self._stop_locked(selector)
            return members

    def _stop_locked(self, selector: selectors.BaseSelector) -> None:
        # Under the lock, so a thread started by the next attach keeps its id.
        self._thread = None
        self._thread_id = -1
        self._timers.clear()
        self._new_timers.clear()
        self._sleep_until = math.inf
        selector.close()
        self._selector = None
        for sock in (self._wakee, self._waker):
            if sock is not None:
                sock.close()
        self._wakee = self._waker = None


_shared_hubs: dict[str, Hub] = {}
_shared_lock = threading.Lock()
#: Every hub of this process, so that a forked child can reset them.
_live_hubs: LiveSet[Hub] = LiveSet()


def _reset_after_fork() -> None:
    # A forked child has none of the parent's hub threads, and any lock may
    # have been copied while held: start the child from empty hubs. Only the
    # child's own copies of the selector and wake-up descriptors are closed.
    global _shared_lock
    _shared_lock = threading.Lock()
    _shared_hubs.clear()
    for hub in list(_live_hubs):
        hub._lock = threading.Lock()
        hub._calls.clear()
        hub._timers.clear()
        hub._new_timers.clear()
        hub._sleep_until = math.inf
        hub._attached = 0
        hub._thread = None
        hub._thread_id = -1
        hub._wake_pending = False
        for resource in (hub._selector, hub._wakee, hub._waker):
            if resource is not None:
                try:
                    resource.close()
                except OSError:
                    pass
        hub._selector = hub._wakee = hub._waker = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def shared_hub(
    flavour: str,
    selector_factory: Callable[[], selectors.BaseSelector],
    max_wait: float | None = None,
) -> Hub:
    """Return the process-wide hub of one flavour, making it on first use."""
    with _shared_lock:
        hub = _shared_hubs.get(flavour)
        if hub is None:
            hub = Hub(selector_factory, name=f"stockings-hub-{flavour}", max_wait=max_wait)
            _shared_hubs[flavour] = hub
        elif max_wait is not None:
            hub.max_wait = max_wait if hub.max_wait is None else min(hub.max_wait, max_wait)
        return hub
