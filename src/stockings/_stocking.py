"""The user-facing stocking: a connected socket that sends and receives whole messages.

It wraps a socket in a :class:`~stockings._channel.Channel`, and adds what
1.2.3 users know: the ``pre_write`` / ``post_read`` hooks, the ``handshake``
(its side in :class:`~stockings._handshake.Handshaking`) and the camelCase
names (:mod:`~stockings._compat`).
"""

from __future__ import annotations

import selectors
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Generic

from . import _compat
from ._channel import DEFAULT_LINGER
from ._closing import ClosesOnExit
from ._encoding import NO_MESSAGE, no_message
from ._epoll import EpollSelector, epoll_available
from ._errors import EndReason, NotReady, check_iteration_end
from ._framing import DEFAULT_MAX_MESSAGE_SIZE, Message
from ._handshake import Handshaking
from ._hub import Hub
from ._log import log_opened
from ._opening import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_READ_HIGH_WATER,
    DEFAULT_READ_SPIN,
    DEFAULT_WRITE_HIGH_WATER,
    open_channel,
)
from ._options import ChannelOptions, connected_peer, peer_label
from ._served import Served
from ._shutdown import watch_for_abandonment
from ._timeouts import option_seconds
from ._typing import (
    Outgoing,
    ReadT,
    WriteP,
    variadic_signature,
    with_default_write_params,
)

__all__ = ["Stocking"]


class Stocking(ClosesOnExit, Handshaking, Generic[ReadT, WriteP]):
    """A connected socket that sends and receives whole messages.

    ``write`` queues a message whole; the peer's ``read`` returns it whole,
    as ``str`` or ``bytes`` as it was written. A background hub thread does
    the I/O, so neither call blocks on the network (``read`` waits only when
    asked to with ``timeout``). By default all stockings of a flavour share
    one hub thread. For type checkers the class is generic in what ``read``
    returns and in what ``write`` takes: a plain ``Stocking`` is
    ``Stocking[str | bytes, [str | Buffer]]`` (``docs/topics/addresses.md``).

    The keyword options bound memory and waiting (``max_message_size``, the
    read and write water marks, ``write_timeout``, ``idle_timeout``), choose
    the hub (``hub``, ``private``) and tune the connection (``nodelay``,
    ``keepalive``, ``read_spin``, ``linger``, ``half_close``).
    ``docs/reference/options.md`` is their one reference: each option with
    its default and meaning.

    Args:
        sock: a connected stream socket, owned (and set non-blocking) from now on.

    Raises:
        TypeError: ``sock`` is not a ``socket.socket``, or an option is unknown.
        ValueError: ``sock`` is not a stream socket, is listening, or already
            belongs to a stocking; an option is out of range; the flavour
            cannot serve the socket's descriptor.
        OSError: ``sock`` is not connected.
    """

    #: The name of this flavour's shared hub.
    flavour: ClassVar[str] = "default"
    #: Makes the selector the flavour's hubs wait with: epoll where there
    #: is one, through a selector that lets a reader take its socket over.
    selector_factory: ClassVar[Callable[[], selectors.BaseSelector]] = (
        EpollSelector if epoll_available else selectors.DefaultSelector
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _compat.follow_overrides(cls)
        cls._plain_pre_write = cls.pre_write is Stocking.pre_write
        cls._plain_post_read = cls.post_read is Stocking.post_read
        cls._plain_read = cls._plain_post_read and cls.read is Stocking.read
        cls._plain_write = cls._plain_pre_write and cls.write is Stocking.write

    def __init__(
        self,
        sock: socket.socket,
        *,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        write_high_water: int = DEFAULT_WRITE_HIGH_WATER,
        write_low_water: int | None = None,
        write_timeout: float | None = None,
        read_high_water: int = DEFAULT_READ_HIGH_WATER,
        read_low_water: int | None = None,
        hub: Hub | None = None,
        private: bool = False,
        nodelay: bool = True,
        keepalive: bool | float | None = None,
        idle_timeout: float | None = None,
        read_spin: float = DEFAULT_READ_SPIN,
        linger: float | None = DEFAULT_LINGER,
        half_close: bool = False,
    ) -> None:
        #: The wrapped socket.
        self.sock = sock
        #: The peer's address, as ``getpeername()`` returned it.
        self.addr = connected_peer(sock)
        #: What logs, thread names and ``repr`` call the peer.
        self._peer = peer_label(self.addr, sock)
        write_timeout = option_seconds(write_timeout, "write_timeout")
        custom_handshake = self._has_custom_handshake()
        options = ChannelOptions(
            max_message_size,
            write_high_water,
            write_low_water,
            read_high_water,
            read_low_water,
            idle_timeout,
            read_spin,
            half_close,
        )
        self._channel = channel = open_channel(
            self, options, hub, private, nodelay, keepalive, linger, custom_handshake
        )
        peer = self._peer
        channel.outbox.write_timeout = write_timeout
        # Bound once: write and read are the hottest calls there are.
        self._send = channel.outbox.send
        self._inbox = inbox = channel.inbox
        # What the library's other layers may use: Server and close_all the
        # connection (its narrow protocol), a Waiter the inbox.
        self._served: Served = channel
        self._wait_source = inbox
        self._receive = inbox.receive
        self._receive_all = inbox.receive_all
        if self._plain_read and not custom_handshake:
            # Nothing for read() to add: the inbox's own method is read(),
            # a call less per message, and no moment between the two calls
            # where a signal could lose one.
            self.read = self._receive  # type: ignore[method-assign,assignment]
        if self._plain_write and not custom_handshake:
            # The same for write(): the outbox's method takes write's
            # arguments, and a message as the default pre_write returns it.
            self.write = self._send  # type: ignore[method-assign]
        self._finalizer = watch_for_abandonment(self, channel)
        channel.start()
        log_opened(peer, type(self).__name__)
        self._start_handshake(channel, peer, custom_handshake)

    @classmethod
    def _max_wait(cls) -> float | None:
        """The longest one wait of the loop may last; ``None`` for no bound."""
        return None

    def __repr__(self) -> str:
        state = "active" if self.active else f"ended ({self.end_reason})"
        return f"<{type(self).__name__} {self._peer} {state}>"

    # -------------------------------------------------------------- messages

    def pre_write(self, *args: WriteP.args, **kwargs: WriteP.kwargs) -> Outgoing:
        """Turn ``write``'s arguments into the message to send; override to customise.

        Returns the first positional argument by default, so that
        ``write("text")`` sends ``"text"``. Must return ``str`` or a
        bytes-like object. Raises ``TypeError`` without a positional argument.
        """
        try:
            message = args[0]
        except IndexError:
            raise no_message(kwargs) from None
        return message  # type: ignore[return-value]  # checked when it is sent

    def post_read(self, message: Message) -> ReadT:
        """Turn a received message into what ``read`` returns; override to customise."""
        return message  # type: ignore[return-value]  # ReadT is Message unless overridden

    if TYPE_CHECKING:

        def write(self, *args: WriteP.args, **kwargs: WriteP.kwargs) -> None: ...

    else:

        @variadic_signature
        def write(self, message=NO_MESSAGE, /, *args, **kwargs):
            """Send one whole message, built by ``pre_write(*args, **kwargs)``.

            Safe from many threads at once: messages never interleave. Returns
            once the message is queued (or sent). A Ctrl-C inside it leaves the
            message queued whole or not at all (``docs/topics/interrupts.md``).

            Raises:
                NotReady: the handshake has not completed.
                TypeError: no message was given, or ``pre_write`` returned
                    neither ``str`` nor bytes-like.
                MessageTooLarge: the message is over ``max_message_size``.
                ConnectionClosed: the stocking is closing or has ended.
                WriteTimeout: the outbound queue stayed above its high-water mark
                    for ``write_timeout`` seconds; the message was not queued.
            """
            # The message is a parameter of its own, so that the commonest
            # call, with one argument, packs no tuple; and without an
            # override pre_write is not called: both are a good part of a
            # small write's cost.
            if not self._handshake_complete:
                raise NotReady("the handshake has not completed")
            if self._plain_pre_write:
                if message is NO_MESSAGE:
                    raise no_message(kwargs)
            elif message is NO_MESSAGE:
                message = self.pre_write(**kwargs)
            else:
                message = self.pre_write(message, *args, **kwargs)
            self._send(message)

    def read(self, timeout: float | None = 0.0) -> ReadT | None:
        """Return the next whole message, through ``post_read``, or ``None``.

        A Ctrl-C inside it leaves the message first in line for the next call.

        Args:
            timeout: ``0`` (the default, as in 1.2.3) returns at once; a number
                waits up to that many seconds; ``None`` waits until a message
                arrives or the stocking ends.

        Returns:
            The message; ``None`` when none came in time, or when the stocking
            has ended and every received message has been read.

        Raises:
            NotReady: the handshake has not completed.
        """
        if not self._handshake_complete:
            raise NotReady("the handshake has not completed")
        message = self._receive(timeout)
        if message is None or self._plain_post_read:
            return message  # type: ignore[return-value]  # ReadT is Message then
        return self.post_read(message)

    def write_many(self, messages: Iterable[Any]) -> None:
        """Send several whole messages at once, each built by ``pre_write(message)``.

        All or nothing (every message is checked before any is queued), with
        no other thread's message inside the batch, and cheaper per message
        than as many ``write`` calls (``docs/topics/performance.md``).

        Raises:
            NotReady: the handshake has not completed.
            TypeError: a message is neither ``str`` nor bytes-like.
            MessageTooLarge: a message is over ``max_message_size``.
            ConnectionClosed: the stocking is closing or has ended.
            WriteTimeout: as for :meth:`write`; nothing was queued.
        """
        if not self._handshake_complete:
            raise NotReady("the handshake has not completed")
        if not self._plain_pre_write:
            # Each item is pre_write's one argument, whatever WriteP says.
            pre_write: Callable[[Any], Outgoing] = self.pre_write
            messages = [pre_write(message) for message in messages]
        self._channel.outbox.send_many(messages)

    def read_all(self, timeout: float | None = 0.0) -> list[ReadT]:
        """Return every message received so far, through ``post_read``, oldest first.

        Waits for the first one as :meth:`read` does with ``timeout``; returns
        an empty list when none came in time. Raises :class:`NotReady` before
        the handshake has completed.
        """
        if not self._handshake_complete:
            raise NotReady("the handshake has not completed")
        messages = self._receive_all(timeout)
        if self._plain_post_read:
            return messages  # type: ignore[return-value]  # ReadT is Message then
        return [self.post_read(message) for message in messages]

    def _write(self, message: Outgoing) -> None:
        """Send a message as is, bypassing ``pre_write``; for handshakes."""
        self._send(message)

    def _read(self, timeout: float | None = 0.0) -> Message | None:
        """Receive a message as is, bypassing ``post_read``, as :meth:`read`; for handshakes."""
        return self._receive(timeout)

    def __iter__(self) -> Iterator[ReadT]:
        """Yield messages until the stocking ends and every one has been read.

        Ends quietly after a clean end; after any other it raises
        :class:`ConnectionClosed`, chained to the cause. Raises
        :class:`NotReady` before the handshake has completed.
        """
        if not self._handshake_complete:
            raise NotReady("the handshake has not completed")
        receive = self._receive
        post_read = None if self._plain_post_read else self.post_read
        while True:
            message = receive(None)
            if message is None:
                break
            # Without an override, no call between the read and the yield
            # where a signal could land and lose the message (so no cast():
            # without an override, ReadT is what receive returns).
            yield message if post_read is None else post_read(message)  # type: ignore[misc]
        check_iteration_end(self._channel.end_reason, self._channel.end_exception)

    # ------------------------------------------------------------------ state

    def fileno(self) -> int:
        """A descriptor, unique to this stocking, readable while ``read()`` has a message.

        Also readable once the stocking has ended; made on first call, closed
        by :meth:`close` (``docs/howto/waiting.md``).
        """
        return self._inbox.readiness_fd()

    def write_data_queued(self) -> bool:
        """True while written bytes have not yet been handed to the socket."""
        return self._channel.outbox.queued_bytes > 0

    @property
    def queued_bytes(self) -> int:
        """How many written bytes have not yet been handed to the socket."""
        return self._channel.outbox.queued_bytes

    @property
    def linger(self) -> float | None:
        """Seconds queued messages may take to flush at interpreter exit (see ``linger=``)."""
        return self._channel.linger

    @linger.setter
    def linger(self, value: float | None) -> None:
        self._channel.linger = option_seconds(value, "linger")

    @property
    def write_timeout(self) -> float | None:
        """Seconds ``write`` may wait for the outbound queue to drain; ``None``: no bound."""
        return self._channel.outbox.write_timeout

    @write_timeout.setter
    def write_timeout(self, value: float | None) -> None:
        self._channel.outbox.write_timeout = option_seconds(value, "write_timeout")

    @property
    def messages_sent(self) -> int:
        """How many messages ``write`` (and ``write_many``) queued: sent unless it ends first."""
        return self._channel.outbox.messages_sent

    @property
    def messages_received(self) -> int:
        """How many whole messages arrived (read or still waiting to be read)."""
        return self._inbox.messages_received

    @property
    def bytes_sent(self) -> int:
        """How many bytes of the message stream (headers too; before TLS) the kernel took."""
        return self._channel.outbox.bytes_sent

    @property
    def bytes_received(self) -> int:
        """How many bytes of the message stream (headers too; after TLS) arrived."""
        return self._channel.receiver.bytes_received

    @property
    def unread_bytes(self) -> int:
        """How much received data waits to be read (bytes, or characters for text)."""
        return self._inbox.unread_bytes

    @property
    def active(self) -> bool:
        """True until the stocking is closing or has ended (1.2.3's flag)."""
        return not self._channel.outbox.closing

    @property
    def ended(self) -> bool:
        """True once the connection is over; received messages may still be unread."""
        return self._channel.ended

    @property
    def peer_closed(self) -> bool:
        """True once the peer has closed its side cleanly (see ``half_close``)."""
        return self._channel.peer_closed

    @property
    def end_reason(self) -> EndReason | None:
        """Why the stocking ended, or ``None`` while it has not (``docs/topics/closing.md``)."""
        return self._channel.end_reason

    @property
    def end_exception(self) -> BaseException | None:
        """The exception behind the end (a socket error, a protocol error...), if any."""
        return self._channel.end_exception

    def close(self, timeout: float | None = DEFAULT_CLOSE_TIMEOUT, flush: bool = True) -> None:
        """End the connection; messages already received stay readable.

        With ``flush`` whatever was written before is sent first, for up to
        ``timeout`` seconds; otherwise (:meth:`abort`) it is dropped. Returns
        once the socket is closed. Idempotent (``docs/topics/closing.md``).
        """
        self._channel.close(flush=flush, timeout=timeout)
        self._inbox.release_signal()
        self._finalizer.detach()

    def abort(self) -> None:
        """End the connection now, dropping whatever is still queued to send."""
        self.close(flush=False)

    if not TYPE_CHECKING:
        __class_getitem__ = classmethod(with_default_write_params)

    #: Whether ``pre_write`` / ``post_read`` are this class's defaults, so
    #: that ``write`` and ``read`` can skip calling them (set per subclass).
    _plain_pre_write: ClassVar[bool] = True
    _plain_post_read: ClassVar[bool] = True
    #: And ``read`` / ``write`` with them.
    _plain_read: ClassVar[bool] = True
    _plain_write: ClassVar[bool] = True

    if TYPE_CHECKING:
        # The 1.2.3 spellings, declared for type checkers; _compat installs them.
        preWrite = pre_write
        postRead = post_read
        writeDataQueued = write_data_queued


_compat.install(Stocking)
