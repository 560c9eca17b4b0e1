"""How a channel's bytes cross its socket: the transport interface, and the plain transport.

A :class:`~stockings._channel.Channel` knows messages, flow control and how
a connection ends. What it takes to move bytes through the socket is its
transport's, chosen once for the socket it is given (:func:`transport_for`):

- :data:`PLAIN`, for a plain socket, here;
- :class:`~stockings._tls.TlsTransport`, for an ``ssl.SSLSocket``: a
  handshake before the first message, decrypted bytes the selector cannot
  see, a read that may wait for the socket to turn writable, and
  close_notify before the end.

A transport decides what the selector watches, what readiness leads to and
how the write side is shut once a close has flushed. Sending is the
outbox's, under the transport's :class:`SendRules`. On the plain path,
receiving is the receiver's and the direct reader's, which bind the
socket's ``recv_into`` once: a message costs no call into the transport.

A transport is given its channel on each call rather than holding it: the
plain transport is one object for every channel, and a TLS transport makes
no reference cycle with its channel, which is then freed as soon as it is
dropped.

Errors: a transport handles only "the kernel can take or give nothing now"
itself (``SendRules.would_block`` for sends; a receive returns that it got
nothing). Any other ``OSError`` ends the channel, translated once into an
end reason by :func:`~stockings._errors.end_reason_for`.
"""

from __future__ import annotations

import selectors
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from ._errors import EndReason
    from ._hub import Hub, Timer
    from ._lifecycle import Lifecycle
    from ._outbox import Outbox
    from ._receiver import Receiver

__all__ = [
    "PLAIN",
    "PLAIN_RULES",
    "RECEIVES_PER_WAKE",
    "PlainTransport",
    "SendRules",
    "Transport",
    "TransportOwner",
]

#: The most receives one readiness event of the socket leads to.
RECEIVES_PER_WAKE = 8
#: How many times closing reads what already arrived, so that unread bytes
#: in the kernel do not turn our FIN into a reset the peer might see first.
CLOSE_DRAIN_ROUNDS = 64

_EVENT_READ = selectors.EVENT_READ
_EVENT_WRITE = selectors.EVENT_WRITE


class SendRules(NamedTuple):
    """How an :class:`~stockings._outbox.Outbox` may use its socket."""

    #: Whether several buffers may go to the kernel in one ``sendmsg``
    #: (where the socket has it); without it they are joined, and only
    #: small messages batch.
    use_sendmsg: bool = True
    #: What a send raises when the kernel takes nothing now: the rest waits
    #: for the socket to turn writable.
    would_block: tuple[type[BaseException], ...] = (BlockingIOError, InterruptedError)
    #: Asked before each send from the queue: when it says no, what is
    #: queued stays queued, and the hub sends it (``None``: always yes).
    may_send: Callable[[], bool] | None = None


#: A plain socket's rules.
PLAIN_RULES = SendRules()


class TransportOwner(Protocol):
    """What a transport may use of its channel (the hub thread's side of it)."""

    sock: socket.socket
    hub: Hub
    outbox: Outbox
    receiver: Receiver
    peer: str
    ended: bool
    #: Whether the channel wants to read (flow control, the end of the stream).
    _reading: bool
    #: The peer half-closed and the channel stays open for replies.
    _peer_eof: bool
    _lifecycle: Lifecycle
    _idle_timer: Timer | None

    def _receive(self) -> bool:
        """Receive once through the receiver; True if the socket may have more."""

    def _end_of_stream(self) -> None:
        """The peer closed its side: flush, then end or stay half open."""

    def _flush_from_hub(self) -> None:
        """Send what is queued; finish a close once it is all out."""

    def _set_interest(self) -> None:
        """Have the selector watch for what the channel and its transport want now."""

    def _end(self, reason: EndReason, exc: BaseException | None = None) -> None:
        """End the channel now, unless its lifecycle decided how already."""

    def _end_as_decided(self) -> None:
        """End the channel as its lifecycle decided."""

    def _drain(self, receive: Callable[[], bool]) -> None:
        """Take in what already arrived, through ``receive``, before the socket is closed."""


class Transport(Protocol):
    """One way of moving a channel's bytes through its socket (hub thread, but ``send_rules``)."""

    #: How the outbox may send.
    send_rules: SendRules
    #: Whether a waiting reader may receive on its own thread through the
    #: receiver, which uses the socket directly.
    reads_directly: bool

    @property
    def handshaking(self) -> bool:
        """True while something must be exchanged before the first message."""

    def start(self, channel: TransportOwner) -> None:
        """The channel is registered with its hub: begin what comes before messages."""

    def wanted_events(self, channel: TransportOwner, reading: bool, writing: bool) -> int:
        """The selector events to watch, given what the channel wants."""

    def handle_events(self, channel: TransportOwner, mask: int) -> None:
        """Act on the socket's readiness; may raise (the channel ends with it)."""

    def resumed(self, channel: TransportOwner) -> None:
        """The channel reads again after a pause: take what no event will announce."""

    def finish_close(self, channel: TransportOwner) -> None:
        """Everything written is out: shut the write side, then end the channel."""


class PlainTransport:
    """A plain socket's transport: one object serves every channel."""

    __slots__ = ()

    send_rules = PLAIN_RULES
    reads_directly = True
    handshaking = False

    def start(self, channel: TransportOwner) -> None:
        """Messages flow from the start."""

    def wanted_events(self, channel: TransportOwner, reading: bool, writing: bool) -> int:
        return (_EVENT_READ if reading else 0) | (_EVENT_WRITE if writing else 0)

    def handle_events(self, channel: TransportOwner, mask: int) -> None:
        if mask & _EVENT_READ:
            # While the kernel has more, take it now: a turn of the loop
            # costs more than a receive. Bounded, so other connections on
            # this hub wait for at most a few receives.
            for _ in range(RECEIVES_PER_WAKE):
                if not channel._receive() or not channel._reading:
                    break
        if mask & _EVENT_WRITE and not channel.ended:
            channel._flush_from_hub()

    def resumed(self, channel: TransportOwner) -> None:
        """The kernel holds whatever is unread, and the selector will say so."""

    def finish_close(self, channel: TransportOwner) -> None:
        try:
            channel.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        else:
            channel._drain(channel._receive)
        # Drained: until here a reset or a broken message would still have won.
        channel._lifecycle.write_shut()
        channel._end_as_decided()


#: The transport of every plain socket.
PLAIN = PlainTransport()
