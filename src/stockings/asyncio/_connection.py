"""The asyncio binding of one connection: a ``Protocol`` driving the sans-IO core.

asyncio calls :class:`Connection` when bytes, the end of the stream or a
buffer mark arrive; it feeds them to :class:`~stockings._protocol.Protocol`
and acts on its decisions: pause or resume reading, release waiting writers,
half-close, close or reset the transport. The rules themselves (end reasons,
marks, the idle rule, the handshake gate) live only in the protocol.

The first write of each turn of the event loop goes to the transport at
once; the writes after it in the same turn gather in the protocol and
leave together at the end of the turn (or every ``FLUSH_SIZE`` bytes, or
after ``MAX_HOLD``), so a burst of small messages costs two ``send`` calls,
not one each, and a request or reply costs no extra turn. asyncio does not
say when a turn ends, and a callback at the end of each costs a small
message as much as the rest of its way out, so a new turn is
taken to begin when bytes arrive, when the gathered writes leave, or
``MAX_HOLD`` after the last write that left at once: a reply, and a request
after one, never wait; a write some turns after a lone one, with nothing
received between, may wait for the end of its turn, as in a burst.

A :class:`asyncio.BufferedProtocol`: the transport receives into a buffer
that is reused. A plain ``Protocol`` gets a fresh ``bytes`` per receive,
which the transport allocates at its full receive size (256 KiB) and
shrinks: for a small message that costs more than the rest of its trip
through the loop. All connections of a thread share one buffer: a loop
runs in one thread, a receive is handed to ``buffer_updated`` before the
next one starts, and the decoder copies out whatever it keeps (one copy of
a run of small messages, then a slice each), so nothing refers to the
buffer once ``buffer_updated`` returns.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from .._errors import EndReason
from .._options import ChannelOptions
from .._protocol import Protocol, State
from .._sockopts import reset_on_close
from .._timeouts import bounded

__all__ = ["FLUSH_SIZE", "MAX_HOLD", "Connection"]

#: The receive buffer shared by the connections of a thread, in bytes.
RECEIVE_SIZE = 256 * 1024
_shared = threading.local()
#: A writer hands what is queued to the transport itself past this many bytes.
FLUSH_SIZE = 64 * 1024
#: The longest (seconds) a write waits for the end of its loop's turn.
MAX_HOLD = 1e-3
_clock = time.perf_counter


class Connection(asyncio.BufferedProtocol):
    """One connection's binding to asyncio; see the module notes.

    Args:
        options: the limits in force.
        gated: hold application messages until :meth:`Protocol.open_gate`.
        on_made: called with this connection once its transport exists.
    """

    def __init__(
        self,
        options: ChannelOptions,
        gated: bool,
        on_made: Callable[[Connection], None] | None = None,
    ) -> None:
        self.protocol = Protocol(options, gated=gated)
        self.options = options
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.on_made = on_made
        #: Set once the transport is gone and the end is final.
        self.ended = self.loop.create_future()
        #: Futures of the reads waiting for a message or the end.
        self.readers: list[asyncio.Future[None]] = []
        self._writers: list[asyncio.Future[None]] = []
        self._flush_handle: asyncio.Handle | None = None
        self._idle_handle: asyncio.TimerHandle | None = None
        self._close_handle: asyncio.TimerHandle | None = None
        #: False while reading is paused (by the protocol's read marks).
        self.reading = True
        self._released = False
        self._half_close = True
        self._draining = False
        self._turn_began = 0.0
        #: A write left at once (at ``_wrote_at``) since bytes last came in
        #: or the queue was flushed: the writes after it gather.
        self._wrote = False
        self._wrote_at = 0.0

    # ------------------------------------------------------------ asyncio's calls

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without deriving from it.
        self.transport = transport = cast(asyncio.Transport, transport)
        # Told when the buffer passes the low mark either way, so that
        # writers blocked above the high mark learn when it is reached.
        low = self.options.write_low_water
        transport.set_write_buffer_limits(high=low, low=low)
        self._half_close = transport.can_write_eof()
        if self.options.idle_timeout is not None:
            self._check_idle()
        if self.on_made is not None:
            on_made, self.on_made = self.on_made, None
            on_made(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        try:
            return _shared.view  # type: ignore[no-any-return]
        except AttributeError:
            _shared.view = view = memoryview(bytearray(RECEIVE_SIZE))
            return view

    def buffer_updated(self, nbytes: int) -> None:
        view = _shared.view
        self._wrote = False
        if self.protocol.receive_small(view, nbytes):
            # A lone small message (a request, a reply): in the inbox
            # already, so only the readers and the read mark are left.
            readers = self.readers
            if readers:
                for waiter in readers:
                    if not waiter.done():
                        waiter.set_result(None)
                readers.clear()
            if self.protocol.received.paused:
                self._act()
            return
        self.data_received(view[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        """Take in received bytes (``buffer_updated`` passes a view of the buffer)."""
        protocol = self.protocol
        self._wrote = False
        protocol.receive_data(data)
        if self.readers and (protocol.inbox or protocol.should_release):
            self._wake(self.readers)
        if not protocol.reading_wanted or protocol.should_release:
            self._act()

    def eof_received(self) -> bool:
        self.protocol.receive_eof()
        self._wake(self.readers)
        self._act()
        # Keep our side open: replies queued before the peer's FIN still go
        # out. (A TLS transport cannot half-close, and says so if asked.)
        return self._half_close

    def connection_lost(self, exc: Exception | None) -> None:
        transport = self.transport
        if transport is not None and not self._released and not transport.is_closing():
            # Lost under us (Python 3.10's TLS does so on close_notify): the
            # transport still counts as open until it is closed.
            transport.close()
        self._released = True
        self.protocol.connection_lost(exc)
        for handle in (self._flush_handle, self._idle_handle, self._close_handle):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._idle_handle = self._close_handle = None
        self._wake(self.readers)
        self._wake(self._writers)
        if not self.ended.done():
            self.ended.set_result(None)
        self.transport = None

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.protocol.set_backlog(self.transport.get_write_buffer_size())

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.protocol.set_backlog(self.transport.get_write_buffer_size())
        if not self.protocol.writers_blocked:
            self._wake(self._writers)
        self._act()

    # ------------------------------------------------------------ from the stocking

    def send(self, message: object, handshake: bool = False) -> bool:
        """Queue one message; return whether the writer should wait for a drain."""
        protocol = self.protocol
        transport = self.transport
        if (
            self._flush_handle is None
            and (not self._wrote or _clock() - self._wrote_at > MAX_HOLD)
            and transport is not None
            and not self._released
        ):
            # The head of a turn's writes (a request, a reply, the head of a
            # burst) leaves at once: no extra turn on a round trip, nor a
            # callback to schedule. See the module notes.
            data = protocol.send_now(message, handshake=handshake)
            transport.write(data)
            self._wrote = True
            self._wrote_at = _clock()
            blocked = protocol.set_backlog(transport.get_write_buffer_size())
            if not blocked and self._writers:
                self._wake(self._writers)
            return blocked
        protocol.send(message, handshake=handshake)
        if self._flush_handle is None:
            # Writes after it gather for one send at the end of the turn.
            self._flush_handle = self.loop.call_soon(self.flush)
            self._turn_began = _clock()
        elif protocol.sending.out_bytes >= FLUSH_SIZE or _clock() - self._turn_began > MAX_HOLD:
            # A long burst, or a writer that keeps the loop busy: no message
            # waits behind it for long.
            self.flush(keep_scheduled=True)
            self._turn_began = _clock()
        return protocol.writers_blocked

    def flush(self, keep_scheduled: bool = False) -> None:
        """Hand everything queued to the transport."""
        if not keep_scheduled:
            self._flush_handle = None
            self._wrote = False
        transport = self.transport
        if transport is None or self._released:
            return
        data = self.protocol.data_to_send()
        if data:
            transport.write(data)
            self.protocol.set_backlog(transport.get_write_buffer_size())
            if not self.protocol.writers_blocked and self._writers:
                self._wake(self._writers)
        if self.protocol.state is not State.OPEN:
            self._act()

    async def wait_readable(self, timeout: float | None, handshake: bool = False) -> bool:
        """Wait until a message is in or the connection ended; false if ``timeout`` passed."""
        timeout = bounded(timeout)
        protocol = self.protocol
        deadline = None if timeout is None else self.loop.time() + timeout
        while not protocol.inbox and not protocol.ended:
            waiter: asyncio.Future[None] = self.loop.create_future()
            self.readers.append(waiter)
            try:
                if deadline is None:
                    await waiter
                else:
                    remaining = deadline - self.loop.time()
                    if remaining <= 0:
                        return False
                    await asyncio.wait_for(waiter, remaining)
            except asyncio.TimeoutError:
                return False
            finally:
                if waiter in self.readers:
                    self.readers.remove(waiter)
        return True

    async def wait_drained(self) -> None:
        """Wait until writers are no longer blocked (or the connection is closing)."""
        while self.protocol.writers_blocked and not self._released:
            waiter: asyncio.Future[None] = self.loop.create_future()
            self._writers.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._writers:
                    self._writers.remove(waiter)

    def resume_if_wanted(self) -> None:
        """After a read: resume reading once the unread messages fell below the low mark."""
        if not self.reading and self.protocol.reading_wanted and not self._released:
            self.reading = True
            if self.transport is not None:
                self.transport.resume_reading()

    def begin_close(self, timeout: float | None) -> None:
        """Start a clean close: flush, half-close, wait for the peer, within ``timeout``."""
        timeout = bounded(timeout)
        protocol = self.protocol
        if protocol.close_requested or protocol.ended:
            return
        protocol.close()
        self._wake(self._writers)
        if timeout is not None and self.transport is not None:
            self._close_handle = self.loop.call_later(timeout, self._close_timed_out)
        self.flush()
        self._act()

    def abort(self) -> None:
        """End now: drop what is queued, reset the connection."""
        self.protocol.abort()
        self._act()

    def fail_handshake_now(self) -> None:
        """Release the transport after the protocol recorded a handshake failure."""
        self._act()

    # ------------------------------------------------------------ decisions

    def _act(self) -> None:
        """Do what the protocol's decisions ask for."""
        protocol = self.protocol
        transport = self.transport
        if transport is None or self._released:
            return
        if protocol.state is State.CLOSING and not self._draining:
            # Closing: be told when the transport's buffer is empty, not
            # just below the low mark, so the FIN follows the last byte.
            self._draining = True
            transport.set_write_buffer_limits(high=0, low=0)
            protocol.set_backlog(transport.get_write_buffer_size())
        if protocol.should_shut_write and self._half_close:
            try:
                transport.write_eof()
            except OSError as exc:
                # The peer reset first: the close cannot be clean.
                protocol.fail(exc)
        if protocol.should_shut_write:
            protocol.write_shut()
            self._wake(self.readers)
            if not self._half_close:
                protocol.close_timed_out()  # nothing to wait for: no FIN was sent
        if protocol.should_release:
            self._release(transport)
            return
        if self.reading and not protocol.reading_wanted and not protocol.peer_eof:
            self.reading = False
            transport.pause_reading()

    def _release(self, transport: asyncio.Transport) -> None:
        self._released = True
        self._wake(self.readers)
        self._wake(self._writers)
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        if self.protocol.should_reset:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                reset_on_close(sock)
            transport.abort()
        elif self.protocol.end_reason is EndReason.CLOSED or self.protocol.peer_eof:
            transport.close()
        else:
            # A broken stream or a timeout: what is buffered is not owed to anyone.
            transport.abort()

    def _close_timed_out(self) -> None:
        self._close_handle = None
        self.protocol.close_timed_out()
        self._act()

    def _check_idle(self) -> None:
        self._idle_handle = None
        delay = self.protocol.check_idle(self.loop.time())
        if delay is None:
            self._act()
            return
        self._idle_handle = self.loop.call_later(delay, self._check_idle)

    @staticmethod
    def _wake(waiters: list[asyncio.Future[None]]) -> None:
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        waiters.clear()

    def extra(self, name: str, default: Any = None) -> Any:
        """The transport's ``get_extra_info(name)``, once it exists."""
        if self.transport is None:
            return default
        return self.transport.get_extra_info(name, default)
