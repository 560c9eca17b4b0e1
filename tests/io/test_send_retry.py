"""A send the kernel cut short is retried as OpenSSL demands: never with fewer bytes.

OpenSSL encrypts one record of what ``SSL_write`` is offered; if the kernel
does not take all of it, the call fails with "want write", and the record
waits in OpenSSL. The retry must offer at least the bytes that record holds,
or OpenSSL refuses it ("bad length") and the connection is lost. Without
``sendmsg`` (TLS) the outbox joins small buffers into one send, and the
buffers it joined may grow (the batch at the tail) before the retry.

:class:`LikeOpenSsl` plays OpenSSL's part over a socket pair, record by
record, so these tests need no certificates and decide exactly when the
kernel is full.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from typing import cast
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockings import _sender
from stockings._framing import Decoder
from stockings._outbox import Outbox
from stockings._transport import SendRules
from test_outbox import make

TLS_LIKE = SendRules(
    use_sendmsg=False,
    would_block=(BlockingIOError, InterruptedError, ssl.SSLWantWriteError),
)


class LikeOpenSsl:
    """``SSL_write`` over a socket, without the encryption.

    As in OpenSSL: a call first finishes the record waiting from the call
    before, if any, then sends records of what follows it in the buffer
    until it is all sent (Python's mode) or after one (with
    ``partial=True``, ``SSL_MODE_ENABLE_PARTIAL_WRITE``, which Python does
    not set); if the kernel does not take a record whole, the call fails
    ("want write") and the record waits. The next call must offer the
    bytes of the records already sent and of the one waiting, or more.

    :attr:`room` is how many more bytes the kernel takes (``None``: as many
    as the socket does).
    """

    def __init__(self, sock: socket.socket, record: int = 16 * 1024, partial: bool = False) -> None:
        self.sock = sock
        self.record = record
        self.partial = partial
        self.room: int | None = None
        #: Of the buffer the last call was offered: the bytes it finished
        #: (OpenSSL's ``wnum``), then the record waiting, as offered.
        self.done = 0
        self.waiting = b""
        self.unsent = b""
        self.offers: list[int] = []

    def send(self, data: bytes | bytearray | memoryview) -> int:
        offered = bytes(data)
        self.offers.append(len(offered))
        finished, self.done = self.done, 0
        if self.waiting:
            if len(offered) < finished + len(self.waiting):
                raise ssl.SSLError(1, "[SSL: BAD_LENGTH] bad length")
            if offered[finished : finished + len(self.waiting)] != self.waiting:
                raise ssl.SSLError(1, "the bytes of a write cut short changed before its retry")
            self._push(finished)
            finished += len(self.waiting)
            self.waiting = b""
        while finished < len(offered):
            self.waiting = self.unsent = offered[finished : finished + self.record]
            self._push(finished)
            finished += len(self.waiting)
            self.waiting = b""
            if self.partial:
                break
        return finished

    def _push(self, finished: int) -> None:
        while self.unsent:
            try:
                if self.room == 0:
                    raise BlockingIOError
                taken = self.sock.send(self.unsent[: self.room])
            except BlockingIOError:
                self.done = finished
                raise ssl.SSLWantWriteError("the kernel is full") from None
            if self.room is not None:
                self.room -= taken
            self.unsent = self.unsent[taken:]

    def __getattr__(self, name: str) -> object:
        return getattr(self.sock, name)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    b.setblocking(False)
    with a, b:
        yield a, b


def drain(peer: socket.socket, decoder: Decoder, got: list[object]) -> None:
    """Read whatever ``peer`` has now."""
    while True:
        try:
            data = peer.recv(1 << 20)
        except BlockingIOError:
            return
        got += decoder.feed(data)


def finish(outbox: Outbox, peer: socket.socket, decoder: Decoder, got: list[object]) -> None:
    """Send and read until the queue is empty; every send must succeed."""
    while outbox.pending:
        with outbox.lock:
            error = outbox.flush()
        assert error is None, error
        drain(peer, decoder, got)
    drain(peer, decoder, got)


def test_a_join_cut_short_is_retried_whole_after_its_tail_batch_grew_large(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    tls = LikeOpenSsl(pair[0])
    outbox, _ = make(cast(socket.socket, tls), TLS_LIKE, high_water=1 << 24)
    messages: list[object] = [b"first", b"second"]
    # The kernel is full: the first message, written alone, is cut short;
    # the second starts a batch behind it. The kernel then has room for the
    # first only: the two, joined, are cut short after it.
    tls.room = 0
    outbox.send(messages[0])
    outbox.send(messages[1])
    tls.room = tls.offers[0]
    with outbox.lock:
        assert outbox.flush() is None
    cut_short = tls.offers[-1]
    assert tls.done and tls.waiting, "no join was cut short after its first buffer"
    # The batch behind the first message grows past the size of a join.
    for n in range(_sender.JOIN_SIZE // 1000 + 10):
        message = bytes([n % 251]) * 1000
        outbox.send(message)
        messages.append(message)
    tls.room = None
    got: list[object] = []
    finish(outbox, pair[1], Decoder(None), got)
    assert tls.offers[2] >= cut_short
    assert got == messages


def test_the_rest_of_a_message_of_several_records_is_retried_whole_after_the_batch_grew(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    # With partial writes (not Python's mode, but OpenSSL's rule is the
    # same): a message of several records goes out in part; what is left of
    # it is joined with a batch written meanwhile, and that join is cut
    # short inside its first record; the batch then grows past a join's size.
    with mock.patch.object(_sender, "JOIN_SIZE", 4096):
        tls = LikeOpenSsl(pair[0], record=1024, partial=True)
        outbox, _ = make(cast(socket.socket, tls), TLS_LIKE, high_water=1 << 24)
        messages: list[object] = [b"x" * 2500, b"y" * 100, b"z" * 5000]
        tls.room = 0
        outbox.send(messages[0])
        tls.room = 2 * 1024
        with outbox.lock:
            assert outbox.flush() is None
        assert outbox.queued_bytes < 1024, "the first message did not go out in part"
        outbox.send(messages[1])
        tls.room = 100
        with outbox.lock:
            assert outbox.flush() is None
        cut_short = tls.offers[-1]
        assert tls.waiting and cut_short == outbox.queued_bytes, "the join was not cut short"
        outbox.send(messages[2])
        tls.room = None
        got: list[object] = []
        finish(outbox, pair[1], Decoder(None), got)
        assert tls.offers[3] >= cut_short
        assert got == messages


# Scaled down, as OpenSSL allows (``max_send_fragment``): records of 1 KiB,
# joins of 4 KiB (patched below), so that few writes make every case.
RECORD = 1024
sizes = st.one_of(
    st.integers(0, 300),  # batched
    st.integers(1_000, 6_000),  # batched, more than a record, some more than a join
    st.just(100_000),  # large: beside its header, never copied
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("write"), sizes),
        # The kernel's room for the next sends, then the hub's flush.
        # Room for a few records at most: sends cut short at every point.
        st.tuples(st.just("flush"), st.integers(0, 3 * RECORD)),
        st.tuples(st.just("read"), st.just(0)),
    ),
    max_size=40,
)


@pytest.mark.parametrize("partial", [False, True], ids=["python-mode", "partial-writes"])
@settings(max_examples=300, deadline=None)
@given(plan=steps)
def test_any_writes_and_any_room_in_the_kernel_arrive_whole_with_no_retry_refused(
    partial: bool, plan: list[tuple[str, int]]
) -> None:
    a, b = socket.socketpair()
    b.setblocking(False)
    with a, b, mock.patch.object(_sender, "JOIN_SIZE", 4096):
        tls = LikeOpenSsl(a, RECORD, partial)
        outbox, _ = make(cast(socket.socket, tls), TLS_LIKE, high_water=1 << 24)
        tls.room = 0
        decoder = Decoder(None)
        sent: list[object] = []
        got: list[object] = []
        for step, value in plan:
            if step == "write":
                message = bytes([len(sent) % 251]) * value
                outbox.send(message)
                sent.append(message)
            elif step == "flush":
                tls.room = value
                with outbox.lock:
                    assert outbox.flush() is None
            else:
                drain(b, decoder, got)
        tls.room = None
        finish(outbox, b, decoder, got)
        assert got == sent
