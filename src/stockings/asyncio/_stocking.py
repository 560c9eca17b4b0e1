"""The asyncio stocking: whole messages over one connection, from coroutines.

Made by :func:`~stockings.asyncio.connect` or handed to a
:func:`~stockings.asyncio.serve` handler. Same wire, limits, hooks, end
reasons and exceptions as the threaded :class:`stockings.Stocking`.

Cancellation: ``read`` takes a message off the inbox only once it holds
one, in the same step as returning it, so a cancelled ``read`` loses
nothing (the message stays for the next read). ``write`` queues its whole
message before it waits for the queue to drain, so a cancelled ``write``
has queued all of its message, and it will be sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

from .._errors import EndReason, HandshakeFailed, check_iteration_end
from .._framing import DEFAULT_MAX_MESSAGE_SIZE, Message
from .._opening import DEFAULT_CLOSE_TIMEOUT, DEFAULT_READ_HIGH_WATER, DEFAULT_WRITE_HIGH_WATER
from .._options import ChannelOptions
from .._protocol import State
from .._sockopts import set_keepalive, set_nodelay
from ._connection import Connection

__all__ = ["Stocking"]


class Stocking:
    """One connection that sends and receives whole messages, for asyncio.

    Not made directly: :func:`~stockings.asyncio.connect` returns one, and
    :func:`~stockings.asyncio.serve` hands one to its handler. The options
    below are the keyword arguments those two pass on.

    Args:
        max_message_size: the longest message accepted from the peer, and
            allowed to ``write``, in bytes (default 64 MiB); ``None`` for no limit.
        write_high_water: ``write`` waits while more than this many bytes
            wait to be sent, until they drain to ``write_low_water``
            (default a quarter of the high mark).
        read_high_water: once received but unread messages exceed this many
            bytes, the stocking stops reading, so that TCP pushes back on
            the sender, until they drop to ``read_low_water``.
        idle_timeout: end with ``EndReason.TIMEOUT`` once nothing has
            arrived for this many seconds (``None``: never). Time spent not
            reading by our own flow control does not count.
        keepalive: TCP keepalive, as for :class:`stockings.Stocking`.
        nodelay: set ``TCP_NODELAY`` (default true).
        server_side: true on the accepting end (set by ``serve``).
    """

    def __init__(
        self,
        *,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        write_high_water: int = DEFAULT_WRITE_HIGH_WATER,
        write_low_water: int | None = None,
        read_high_water: int = DEFAULT_READ_HIGH_WATER,
        read_low_water: int | None = None,
        idle_timeout: float | None = None,
        keepalive: bool | float | None = None,
        nodelay: bool = True,
        server_side: bool = False,
    ) -> None:
        options = ChannelOptions(
            max_message_size,
            write_high_water,
            write_low_water,
            read_high_water,
            read_low_water,
            idle_timeout,
        )
        if keepalive not in (None, True, False) and not keepalive > 0:
            raise ValueError("keepalive must be True, None or a positive number of seconds")
        self.keepalive = keepalive
        self.nodelay = nodelay
        #: True on the accepting end.
        self.server_side = server_side
        self._gated = type(self).handshake is not Stocking.handshake
        self._connection = Connection(options, self._gated, self._made)
        self._protocol = self._connection.protocol
        self._handshake_complete: Any = not self._gated
        self._plain_pre_write = type(self).pre_write is Stocking.pre_write
        self._plain_post_read = type(self).post_read is Stocking.post_read
        #: The peer's address, as ``getpeername()`` returned it.
        self.addr: Any = None

    def _made(self, connection: Connection) -> None:
        self.addr = connection.extra("peername")
        sock = connection.extra("socket")
        if sock is not None:
            set_nodelay(sock, self.nodelay)
            if self.keepalive is not None and self.keepalive is not False:
                set_keepalive(sock, self.keepalive)

    def __repr__(self) -> str:
        state = "active" if self.active else f"ended ({self.end_reason})"
        return f"<{type(self).__name__} {self.addr} {state}>"

    # -------------------------------------------------------------- hooks

    async def handshake(self) -> Any:
        """Agree with the peer before any application message; override to customise.

        A coroutine, run once before ``connect`` returns (or before a
        server's handler starts). It talks to the peer with :meth:`_write`
        and :meth:`_read`. If it returns a false value or raises, the
        stocking ends with ``EndReason.HANDSHAKE_FAILED`` and a
        :class:`~stockings.HandshakeFailed` end exception.

        Returns:
            A true value on success; it becomes :attr:`handshake_complete`.
        """
        return True

    def pre_write(self, *args: Any, **kwargs: Any) -> Any:
        """Turn ``write``'s arguments into the message to send; override to customise."""
        return args[0]

    def post_read(self, message: Message) -> Any:
        """Turn a received message into what ``read`` returns; override to customise."""
        return message

    @property
    def handshake_complete(self) -> Any:
        """The value ``handshake`` returned (``True`` for the default), false until then."""
        return self._handshake_complete

    async def _run_handshake(self) -> None:
        """Run a custom handshake and open the gate, or end the stocking.

        Raises:
            HandshakeFailed: it failed; the stocking has ended.
        """
        if not self._gated:
            return
        failure: HandshakeFailed
        try:
            result = await self.handshake()
        except HandshakeFailed as exc:
            failure = exc
        except asyncio.CancelledError:
            self.abort()
            raise
        except Exception as exc:
            failure = HandshakeFailed(f"handshake raised {type(exc).__name__}: {exc}")
            failure.__cause__ = exc
        else:
            if result:
                self._handshake_complete = result
                self._protocol.open_gate()
                return
            failure = HandshakeFailed("handshake returned a false value")
        self._protocol.handshake_failed(failure)
        self._connection.fail_handshake_now()
        recorded = self._protocol.end_exception
        raise recorded if isinstance(recorded, HandshakeFailed) else failure

    # -------------------------------------------------------------- messages

    async def write(self, *args: Any, **kwargs: Any) -> None:
        """Queue one whole message, built by ``pre_write(*args, **kwargs)``.

        Returns at once unless more than ``write_high_water`` bytes are
        queued; then it waits until they drain to ``write_low_water``, like
        ``StreamWriter.drain()``. The message is queued whole before any
        wait, so a cancelled ``write`` has still queued all of it.

        Raises:
            NotReady: the handshake has not completed.
            TypeError: ``pre_write`` returned neither ``str`` nor bytes-like.
            MessageTooLarge: the message is over ``max_message_size``.
            ConnectionClosed: the stocking is closing or has ended.
        """
        message = args[0] if self._plain_pre_write else self.pre_write(*args, **kwargs)
        if self._connection.send(message):
            await self._connection.wait_drained()

    async def read(self, timeout: float | None = None) -> Any:
        """Return the next whole message, through ``post_read``.

        Args:
            timeout: how long to wait, in seconds; ``None`` (the default)
                waits until a message arrives or the stocking ends.

        Returns:
            The message; ``None`` when none came within ``timeout``, or once
            the stocking has ended and every message was read.

        Raises:
            NotReady: the handshake has not completed.
        """
        protocol = self._protocol
        # An empty inbox is the common case of a read that waits: asked
        # about directly, save that the gate must still refuse.
        message = protocol.next_message() if protocol.inbox or not protocol.gate_open else None
        connection = self._connection
        if message is None:
            if timeout is None:
                # Waiting without a deadline, the commonest read: the wait
                # done here saves a coroutine and its clock reads.
                inbox = protocol.inbox
                readers = connection.readers
                while not inbox and protocol.state is not State.ENDED:
                    waiter: asyncio.Future[None] = connection.loop.create_future()
                    readers.append(waiter)
                    try:
                        await waiter
                    finally:
                        if waiter in readers:
                            readers.remove(waiter)
            elif protocol.ended:
                return None
            else:
                await connection.wait_readable(timeout)
            message = protocol.next_message()
            if message is None:
                return None
        if not connection.reading:
            connection.resume_if_wanted()
        return message if self._plain_post_read else self.post_read(message)

    def read_nowait(self) -> Any:
        """Return the next whole message at once, or ``None`` if none is here (1.2.3's ``read``).

        Raises:
            NotReady: the handshake has not completed.
        """
        message = self._protocol.next_message()
        if message is None:
            return None
        self._connection.resume_if_wanted()
        return message if self._plain_post_read else self.post_read(message)

    async def _write(self, message: object) -> None:
        """Send a message as is, bypassing ``pre_write`` and the gate; for handshakes."""
        if self._connection.send(message, handshake=True):
            await self._connection.wait_drained()

    async def _read(self, timeout: float | None = None) -> Message | None:
        """Receive a message as is, bypassing ``post_read`` and the gate; for handshakes."""
        protocol = self._protocol
        message = protocol.next_message(handshake=True)
        if message is None and not protocol.ended:
            await self._connection.wait_readable(timeout)
            message = protocol.next_message(handshake=True)
        if message is not None:
            self._connection.resume_if_wanted()
        return message

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        """Yield messages until the stocking ends and every one was read.

        Ends quietly after a clean end or an abort here; after any other end
        raises :class:`~stockings.ConnectionClosed`, chained to the cause.
        """
        while True:
            message = await self.read()
            if message is None:
                break
            yield message
        check_iteration_end(self.end_reason, self.end_exception)

    # -------------------------------------------------------------- state

    @property
    def active(self) -> bool:
        """True until the stocking is closing or has ended."""
        return self._protocol.state is State.OPEN

    @property
    def ended(self) -> bool:
        """True once the connection is over; received messages may still be unread."""
        return self._protocol.ended

    @property
    def end_reason(self) -> EndReason | None:
        """Why the stocking ended, or ``None`` while it has not."""
        return self._protocol.end_reason

    @property
    def end_exception(self) -> BaseException | None:
        """The exception behind the end (a socket error, a protocol error...), if any."""
        return self._protocol.end_exception

    @property
    def queued_bytes(self) -> int:
        """Written bytes not yet handed to the kernel."""
        return self._protocol.pending_bytes + self._connection_backlog()

    def _connection_backlog(self) -> int:
        transport = self._connection.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    @property
    def unread_bytes(self) -> int:
        """How much received data waits to be read (bytes, or characters for text)."""
        return self._protocol.unread

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The transport's ``get_extra_info`` (``"peername"``, ``"ssl_object"``...)."""
        return self._connection.extra(name, default)

    async def close(self, timeout: float | None = DEFAULT_CLOSE_TIMEOUT) -> None:
        """End the connection cleanly: flush what was written, then shut down.

        Waits for the end: the flush, our FIN and the peer's, for up to
        ``timeout`` seconds in all; a flush still going then ends the
        stocking with ``EndReason.TIMEOUT``. Messages already received stay
        readable. Idempotent. Cancelling it leaves the close running, still
        bounded by ``timeout``.
        """
        self._connection.begin_close(timeout)
        await asyncio.shield(self._connection.ended)

    def abort(self) -> None:
        """End the connection now, dropping whatever is still queued (the peer sees a reset)."""
        self._connection.abort()

    async def wait_closed(self) -> None:
        """Wait until the connection has ended and its transport is released."""
        await asyncio.shield(self._connection.ended)

    async def __aenter__(self) -> Stocking:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            self.abort()
            return
        await self.close()
