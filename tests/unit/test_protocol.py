"""The sans-IO connection protocol, tested with no socket, thread or clock."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from stockings import (
    ConnectionClosed,
    EndReason,
    HandshakeFailed,
    IncompleteMessage,
    MessageTooLarge,
    NotReady,
    ProtocolError,
    WriteTimeout,
    encode,
)
from stockings._framing import Decoder
from stockings._options import ChannelOptions
from stockings._protocol import Protocol, State
from stockings._received import MESSAGE_OVERHEAD


def options(
    max_message_size: int | None = 1024,
    write_high: int = 100,
    write_low: int | None = None,
    read_high: int = 100,
    read_low: int | None = None,
    idle_timeout: float | None = None,
) -> ChannelOptions:
    return ChannelOptions(
        max_message_size, write_high, write_low, read_high, read_low, idle_timeout
    )


def drain(protocol: Protocol) -> list[object]:
    messages = []
    while (message := protocol.next_message(handshake=True)) is not None:
        messages.append(message)
    return messages


def shut(protocol: Protocol) -> None:
    """What a binding does once a close has flushed."""
    assert protocol.should_shut_write
    protocol.write_shut()
    protocol.receive_eof()  # the peer answers our FIN with its own
    assert protocol.should_release
    protocol.connection_lost(None)


# ---------------------------------------------------------------- bytes in


def test_messages_split_anywhere_come_out_whole() -> None:
    protocol = Protocol(options())
    data = encode("hello") + encode(b"\x00bytes") + encode("")
    for i in range(len(data)):
        protocol.receive_data(data[i : i + 1])
    assert drain(protocol) == ["hello", b"\x00bytes", ""]
    assert protocol.unread == 0


def test_clean_peer_close_between_messages() -> None:
    protocol = Protocol(options())
    protocol.receive_data(encode("last"))
    protocol.receive_eof()
    assert protocol.state is State.ENDED
    assert protocol.end_reason is EndReason.PEER_CLOSED
    assert not protocol.finished  # "last" is still unread
    assert protocol.next_message() == "last"
    assert protocol.finished


def test_receive_small_takes_one_whole_small_bytes_message_only() -> None:
    # Each message weighs its payload and MESSAGE_OVERHEAD against the marks.
    protocol = Protocol(options(max_message_size=8, read_high=4 + MESSAGE_OVERHEAD, read_low=0))
    buffer = bytearray(encode(b"abc") + b"\xff" * 20)
    assert protocol.receive_small(buffer, 4)
    assert protocol.inbox[-1] == b"abc"
    wide = Protocol(options(max_message_size=None, read_high=1 << 20))
    assert wide.receive_small(encode(b"x" * 8191), 8193)  # a two-byte header
    assert not wide.receive_small(encode(b"x" * 8192), 8195)  # a three-byte one
    assert drain(wide) == [b"x" * 8191]
    assert protocol.next_message() == b"abc"
    for refused in (
        encode("abc"),  # text
        encode(b"abc") + encode(b"d"),  # more than one message
        encode(b"abc")[:3],  # part of one
        b"\x40",  # the first byte of a two-byte header
        encode(b"x" * 9),  # over max_message_size: receive_data ends the connection
    ):
        assert not protocol.receive_small(refused, len(refused))
    assert drain(protocol) == []
    protocol.receive_data(encode(b"abcdef")[:3])  # a message in progress
    assert not protocol.receive_small(encode(b"z"), 2)
    protocol.receive_data(b"cdef")
    assert not protocol.reading_wanted  # 6 unread > 4 (each with the overhead)
    assert protocol.next_message() == b"abcdef"
    assert protocol.receive_small(encode(b"z"), 2)
    assert protocol.reading_wanted
    assert protocol.receive_small(encode(b"wxyz"), 5)  # 1 + 4 unread > 4
    assert not protocol.reading_wanted
    assert drain(protocol) == [b"z", b"wxyz"]
    protocol.receive_data(encode(b"x" * 9))
    assert protocol.end_reason is EndReason.MESSAGE_TOO_LARGE
    assert not protocol.receive_small(encode(b"z"), 2)
    assert drain(protocol) == []


def test_eof_inside_a_message_is_a_protocol_error() -> None:
    protocol = Protocol(options())
    protocol.receive_data(encode("ok") + encode("cut short")[:4])
    protocol.receive_eof()
    assert protocol.end_reason is EndReason.PROTOCOL_ERROR
    assert isinstance(protocol.end_exception, IncompleteMessage)
    assert drain(protocol) == ["ok"]


def test_oversize_header_ends_after_the_messages_before_it() -> None:
    protocol = Protocol(options(max_message_size=10))
    protocol.receive_data(encode("fine") + encode(b"x" * 11))
    assert protocol.end_reason is EndReason.MESSAGE_TOO_LARGE
    assert isinstance(protocol.end_exception, MessageTooLarge)
    assert protocol.should_release and not protocol.reading_wanted
    assert drain(protocol) == ["fine"]


@pytest.mark.parametrize(
    "garbage", [b"\x00" * 11, b"\x83\xff\xfe\xfd"], ids=["endless header", "bad utf-8"]
)
def test_broken_wire_format(garbage: bytes) -> None:
    protocol = Protocol(options())
    protocol.receive_data(garbage)
    assert protocol.end_reason is EndReason.PROTOCOL_ERROR
    assert isinstance(protocol.end_exception, ProtocolError)
    protocol.receive_data(encode("after"))  # ignored
    assert drain(protocol) == []


def test_reset_and_other_errors() -> None:
    reset = Protocol(options())
    reset.connection_lost(ConnectionResetError())
    assert reset.end_reason is EndReason.RESET
    other = Protocol(options())
    other.fail(OSError(5, "EIO"))
    assert other.end_reason is EndReason.ERROR
    assert other.should_release


# ---------------------------------------------------------------- bytes out


def test_send_and_data_to_send() -> None:
    protocol = Protocol(options())
    assert protocol.send("hi") == 3
    protocol.send(b"hi")
    assert protocol.data_to_send() == b"\x82hi\xc2hi"
    assert protocol.data_to_send() == b""


def test_send_refuses_bad_messages_and_keeps_going() -> None:
    protocol = Protocol(options(max_message_size=4))
    with pytest.raises(MessageTooLarge):
        protocol.send(b"12345")
    with pytest.raises(TypeError):
        protocol.send(42)
    protocol.send(b"1234")
    assert protocol.data_to_send() == encode(b"1234")


def test_send_now_takes_what_was_queued_before_it() -> None:
    protocol = Protocol(options())
    assert protocol.send_now(b"hi") == b"\xc2hi"
    assert protocol.queued_bytes == 3  # handed to the binding, counted as its backlog
    protocol.send("a")
    assert protocol.send_now(b"b") == encode("a") + encode(b"b")
    assert protocol.data_to_send() == b""


def test_send_now_refuses_like_send() -> None:
    protocol = Protocol(options(max_message_size=4, write_high=6), gated=True)
    with pytest.raises(NotReady):
        protocol.send_now(b"x")
    assert protocol.send_now(b"x", handshake=True) == encode(b"x")
    protocol.open_gate()
    with pytest.raises(MessageTooLarge):
        protocol.send_now(b"12345")
    with pytest.raises(TypeError):
        protocol.send_now(42)
    protocol.send_now(b"1234")  # 2 + 5 bytes held by the binding: over the high mark
    assert protocol.writers_blocked
    protocol.close()
    with pytest.raises(ConnectionClosed):
        protocol.send_now(b"x")


def test_no_writes_once_closing() -> None:
    protocol = Protocol(options())
    protocol.close()
    assert protocol.state is State.CLOSING
    with pytest.raises(ConnectionClosed):
        protocol.send("late")


# ---------------------------------------------------------------- lifecycle


def test_close_flushes_then_shuts_then_ends_closed() -> None:
    protocol = Protocol(options())
    protocol.send("a")
    protocol.close()
    assert not protocol.should_shut_write  # "a" still queued
    assert protocol.data_to_send() == encode("a")
    assert not protocol.should_shut_write  # still in the binding's hands
    protocol.set_backlog(0)
    assert protocol.should_shut_write
    protocol.write_shut()
    assert protocol.state is State.WRITE_SHUT
    assert protocol.end_reason is None  # decided, not yet over
    protocol.receive_data(encode("late reply"))  # still taken in after our FIN
    assert not protocol.should_release  # waits for the peer's FIN
    protocol.receive_eof()
    assert protocol.should_release
    protocol.connection_lost(None)
    assert protocol.end_reason is EndReason.CLOSED
    assert drain(protocol) == ["late reply"]


def test_close_gives_up_waiting_for_the_peer_fin() -> None:
    protocol = Protocol(options())
    protocol.close()
    protocol.write_shut()
    protocol.close_timed_out()
    assert protocol.should_release
    assert protocol.end_reason is EndReason.CLOSED


def test_close_waits_for_no_fin_that_our_read_pause_holds_back() -> None:
    protocol = Protocol(options(read_high=1))
    protocol.receive_data(encode(b"unread"))
    protocol.close()
    protocol.write_shut()
    assert protocol.should_release


def test_write_shut_before_the_flush_is_a_bug() -> None:
    protocol = Protocol(options())
    protocol.send("a")
    protocol.close()
    with pytest.raises(RuntimeError):
        protocol.write_shut()


def test_peer_half_close_flushes_replies_then_peer_closed() -> None:
    protocol = Protocol(options())
    protocol.receive_data(encode("question"))
    protocol.send("answer")
    protocol.receive_eof()
    assert protocol.state is State.CLOSING
    assert not protocol.reading_wanted
    with pytest.raises(ConnectionClosed):
        protocol.send("more")
    assert protocol.data_to_send() == encode("answer")
    protocol.set_backlog(0)
    shut(protocol)
    assert protocol.end_reason is EndReason.PEER_CLOSED


def test_close_after_peer_half_close_is_ours() -> None:
    protocol = Protocol(options())
    protocol.send("answer")
    protocol.receive_eof()
    protocol.close()
    protocol.data_to_send()
    protocol.set_backlog(0)
    shut(protocol)
    assert protocol.end_reason is EndReason.CLOSED


def test_abort_drops_and_resets() -> None:
    protocol = Protocol(options())
    protocol.send("dropped")
    protocol.abort()
    assert protocol.end_reason is EndReason.ABORTED
    assert protocol.should_reset
    assert protocol.data_to_send() == b""


def test_close_timeout() -> None:
    protocol = Protocol(options())
    protocol.send("stuck")
    protocol.close()
    protocol.close_timed_out()
    assert protocol.end_reason is EndReason.TIMEOUT
    assert isinstance(protocol.end_exception, WriteTimeout)


def test_lost_with_bytes_unsent_is_a_reset() -> None:
    protocol = Protocol(options())
    protocol.send("never sent")
    protocol.connection_lost(None)
    assert protocol.end_reason is EndReason.RESET


def test_first_reason_wins() -> None:
    protocol = Protocol(options())
    protocol.abort()
    protocol.receive_eof()
    protocol.connection_lost(ConnectionResetError())
    protocol.close_timed_out()
    assert protocol.end_reason is EndReason.ABORTED


# ---------------------------------------------------------------- flow marks


def test_read_marks_pause_and_resume() -> None:
    protocol = Protocol(options(read_high=10, read_low=4))
    protocol.receive_data(encode(b"x" * 6) + encode(b"y" * 6))
    assert not protocol.reading_wanted  # 12 unread > 10
    assert protocol.next_message() == b"x" * 6
    assert not protocol.reading_wanted  # 6 unread > 4
    protocol.next_message()
    assert protocol.reading_wanted


def test_write_marks_block_and_release() -> None:
    protocol = Protocol(options(write_high=10, write_low=4))
    protocol.send(b"x" * 5)
    assert not protocol.writers_blocked
    protocol.send(b"x" * 5)  # 12 on the wire
    assert protocol.writers_blocked
    protocol.data_to_send()
    assert protocol.set_backlog(8)  # the binding still holds 8
    assert protocol.writers_blocked
    assert not protocol.set_backlog(4)
    assert not protocol.writers_blocked
    assert not protocol.set_backlog(9)  # between the marks: stays released
    assert not protocol.writers_blocked


# ---------------------------------------------------------------- idle rule


def test_idle_timeout_counts_only_silence() -> None:
    protocol = Protocol(options(idle_timeout=10.0))
    assert protocol.check_idle(100.0) == 10.0
    assert protocol.check_idle(105.0) == 5.0
    protocol.receive_data(encode("alive"))
    assert protocol.check_idle(109.0) == 10.0
    assert protocol.check_idle(119.0) is None
    assert protocol.end_reason is EndReason.TIMEOUT
    assert isinstance(protocol.end_exception, TimeoutError)


def test_idle_timeout_ignores_our_own_pause() -> None:
    protocol = Protocol(options(read_high=1, idle_timeout=10.0))
    protocol.check_idle(0.0)
    protocol.receive_data(encode(b"xx"))  # paused: over the read mark
    assert protocol.check_idle(1.0) == 10.0
    assert protocol.check_idle(50.0) == 10.0  # still paused: our silence
    protocol.next_message()
    assert protocol.check_idle(55.0) == 10.0  # counted from the last paused check
    assert protocol.check_idle(60.0) == 5.0
    assert protocol.check_idle(65.0) is None
    assert protocol.end_reason is EndReason.TIMEOUT


def test_no_idle_timeout_no_checks() -> None:
    assert Protocol(options()).check_idle(0.0) is None


# ---------------------------------------------------------------- handshake gate


def test_gate_holds_application_messages() -> None:
    protocol = Protocol(options(), gated=True)
    protocol.receive_data(encode("hello"))
    with pytest.raises(NotReady):
        protocol.next_message()
    with pytest.raises(NotReady):
        protocol.send("app")
    protocol.send("handshake", handshake=True)
    assert protocol.next_message(handshake=True) == "hello"
    protocol.open_gate()
    protocol.send("app")


def test_an_end_during_the_handshake_is_a_handshake_failure() -> None:
    protocol = Protocol(options(), gated=True)
    protocol.receive_eof()
    assert protocol.end_reason is EndReason.HANDSHAKE_FAILED
    assert isinstance(protocol.end_exception, HandshakeFailed)
    protocol.handshake_failed(HandshakeFailed("the peer went away"))
    assert str(protocol.end_exception) == "the peer went away"


def test_a_local_close_during_the_handshake_stays_a_close() -> None:
    protocol = Protocol(options(), gated=True)
    protocol.abort()
    assert protocol.end_reason is EndReason.ABORTED


# ---------------------------------------------------------------- any order of events


class Lifecycle(RuleBasedStateMachine):
    """Any order of events ends once, and a clean end loses nothing written."""

    def __init__(self) -> None:
        super().__init__()
        self.protocol = Protocol(options(write_high=64, read_high=64, idle_timeout=5.0))
        self.accepted = bytearray()  # what send() acknowledged
        self.wire = bytearray()  # what reached the wire before the shut
        self.shut = False
        self.released = False
        self.reasons: list[EndReason] = []
        self.now = 0.0

    def _binding_step(self) -> None:
        """What any binding does after an event: flush, shut, release."""
        protocol = self.protocol
        if not self.shut and protocol.state is not State.ENDED:
            self.wire += protocol.data_to_send()
            protocol.set_backlog(0)  # all of it reached the kernel
        if protocol.should_shut_write:
            protocol.write_shut()
            self.shut = True
        if protocol.should_release and not self.released:
            self.released = True
            protocol.connection_lost(None)
        if protocol.decided_reason is not None and not self.reasons:
            self.reasons.append(protocol.decided_reason)

    @rule(message=st.one_of(st.binary(max_size=40), st.text(max_size=20)))
    def write(self, message: bytes | str) -> None:
        try:
            self.protocol.send(message)
        except ConnectionClosed:
            assert self.protocol.state is not State.OPEN
            return
        self.accepted += encode(message)

    @rule()
    def flush(self) -> None:
        self._binding_step()

    @rule()
    def local_close(self) -> None:
        self.protocol.close()

    @rule()
    def abort(self) -> None:
        self.protocol.abort()
        self._binding_step()

    @rule()
    def peer_eof(self) -> None:
        self.protocol.receive_eof()

    @rule()
    def reset(self) -> None:
        self.protocol.connection_lost(ConnectionResetError())
        self.released = True
        self._binding_step()

    @rule(data=st.sampled_from([b"\x00" * 11, b"\x81\xff", encode("ok"), encode(b"x" * 9)[:5]]))
    def receive(self, data: bytes) -> None:
        self.protocol.receive_data(data)

    @rule(seconds=st.floats(min_value=0.0, max_value=4.0))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        self.protocol.check_idle(self.now)

    @rule()
    def read(self) -> None:
        self.protocol.next_message()

    @precondition(lambda self: self.protocol.state is not State.ENDED)
    @rule()
    def transport_gone(self) -> None:
        self.protocol.connection_lost(None)
        self.released = True
        self._binding_step()

    @invariant()
    def one_reason_for_ever(self) -> None:
        reason = self.protocol.decided_reason
        if self.reasons:
            assert reason is self.reasons[0]
        if reason is not None and not self.reasons:
            self.reasons.append(reason)
        if self.protocol.end_reason is not None:
            assert self.protocol.end_reason is reason

    @invariant()
    def clean_ends_lose_nothing(self) -> None:
        reason = self.protocol.end_reason
        if reason is not None and reason.clean:
            assert bytes(self.wire) == bytes(self.accepted)

    def teardown(self) -> None:
        # Whatever happened, the binding can always bring it to one end.
        self.protocol.abort()
        self._binding_step()
        self.protocol.connection_lost(None)
        assert self.protocol.state is State.ENDED
        assert self.protocol.end_reason is not None
        if self.reasons:
            assert self.protocol.end_reason is self.reasons[0]
        if self.protocol.end_reason.clean:
            assert bytes(self.wire) == bytes(self.accepted)
        # The wire we produced decodes to complete messages.
        Decoder(None).feed(bytes(self.wire))


Lifecycle.TestCase.settings = settings(max_examples=600, stateful_step_count=30, deadline=None)
test_lifecycle = Lifecycle.TestCase


def test_empty_messages_weigh_enough_to_pause_reading() -> None:
    # Counted by payload alone, a flood of empty messages never paused.
    protocol = Protocol(options(read_high=64 * 1024, read_low=16 * 1024))
    protocol.receive_data(encode(b"") * (64 * 1024 // MESSAGE_OVERHEAD + 1))
    assert not protocol.reading_wanted
    # Resumed once what is left weighs the low mark or less.
    while len(protocol.inbox) > 16 * 1024 // MESSAGE_OVERHEAD + 1:
        assert protocol.next_message() == b""
        assert not protocol.reading_wanted
    assert protocol.next_message() == b""
    assert protocol.reading_wanted
