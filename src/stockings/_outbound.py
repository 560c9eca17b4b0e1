"""A channel's outbound queue, and sending from the writers' threads.

``send`` encodes a message and either hands it straight to the socket, when
nothing is queued ahead of it and the last send was not a moment ago, or
appends it to the outbound queue (small messages into one batch buffer at
its tail). A writer sends the queue itself every ``WRITER_FLUSH_SIZE``
bytes; otherwise the hub thread flushes it (``Channel._flush_from_hub``).
Either way ``_send_queued`` hands it to the kernel in as few ``sendmsg``
calls as it allows. Everything here runs under ``_out_lock``, which also
guards every use of the socket for sending.
"""

from __future__ import annotations

import functools
import os
import socket
import ssl
import time
from collections import deque
from collections.abc import Iterable
from itertools import islice
from threading import Lock
from typing import TYPE_CHECKING

from ._buffers import Batch
from ._common import LARGE_PAYLOAD
from ._errors import ConnectionClosed, EndReason, MessageTooLarge, WriteTimeout, end_reason_for
from ._framing import _SHORT_HEADERS_BYTES, BytesLike, encode_header, payload_of
from ._hub import Hub
from ._options import ChannelOptions
from ._sync import LazyCondition

__all__ = [
    "BURST_GAP",
    "JOIN_SIZE",
    "MAX_IOVECS",
    "WRITER_FLUSH_SIZE",
    "_BYTES_HEADERS",
    "OutboundMixin",
]

#: The most buffers one ``sendmsg`` call is given.
MAX_IOVECS = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)
#: Without ``sendmsg`` small buffers are joined into one send of about this size.
JOIN_SIZE = 256 * 1024
#: A write this soon (seconds) after the last send is part of a burst: it is
#: queued rather than sent, so that a burst costs one ``sendmsg`` per batch
#: instead of one ``send`` per message. A request/response exchange writes
#: far less often than this and keeps its direct, lowest-latency send.
BURST_GAP = 5e-6
#: Once a burst has queued this many bytes, the writer sends them itself.
WRITER_FLUSH_SIZE = 64 * 1024
_clock = time.perf_counter

# Ready-made headers for the commonest writes: small bytes payloads.
_BYTES_HEADERS = [encode_header(length, False) for length in range(1024)]
# And what each such message takes on the wire, header included.
_BYTES_FRAMED = [len(header) + length for length, header in enumerate(_BYTES_HEADERS)]


class OutboundMixin:
    """The writing half of :class:`~stockings._channel.Channel`."""

    # Set by ``Channel.__init__``, which documents them.
    sock: socket.socket
    hub: Hub
    options: ChannelOptions
    end_reason: EndReason | None
    end_exception: BaseException | None
    _out_lock: Lock
    _drained: LazyCondition
    _out: deque[BytesLike]
    _out_bytes: int
    _drain_waiters: int
    _flush_scheduled: bool
    _small_limit: int
    _write_high_water: int
    _last_send: float
    _use_sendmsg: bool
    _closing: bool
    _close_requested: bool
    _peer_eof: bool

    if TYPE_CHECKING:
        # Channel's own, on the hub thread.
        def _flush_from_hub(self) -> None: ...
        def _end(self, reason: EndReason, exc: BaseException | None = None) -> None: ...

    def send(self, message: object, timeout: float | None = None) -> None:
        """Queue ``message`` whole, or send it at once if nothing is queued.

        Args:
            message: ``str`` or bytes-like.
            timeout: how long to wait for the outbound queue to drain below
                its low-water mark when it is above the high-water mark;
                ``None`` waits as long as it takes.

        Raises:
            TypeError: ``message`` is neither ``str`` nor bytes-like.
            MessageTooLarge: ``message`` is over ``max_message_size``.
            ConnectionClosed: the channel is closing or has ended.
            WriteTimeout: the queue did not drain within ``timeout``.
        """
        if type(message) is bytes and (size := len(message)) < self._small_limit:
            # The commonest write of a burst: small bytes joining the batch
            # at the queue's tail. All it needs is checked here; anything
            # else takes the general path below.
            # acquire/release rather than ``with``: a third of this path's
            # cost went to the context manager's calls.
            lock = self._out_lock
            lock.acquire()
            try:
                out = self._out
                queued = self._out_bytes
                if (
                    out
                    and type(tail := out[-1]) is Batch
                    and queued <= self._write_high_water
                    and not self._closing
                ):
                    tail += _BYTES_HEADERS[size]
                    tail += message
                    queued += _BYTES_FRAMED[size]
                    self._out_bytes = queued
                    if queued >= WRITER_FLUSH_SIZE:
                        self._flush_by_writer()
                    return
            finally:
                lock.release()
        if type(message) is bytes:
            # The commonest case, without the calls of the general one.
            payload: BytesLike = message
            length = len(message)
            header = _SHORT_HEADERS_BYTES[length] if length < 64 else encode_header(length, False)
        else:
            payload, is_text = payload_of(message)
            length = len(payload)
            header = encode_header(length, is_text)
        limit = self.options.max_message_size
        if limit is not None and length > limit:
            raise MessageTooLarge(length, limit)
        small = length < LARGE_PAYLOAD
        if small:
            parts: list[BytesLike] = []
        else:
            if not isinstance(payload, bytes):
                # The caller may change a mutable buffer once write returns.
                payload = bytes(payload)
            parts = [header, payload]
        total = len(header) + length
        with self._out_lock:
            if self._closing:
                raise self._closed_error()
            if self._out_bytes > self.options.write_high_water and not self.hub.in_hub_thread():
                self._wait_for_drain(timeout)
            out = self._out
            # Keep this test on the queue itself: a TLS channel parks an
            # empty marker in it to hold writes back during its handshake.
            if out:
                if not small:
                    out.extend(parts)
                elif type(tail := out[-1]) is Batch:
                    # Small messages join the batch at the tail: no object
                    # per message, and one buffer for the kernel.
                    tail += header
                    tail += payload
                else:
                    out.append(Batch(header + payload))
                self._out_bytes += total
                if self._out_bytes >= WRITER_FLUSH_SIZE and self._use_sendmsg:
                    self._flush_by_writer()
                return
            if (self._use_sendmsg or length < self._small_limit) and (
                _clock() - self._last_send < BURST_GAP
            ):
                # A burst: let the batch build up. The hub sends it as soon
                # as it runs (at once if this thread blocks, at worst after
                # one GIL switch interval), or this thread does at
                # WRITER_FLUSH_SIZE. Without sendmsg (TLS) only small
                # messages batch: one buffer, so one record per send instead
                # of one per message, where larger ones would be joined.
                if small:
                    out.append(Batch(header + payload))
                else:
                    out.extend(parts)
                self._out_bytes += total
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    self.hub.call_soon(self._flush_from_hub)
                return
            if small:
                parts = [header + payload]
            try:
                if len(parts) == 1:
                    sent = self.sock.send(parts[0])
                elif self._use_sendmsg:
                    sent = self.sock.sendmsg(parts)
                else:
                    sent = self.sock.send(header)
                    if sent == len(header):
                        try:
                            sent += self.sock.send(parts[1])
                        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
                            # The header went out: count it, or it would be sent twice.
                            pass
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                sent = 0
            except OSError as exc:
                raise self._lost_while_writing(exc) from exc
            self._last_send = _clock()
            if sent == total:
                return
            self._out.extend(parts)
            self._out_bytes += total
            self._consume(sent)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self.hub.call_soon(self._flush_from_hub)

    def _lost_while_writing(self, exc: OSError) -> ConnectionClosed:
        """A send from a writer's thread failed (``_out_lock`` held).

        The channel ends on the hub thread, which owns the selector; the
        writer gets the error to raise.
        """
        self._closing = True
        reason = end_reason_for(exc)
        self.hub.call_soon(functools.partial(self._end, reason, exc))
        return ConnectionClosed(f"connection lost while writing: {exc}", reason)

    def _flush_by_writer(self) -> None:
        """Send a burst's batch from the writer's thread (``_out_lock`` held)."""
        try:
            self._send_queued()
        except OSError as exc:
            raise self._lost_while_writing(exc) from exc
        self._last_send = _clock()
        if self._out and not self._flush_scheduled:
            # The kernel is full: the hub sends the rest when it can.
            self._flush_scheduled = True
            self.hub.call_soon(self._flush_from_hub)

    def send_many(self, messages: Iterable[object], timeout: float | None = None) -> None:
        """Queue several messages as one batch, in order, and send it at once.

        The batch is all or nothing: every message is encoded and checked
        before any is queued, and no other writer's message lands inside it.

        Args:
            messages: ``str`` or bytes-like objects.
            timeout: as for :meth:`send`.

        Raises:
            TypeError: a message is neither ``str`` nor bytes-like.
            MessageTooLarge: a message is over ``max_message_size``.
            ConnectionClosed: the channel is closing or has ended.
            WriteTimeout: the queue did not drain within ``timeout``.
        """
        limit = self.options.max_message_size
        small_limit = self._small_limit
        items: list[BytesLike] = []
        total = 0
        batch = Batch()
        for message in messages:
            if type(message) is bytes and len(message) < small_limit:
                batch += _BYTES_HEADERS[len(message)]
                batch += message
                continue
            payload, is_text = payload_of(message)
            length = len(payload)
            if limit is not None and length > limit:
                raise MessageTooLarge(length, limit)
            header = encode_header(length, is_text)
            if length < LARGE_PAYLOAD or not self._use_sendmsg:
                batch += header
                batch += payload
                continue
            # Large payloads go to sendmsg beside their header, uncopied
            # unless the caller could still change them.
            if batch:
                items.append(batch)
                total += len(batch)
                batch = Batch()
            items += (header, payload if isinstance(payload, bytes) else bytes(payload))
            total += len(header) + length
        if batch:
            items.append(batch)
            total += len(batch)
        if not items:
            return
        with self._out_lock:
            if self._closing:
                raise self._closed_error()
            if self._out_bytes > self.options.write_high_water and not self.hub.in_hub_thread():
                self._wait_for_drain(timeout)
            self._out.extend(items)
            self._out_bytes += total
            if self._use_sendmsg:
                self._flush_by_writer()
            elif not self._flush_scheduled:
                self._flush_scheduled = True
                self.hub.call_soon(self._flush_from_hub)

    def _wait_for_drain(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        self._drain_waiters += 1
        try:
            while self._out_bytes > self.options.write_low_water and not self._closing:
                if deadline is None:
                    self._drained.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise WriteTimeout(
                            f"outbound queue still held {self._out_bytes} bytes after {timeout} s"
                        )
                    self._drained.wait(remaining)
        finally:
            self._drain_waiters -= 1
        if self._closing:
            raise self._closed_error()

    def _closed_error(self) -> ConnectionClosed:
        reason = self.end_reason
        if reason is None:
            if self._peer_eof and not self._close_requested:
                return ConnectionClosed(
                    "the peer closed its side; flushing the last replies", EndReason.PEER_CLOSED
                )
            return ConnectionClosed("the stocking is closing", EndReason.CLOSED)
        error = ConnectionClosed(f"the stocking has ended: {reason.value}", reason)
        error.__cause__ = self.end_exception
        return error

    def _send_queued(self) -> None:
        """Send from the queue until it is empty or the kernel is full (``_out_lock`` held)."""
        out = self._out
        sock = self.sock
        while out:
            try:
                if len(out) == 1:
                    attempted = len(out[0])
                    sent = sock.send(out[0])
                elif self._use_sendmsg:
                    buffers = list(islice(out, MAX_IOVECS))
                    attempted = sum(map(len, buffers))
                    sent = sock.sendmsg(buffers)
                else:
                    joined = self._join_head()
                    attempted = len(joined)
                    sent = sock.send(joined)
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return
            self._consume(sent)
            if sent < attempted:
                return

    def _join_head(self) -> bytes:
        out = self._out
        parts: list[BytesLike] = []
        size = 0
        while out and size < JOIN_SIZE:
            part = out.popleft()
            parts.append(part)
            size += len(part)
        joined = b"".join(parts)
        out.appendleft(joined)
        return joined

    def _consume(self, sent: int) -> None:
        out = self._out
        self._out_bytes -= sent
        while sent:
            head = out[0]
            if sent >= len(head):
                out.popleft()
                sent -= len(head)
            else:
                out[0] = memoryview(head)[sent:]
                sent = 0
        if self._drain_waiters and self._out_bytes <= self.options.write_low_water:
            self._drained.notify_all()

    @property
    def queued_bytes(self) -> int:
        """Bytes written but not yet handed to the kernel."""
        return self._out_bytes

    @property
    def closing(self) -> bool:
        """True once no more messages may be written."""
        return self._closing
