"""TLS stockings: the transport of a channel over an ``ssl.SSLSocket``, driven without blocking.

A stocking made over an ``ssl.SSLSocket`` (wrapped with
``do_handshake_on_connect=False``) gets a :class:`TlsTransport` in its
:class:`~stockings._channel.Channel` instead of the plain one (see
``_transport``). Everything above the transport is the same; what differs
is how the TLS engine is driven:

- The TLS handshake runs on the hub thread, one non-blocking step per
  readiness event, so a peer that stalls its handshake holds up no other
  stocking of the hub. Writes made meanwhile are queued and sent once it is
  done. If it fails, the stocking ends with ``EndReason.HANDSHAKE_FAILED``
  and a :class:`~stockings.HandshakeFailed` chained to the ``ssl`` error,
  having delivered nothing.
- One TLS connection is one OpenSSL object, which must not be used by two
  threads at once. The outbox already sends only under its lock; here
  every other use of the TLS object (receive, handshake, shutdown) takes
  that lock too, so user threads can still write directly.
- How the outbox sends differs in three ways, given to it as its
  :class:`~stockings._transport.SendRules` (``_TLS_RULES``): no ``sendmsg``;
  ``SSLWantWriteError`` and ``SSLWantReadError`` mean the kernel is full;
  and the main thread never sends, only queues, and the hub sends
  (``_off_main_thread``). Until the handshake is done the outbox holds
  every write back (``Outbox.hold``). A send cut short is retried with no
  fewer bytes, as OpenSSL demands (``Sender._join_head``).
- OpenSSL decrypts whole records: bytes it has decrypted but not handed out
  yet (``pending()``) are invisible to ``select``, so receiving goes on
  until the TLS object has nothing left, not just until the socket is empty.
  A read may also need the socket to be writable, and a write readable
  (``SSLWantWriteError`` from a read and the reverse); the transport has
  the selector watch for whichever the engine asks.
- ``close()`` sends TLS close_notify before shutting the socket down, so the
  peer can tell a clean end from a truncation. ``abort()`` and errors do not.
  The descriptor then stays open while the kernel still holds bytes the
  peer has not acknowledged (see ``_linger``): a TLS 1.3 server sends its
  session tickets whenever it gets round to the end of its handshake, and
  data reaching a closed socket makes the kernel reset the connection and
  drop whatever it had not delivered yet, the end of our last message.

The TLS engine stays on the ``SSLSocket`` rather than on an
``ssl.MemoryBIO`` pair: both are driven the same way here, one step per
readiness event, but the socket's engine reads and writes the kernel in C,
one call per record, where a memory pair would add a Python-level copy and
a system call of our own for every record both ways.

Renegotiation (TLS 1.2) is not supported: contexts should set
``ssl.OP_NO_RENEGOTIATION``; TLS 1.3 has none.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import struct
import sys
import threading
import time

from ._common import _STOPPED
from ._errors import EndReason, HandshakeFailed, end_reason_for
from ._log import connection_log
from ._sockopts import TCP_FAMILIES
from ._transport import PLAIN, SendRules, Transport, TransportOwner

__all__ = ["TlsTransport", "transport_for"]

_EVENT_READ = selectors.EVENT_READ
_EVENT_WRITE = selectors.EVENT_WRITE
_WOULD_BLOCK = (BlockingIOError, InterruptedError)

#: The longest (seconds) a closed TCP socket waits for the peer to acknowledge
#: what the kernel still holds, and the first and longest gaps between looks.
_CLOSE_LINGER = 5.0
_LINGER_FIRST_LOOK = 0.001
_LINGER_LAST_LOOK = 0.05

if sys.platform.startswith("linux"):
    import fcntl
    import termios

    def _unacknowledged(sock: socket.socket) -> int:
        """Bytes (FIN included) sent on ``sock`` that the peer has not acknowledged."""
        try:
            answer = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        except OSError:
            return 0
        return int(struct.unpack("i", answer)[0])

else:

    def _unacknowledged(sock: socket.socket) -> int:
        """Unknown on this system: nothing to wait for."""
        return 0


def _off_main_thread() -> bool:
    """Whether this thread may send: any but the main thread.

    ``SSLSocket.send`` checks for signals once OpenSSL has taken the
    bytes, so on the main thread a signal handler's exception can hide a
    write that happened: the next try would send it again. The main
    thread only queues; the hub sends (the outbox asks it to).
    """
    return threading.get_ident() != threading.main_thread().ident


_TLS_RULES = SendRules(
    use_sendmsg=False,
    would_block=(BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError),
    may_send=_off_main_thread,
)


def transport_for(sock: socket.socket) -> Transport:
    """The transport for ``sock``: TLS for an ``ssl.SSLSocket``, else the plain one."""
    if isinstance(sock, ssl.SSLSocket):
        return TlsTransport(sock)
    return PLAIN


class TlsTransport:
    """The transport of one channel over an ``ssl.SSLSocket`` (hub thread).

    Every use of the TLS object takes the channel's ``outbox.lock``, which
    the outbox holds for every send.
    """

    # The TLS object is not for two threads at once: the hub receives.
    reads_directly = False
    send_rules = _TLS_RULES

    __slots__ = ("_handshaking", "_tls", "_unwrapping", "_want_write")

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self._tls = sock
        # ``version()`` stays None until a handshake has completed.
        self._handshaking = sock.version() is None
        # Whether the TLS engine waits for the socket to turn writable.
        self._want_write = False
        # close_notify could not be sent yet for lack of buffer space.
        self._unwrapping = False

    @property
    def handshaking(self) -> bool:
        """True until the TLS handshake has completed."""
        return self._handshaking

    def start(self, channel: TransportOwner) -> None:
        if self._handshaking and not channel.ended:
            # A client speaks first: start the handshake without waiting for an event.
            self._advance_handshake(channel)

    def wanted_events(self, channel: TransportOwner, reading: bool, writing: bool) -> int:
        reading = reading and not self._unwrapping
        writing = self._want_write or (writing and not self._handshaking)
        return (_EVENT_READ if reading or self._handshaking else 0) | (
            _EVENT_WRITE if writing else 0
        )

    def handle_events(self, channel: TransportOwner, mask: int) -> None:
        if self._handshaking:
            self._advance_handshake(channel)
        elif self._unwrapping:
            self._advance_unwrap(channel)
        else:
            # Either readiness may be what a blocked read or write waited for.
            self._want_write = False
            if channel._reading:
                self._receive(channel)
            if channel.ended:
                return
            if channel.outbox.pending:
                channel._flush_from_hub()
            else:
                channel._set_interest()

    def _advance_handshake(self, channel: TransportOwner) -> None:
        failure: OSError | None = None
        done = False
        outbox = channel.outbox
        with outbox.lock:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                self._want_write = False
            except ssl.SSLWantWriteError:
                self._want_write = True
            except _WOULD_BLOCK:
                pass
            except OSError as exc:
                failure = exc
            else:
                done = True
                self._handshaking = False
                self._want_write = False
                outbox.release()
        if failure is not None:
            error = HandshakeFailed(f"TLS handshake failed: {failure}")
            error.__cause__ = failure
            channel._end(EndReason.HANDSHAKE_FAILED, error)
            return
        if not done:
            channel._set_interest()
            return
        if connection_log.isEnabledFor(logging.DEBUG):
            connection_log.debug(
                "%s: TLS handshake done (%s, %s)",
                channel.peer,
                self._tls.version(),
                (self._tls.cipher() or ("?",))[0],
                extra={"peer": channel.peer},
            )
        # The peer's first records may have come in with its last handshake
        # message, already read into the TLS object where select cannot see them.
        self._receive(channel)
        if not channel.ended:
            channel._flush_from_hub()

    def _receive(self, channel: TransportOwner) -> bool:
        """Receive until the TLS object and the socket are empty, or the buffer is full.

        Returns:
            True if there may be more to receive right away.
        """
        tls = self._tls
        hub_view = channel.hub.recv_view
        lock = channel.outbox.lock
        receiver = channel.receiver
        while True:
            # A large payload is decrypted straight into a buffer of its own.
            room = receiver.payload_room()
            view = hub_view if room is None else room
            size = len(view)
            filled = 0
            eof = False
            error: OSError | None = None
            with lock:
                try:
                    while filled < size:
                        received = tls.recv_into(view[filled:])
                        if not received:
                            eof = True
                            break
                        filled += received
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLWantWriteError:
                    self._want_write = True
                except _WOULD_BLOCK:
                    pass
                except ssl.SSLZeroReturnError:
                    # The peer's close_notify once ours is sent (closing lingers
                    # for the peer): ``recv_into`` returns 0 for it only before.
                    eof = True
                except OSError as exc:
                    error = exc
                pending = 0 if eof or error is not None else tls.pending()
            if filled:
                receiver.bytes_received += filled
                if channel._idle_timer is not None:
                    receiver.last_receive = time.monotonic()
                if room is not None:
                    receiver.payload_arrived(filled)
                elif receiver.take_in(view[:filled]) == _STOPPED:
                    return False
            if error is not None:
                # Once close_notify is out and our side shut, the lifecycle
                # keeps the close clean: everything written went out before.
                channel._end(end_reason_for(error), error)
                return False
            if eof:
                channel._end_of_stream()
                return False
            if pending and channel._reading and not channel.ended:
                # Decrypted bytes that select cannot see: take them now.
                continue
            if room is not None and filled == size and channel._reading:
                # The payload is whole: what follows goes to the hub's buffer.
                continue
            # A full buffer: the socket may hold more, and select will say so.
            return filled == size

    def resumed(self, channel: TransportOwner) -> None:
        if channel._reading and not channel.ended and not self._handshaking:
            with channel.outbox.lock:
                pending = self._tls.pending()
            if pending:
                # Decrypted bytes wait in the TLS object: no event will announce them.
                self._receive(channel)

    # ---------------------------------------------------------------- close

    def finish_close(self, channel: TransportOwner) -> None:
        if self._handshaking:
            channel._end(EndReason.CLOSED)
            return
        if not self._unwrapping:
            self._unwrapping = True
            self._advance_unwrap(channel)

    def _advance_unwrap(self, channel: TransportOwner) -> None:
        """Send close_notify, shut the socket down, take in what arrived, end."""
        sent = False
        finished = False
        with channel.outbox.lock:
            try:
                self._tls.unwrap()
            except ssl.SSLWantReadError:
                # Sent; the peer's close_notify has not arrived, and we need not wait for it.
                sent = True
            except ssl.SSLWantWriteError:
                self._want_write = True
            except _WOULD_BLOCK:
                self._want_write = True
            except OSError:
                # The peer is gone or broke TLS: there is nobody to tell.
                sent = True
            else:
                # Both close_notify alerts are through: TLS is over both ways.
                sent = finished = True
        if not sent:
            channel._set_interest()
            return
        self._unwrapping = False
        self._want_write = False
        drain = not finished
        try:
            # socket.socket's own shutdown: SSLSocket.shutdown would drop the TLS
            # state we still need to read what the peer sent before our end.
            socket.socket.shutdown(self._tls, socket.SHUT_WR)
        except OSError:
            drain = False
        # What the peer does from now on (a reset, a TLS error, silence)
        # cannot undo the close: its reason is decided.
        lifecycle = channel._lifecycle
        lifecycle.write_shut()
        if drain:
            channel._drain(lambda: self._receive(channel))
        # A peer that closed first is not waited for.
        ours = lifecycle.reason is EndReason.CLOSED
        if drain and ours and not channel.ended and self._tls.family in TCP_FAMILIES:
            self._linger(channel)
            return
        channel._end_as_decided()

    def _linger(self, channel: TransportOwner) -> None:
        """Keep the shut-down socket open until the peer has acknowledged all of it.

        Closing it earlier is safe only if the peer sends nothing more, which
        a TLS peer does not promise (a server's session tickets may come at
        any time): the kernel answers data for a closed socket with a reset
        and drops what it had not sent yet. Meanwhile whatever arrives is
        read as usual (``handle_events``), and the peer's end ends the wait.
        Bounded by ``_CLOSE_LINGER``, and by the close timeout, if any, whose
        running out now only ends the wait (the lifecycle keeps the close clean).
        """
        self._look_at_unacknowledged(channel, time.monotonic() + _CLOSE_LINGER, _LINGER_FIRST_LOOK)

    def _look_at_unacknowledged(self, channel: TransportOwner, deadline: float, gap: float) -> None:
        if channel.ended:
            return
        if _unacknowledged(self._tls) <= 0 or time.monotonic() >= deadline:
            channel._end_as_decided()
            return
        channel._set_interest()
        next_gap = min(2 * gap, _LINGER_LAST_LOOK)
        channel.hub.call_later(
            gap, lambda: self._look_at_unacknowledged(channel, deadline, next_gap)
        )
