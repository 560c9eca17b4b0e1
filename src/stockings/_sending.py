"""The sans-IO protocol's outgoing side: framing, the send queue, the write marks.

Apart from :class:`~stockings._protocol.Protocol`, which follows the
connection's life, because writing keeps books of its own: what is queued
here, what the binding took but has not handed on (its backlog), and
whether writers must wait between the write marks. The lifecycle says
whether a write may go; the protocol drops the queue when the connection
ends.
"""

from __future__ import annotations

from ._encoding import BYTES_HEADERS, encode_header, payload_of
from ._errors import MessageTooLarge, NotReady
from ._lifecycle import Lifecycle, State
from ._options import ChannelOptions

__all__ = ["Sending"]

_SMALL = len(BYTES_HEADERS)


class Sending:
    """One connection's outgoing queue and write marks (a protocol's :attr:`sending`).

    Args:
        options: the limits in force (write marks, ``max_message_size``).
        lifecycle: the connection's lifecycle, asked whether a write may go.
    """

    __slots__ = ("_limit", "backlog", "blocked", "lifecycle", "options", "out", "out_bytes")

    def __init__(self, options: ChannelOptions, lifecycle: Lifecycle) -> None:
        self.options = options
        self.lifecycle = lifecycle
        limit = options.max_message_size
        self._limit = limit if limit is not None else 1 << 80
        #: Framed messages queued, and their size in bytes.
        self.out: list[bytes] = []
        self.out_bytes = 0
        #: What the binding has taken from data_to_send but not yet handed on.
        self.backlog = 0
        #: Whether the write marks hold writers back (the lifecycle aside).
        self.blocked = False

    def send(self, message: object, *, handshake: bool = False) -> int:
        """Queue one whole message; return how many bytes it takes on the wire.

        Args:
            message: ``str`` or bytes-like.
            handshake: true for the handshake's own writes, which pass the gate.

        Raises:
            NotReady: the handshake gate is still shut.
            TypeError: ``message`` is neither ``str`` nor bytes-like.
            MessageTooLarge: ``message`` is over ``max_message_size``.
            ConnectionClosed: the connection is closing or has ended.
        """
        data = self._frame(message, handshake)
        self.out.append(data)
        self.out_bytes += len(data)
        if self.out_bytes + self.backlog > self.options.write_high_water:
            self.blocked = True
        return len(data)

    def send_now(self, message: object, *, handshake: bool = False) -> bytes:
        """Queue one message and take everything queued: :meth:`send`, then :meth:`data_to_send`.

        For a binding about to write anyway; with nothing queued before it,
        the message's bytes come back as they are, with no queue between.

        Raises:
            The same as :meth:`send`.
        """
        if self.out:
            self.send(message, handshake=handshake)
            return self.data_to_send()
        if (
            type(message) is bytes
            and (length := len(message)) < _SMALL
            and length <= self._limit
            and self.lifecycle.gate_open
            and self.lifecycle.state is State.OPEN
        ):
            # The commonest write, without even _frame's call.
            data = BYTES_HEADERS[length] + message
        else:
            data = self._frame(message, handshake)
        self.backlog += len(data)
        if self.backlog > self.options.write_high_water:
            self.blocked = True
        return data

    def _frame(self, message: object, handshake: bool) -> bytes:
        """The header and payload of a message this connection may send now."""
        if not (self.lifecycle.gate_open or handshake):
            raise NotReady("the handshake has not completed")
        if self.lifecycle.state is not State.OPEN:
            raise self.lifecycle.closed_error()
        if type(message) is bytes and (length := len(message)) < _SMALL:
            # The commonest write, without the general path's calls.
            payload: bytes | bytearray | memoryview = message
            header = BYTES_HEADERS[length]
        else:
            payload, is_text = payload_of(message)
            length = len(payload)
            header = encode_header(length, is_text)
        if length > self._limit:
            limit = self.options.max_message_size
            assert limit is not None
            raise MessageTooLarge(length, limit)
        return header + payload

    def data_to_send(self) -> bytes:
        """Take every queued byte, in order, for the binding to write.

        The binding reports what it could not hand on yet with
        :meth:`set_backlog`; it counts against the write marks.
        """
        out = self.out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self.backlog += self.out_bytes
        self.out_bytes = 0
        return data

    def set_backlog(self, size: int) -> bool:
        """The binding now holds ``size`` written bytes it has not handed on.

        Returns:
            Whether writers should wait now (never once closing or ended).
        """
        self.backlog = size
        queued = self.out_bytes + size
        if queued > self.options.write_high_water:
            self.blocked = True
        elif queued <= self.options.write_low_water:
            self.blocked = False
        return self.blocked and self.lifecycle.state is State.OPEN

    def drop(self) -> None:
        """Forget what is queued: it will never be sent."""
        self.out.clear()
        self.out_bytes = 0
