"""A waiting reader receiving on its own thread.

A reader waiting on the hub costs two thread wake-ups per message: the
hub's, then the reader's. So a reader that finds the inbox empty and the
socket idle takes the socket over (``_read_directly``): the hub stops
watching it for reading, and the reader polls it (spinning a moment first,
see ``_spin_until_ready``) and receives into a buffer of its thread's own,
through the channel's own ``_receive_locked`` under ``_recv_lock`` (large
payloads included), until a message is in the inbox; then it hands the
socket back. Only the happy path is the reader's: at an end of stream or an
error it goes back to waiting on the hub, which meets the same state of the
socket when it reads again and ends the channel as it always does.
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections import deque
from threading import Lock, local
from typing import TYPE_CHECKING

from ._buffers import Assembly
from ._common import _DELIVERED, _LIVE, _RELEASED, _STOPPED, LARGE_PAYLOAD
from ._framing import Decoder, Message
from ._inbox import ORPHAN_CHECK_INTERVAL
from ._signal import ReadySignal

__all__ = [
    "DIRECT_RECV_SIZE",
    "SPIN_BACKOFF_FIRST",
    "SPIN_BACKOFF_MAX",
    "_MAY_SPIN",
    "DirectReadMixin",
    "_thread_view",
]

#: What one receive on a reader's own thread asks for (see ``_read_directly``).
DIRECT_RECV_SIZE = 64 * 1024
#: After a spin that found nothing, a reader skips spinning for this many
#: waits, doubling up to the second number: a peer slower than the spin
#: costs a spin now and then, not one per message.
SPIN_BACKOFF_FIRST, SPIN_BACKOFF_MAX = 1, 64


def _cpus_for_us() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


#: Spinning only helps while another CPU can run the peer meanwhile.
_MAY_SPIN = _cpus_for_us() > 1
# Each reading thread's own receive buffer, for direct reads.
_thread_buffers = local()


def _thread_view() -> memoryview:
    try:
        view: memoryview = _thread_buffers.view
    except AttributeError:
        view = _thread_buffers.view = memoryview(bytearray(DIRECT_RECV_SIZE))
    return view


class DirectReadMixin:
    """Receiving on a waiting reader's thread, for :class:`~stockings._channel.Channel`."""

    # Set by ``Channel.__init__``, which documents them.
    sock: socket.socket
    decoder: Decoder
    inbox: deque[Message | Assembly]
    ended: bool
    _recv_lock: Lock
    _interest_lock: Lock
    _interest_state: int
    _direct_reader: bool
    _direct_wake: ReadySignal | None
    _direct_poller: select.poll | None
    _spin: float
    _spin_skip: int
    _spin_backoff: int
    _assembly: Assembly | None
    _last_size: int
    _reading: bool
    _peer_eof: bool
    _close_requested: bool

    if TYPE_CHECKING:
        # Channel's own.
        def _apply_interest(self) -> None: ...
        def _receive_locked(self, view: memoryview, direct: bool) -> int: ...

    def _read_directly(self, deadline: float | None) -> bool:
        """Receive on this reader's thread until a message arrives (no lock held).

        See the module's docstring. Bytes already waiting in the kernel are
        left to the hub: taking over pays only when there is nothing yet.

        Returns:
            Whether to receive directly again if the inbox is still empty.
        """
        with self._recv_lock:
            if (
                self.inbox
                or self._direct_reader
                or not self._may_read_directly()
                # Mid-message the hub is already at work on a stream, and
                # one more message, not its first byte, is what keeps us.
                or self._assembly is not None
                or self.decoder.in_progress
                # Large messages: the transfer, not a wake-up, is the cost,
                # and the hub's larger buffer and assembly move them best.
                or self._last_size >= LARGE_PAYLOAD
            ):
                return False
            with self._interest_lock:
                if self._interest_state != _LIVE:
                    return False
                poller = self._direct_poller
                if poller is None:
                    fd = self.sock.fileno()
                    if fd < 0:
                        # Closed behind the stocking's back: the orphan check
                        # of a reader waiting on the hub ends the channel.
                        return False
                    poller = self._direct_poller = select.poll()
                    poller.register(fd, select.POLLIN)
            if poller.poll(0):
                # Bytes are waiting, so the hub is awake for them or soon
                # will be: let it receive while this thread gets on with
                # the messages. Taking over pays when there is nothing yet.
                return False
            with self._interest_lock:
                if self._interest_state != _LIVE:
                    return False
                self._direct_reader = True
                # From now on the hub neither receives nor even wakes for it.
                if not self._apply_interest_for_reader():
                    self._direct_reader = False
                    return False
        blocking = False
        try:
            while True:
                # The probe above found nothing, so wait before receiving.
                if not blocking:
                    with self._interest_lock:
                        if self._interest_state != _LIVE or self._close_requested:
                            return False
                        if self._direct_wake is None:
                            # close() and _end set it to stop the poll below.
                            self._direct_wake = ReadySignal()
                            poller.register(self._direct_wake.fileno(), select.POLLIN)
                    blocking = True
                    ready = self._spin > 0 and self._spin_until_ready(poller, deadline)
                else:
                    ready = False
                if not ready:
                    wait = ORPHAN_CHECK_INTERVAL
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                        if wait <= 0:
                            return True
                    poller.poll(wait * 1000.0)
                with self._recv_lock:
                    if self.ended or self._close_requested or not self._may_read_directly():
                        return False
                    outcome = self._receive_locked(_thread_view(), True)
                if outcome == _DELIVERED:
                    return True
                if outcome == _STOPPED:
                    return False
        finally:
            with self._interest_lock:
                self._direct_reader = False
                wake = self._direct_wake
                if self._interest_state == _RELEASED:
                    if wake is not None:
                        wake.close()
                        self._direct_wake = None
                else:
                    if wake is not None:
                        wake.clear()
                    self._apply_interest_for_reader()

    def _spin_until_ready(self, poller: select.poll, deadline: float | None) -> bool:
        """Check the socket without sleeping for up to ``read_spin`` seconds.

        A thread put to sleep takes tens of microseconds to wake, more than
        a nearby peer takes to answer; so a reader expecting a reply keeps
        checking for a moment first. Each check releases the GIL.

        Returns:
            Whether the socket (or the wake-up) turned readable in time.
        """
        if self._spin_skip:
            self._spin_skip -= 1
            return False
        clock = time.monotonic
        until = clock() + self._spin
        if deadline is not None and deadline < until:
            until = deadline
        check = poller.poll
        while not check(0):
            if clock() >= until:
                self._spin_skip = self._spin_backoff
                self._spin_backoff = min(self._spin_backoff * 2, SPIN_BACKOFF_MAX)
                return False
        self._spin_backoff = SPIN_BACKOFF_FIRST
        return True

    def _apply_interest_for_reader(self) -> bool:
        """:meth:`_apply_interest` on a reader's thread, which must not raise.

        It fails only for a socket closed behind the stocking's back, which
        the hub ends (the reader's receive, or its orphan check, tells it).
        """
        try:
            self._apply_interest()
        except (KeyError, ValueError, OSError):
            return False
        return True

    def _may_read_directly(self) -> bool:
        return self._reading and not self._peer_eof
