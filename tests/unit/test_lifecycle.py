"""The lifecycle rules alone: which end reason wins, with no socket, thread, clock or queue."""

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
    ProtocolError,
    WriteTimeout,
)
from stockings._lifecycle import Lifecycle, State, failure_reason


def _state(lifecycle: Lifecycle) -> State:
    """The state now (unnarrowed: the type checker cannot know a call changed it)."""
    return lifecycle.state


# ---------------------------------------------------------------- local close


def test_a_close_flushes_then_shuts_then_ends_closed() -> None:
    lifecycle = Lifecycle()
    lifecycle.close()
    assert lifecycle.state is State.CLOSING
    assert lifecycle.close_requested
    assert lifecycle.reason is None
    assert not lifecycle.may_shut(unsent=True)
    assert lifecycle.may_shut(unsent=False)
    lifecycle.write_shut()
    assert lifecycle.reason is EndReason.CLOSED
    assert _state(lifecycle) is State.WRITE_SHUT
    assert not lifecycle.ended
    assert lifecycle.released() == (EndReason.CLOSED, None)
    assert lifecycle.ended


def test_only_a_close_under_way_may_shut() -> None:
    lifecycle = Lifecycle()
    assert not lifecycle.may_shut(unsent=False)
    with pytest.raises(RuntimeError):
        lifecycle.write_shut()


def test_an_abort_asked_for_keeps_a_flushed_close_from_shutting() -> None:
    lifecycle = Lifecycle()
    lifecycle.close()
    lifecycle.abort_requested = True  # what close(flush=False) records at once
    assert not lifecycle.may_shut(unsent=False)
    lifecycle.abort()
    assert lifecycle.reason is EndReason.ABORTED


def test_a_close_after_the_end_changes_nothing() -> None:
    lifecycle = Lifecycle()
    lifecycle.fail(ConnectionResetError())
    lifecycle.close()
    assert not lifecycle.close_requested
    assert lifecycle.state is State.ENDED


# ---------------------------------------------------------------- the peer's end


def test_the_peers_end_with_nothing_to_flush_is_peer_closed() -> None:
    lifecycle = Lifecycle()
    lifecycle.receive_eof(flushing=False)
    assert lifecycle.peer_eof
    assert lifecycle.ended
    assert lifecycle.reason is EndReason.PEER_CLOSED
    assert lifecycle.exception is None


def test_the_peers_end_with_replies_queued_flushes_them_first() -> None:
    lifecycle = Lifecycle()
    lifecycle.receive_eof(flushing=True)
    assert lifecycle.state is State.CLOSING
    assert lifecycle.reason is None
    assert lifecycle.may_shut(unsent=False)
    lifecycle.write_shut()
    assert lifecycle.reason is EndReason.PEER_CLOSED


def test_a_close_during_the_last_replies_makes_the_end_ours() -> None:
    lifecycle = Lifecycle()
    lifecycle.receive_eof(flushing=True)
    lifecycle.close()
    lifecycle.write_shut()
    assert lifecycle.reason is EndReason.CLOSED


def test_the_peers_end_after_a_close_was_asked_for_is_our_close() -> None:
    # The threaded channel records the request at once and decides on the hub.
    lifecycle = Lifecycle()
    lifecycle.close_requested = True
    lifecycle.receive_eof(flushing=False)
    assert lifecycle.reason is EndReason.CLOSED


def test_half_close_keeps_the_connection_open() -> None:
    lifecycle = Lifecycle()
    lifecycle.receive_eof(flushing=True, half_close=True)
    assert lifecycle.peer_eof
    assert lifecycle.state is State.OPEN
    assert lifecycle.reason is None
    lifecycle.close()
    lifecycle.write_shut()
    assert lifecycle.reason is EndReason.CLOSED


def test_an_end_inside_a_message_is_a_protocol_error() -> None:
    lifecycle = Lifecycle()
    failure = IncompleteMessage("2 bytes missing")
    lifecycle.receive_eof(flushing=True, half_close=True, failure=failure)
    assert lifecycle.reason is EndReason.PROTOCOL_ERROR
    assert lifecycle.exception is failure


def test_the_peers_end_counts_once() -> None:
    lifecycle = Lifecycle()
    lifecycle.receive_eof(flushing=True)
    lifecycle.receive_eof(flushing=False)
    assert lifecycle.state is State.CLOSING


# ---------------------------------------------------------------- failures and timers


def test_an_abort_ends_at_once_with_a_reset() -> None:
    lifecycle = Lifecycle()
    assert not lifecycle.should_reset()
    lifecycle.abort()
    assert lifecycle.reason is EndReason.ABORTED
    assert lifecycle.abort_requested
    assert lifecycle.should_reset()


def test_an_end_with_bytes_unsent_resets() -> None:
    lifecycle = Lifecycle()
    assert not lifecycle.should_reset(unsent=True)
    lifecycle.fail(OSError("broken"))
    assert lifecycle.reason is EndReason.ERROR
    assert lifecycle.should_reset(unsent=True)
    assert not lifecycle.should_reset(unsent=False)


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (ConnectionResetError(), EndReason.RESET),
        (BrokenPipeError(), EndReason.RESET),
        (TimeoutError(), EndReason.TIMEOUT),
        (OSError("other"), EndReason.ERROR),
    ],
)
def test_a_transport_failure_ends_with_its_reason(exc: BaseException, reason: EndReason) -> None:
    lifecycle = Lifecycle()
    lifecycle.fail(exc)
    assert lifecycle.reason is reason
    assert lifecycle.exception is exc


def test_a_broken_wire_format_says_how() -> None:
    too_large = MessageTooLarge(2000, 1000)
    assert failure_reason(too_large) is EndReason.MESSAGE_TOO_LARGE
    assert failure_reason(ProtocolError("bad header")) is EndReason.PROTOCOL_ERROR
    lifecycle = Lifecycle()
    lifecycle.decode_failed(too_large)
    assert lifecycle.reason is EndReason.MESSAGE_TOO_LARGE
    assert lifecycle.exception is too_large


def test_a_close_out_of_time_while_flushing_is_a_timeout() -> None:
    lifecycle = Lifecycle()
    lifecycle.close()
    lifecycle.close_timed_out(unsent=42)
    assert lifecycle.reason is EndReason.TIMEOUT
    assert isinstance(lifecycle.exception, WriteTimeout)
    assert str(lifecycle.exception) == "close() gave up flushing with 42 bytes still unsent"


def test_once_shut_nothing_undoes_the_close() -> None:
    lifecycle = Lifecycle()
    lifecycle.close()
    lifecycle.write_shut()
    lifecycle.fail(ConnectionResetError())
    lifecycle.decode_failed(ProtocolError("garbage after our close"))
    lifecycle.abort()
    lifecycle.receive_eof(flushing=False)
    assert lifecycle.check_idle(100.0, 0.0, 1.0) is None
    assert lifecycle.state is State.WRITE_SHUT
    lifecycle.close_timed_out(unsent=0)
    assert lifecycle.ended
    assert (lifecycle.reason, lifecycle.exception) == (EndReason.CLOSED, None)
    assert not lifecycle.should_reset(unsent=False)


def test_the_idle_rule() -> None:
    lifecycle = Lifecycle()
    assert lifecycle.check_idle(10.0, 8.0, 5.0) == pytest.approx(3.0)
    assert lifecycle.reason is None
    assert lifecycle.check_idle(13.5, 8.0, 5.0) is None
    assert lifecycle.reason is EndReason.TIMEOUT
    assert isinstance(lifecycle.exception, TimeoutError)
    assert str(lifecycle.exception) == "nothing received from the peer for 5.5 s"
    assert lifecycle.check_idle(20.0, 19.0, 5.0) is None


def test_an_end_nobody_decided_is_clean() -> None:
    assert Lifecycle().released() == (EndReason.PEER_CLOSED, None)
    lifecycle = Lifecycle()
    lifecycle.close()
    assert lifecycle.released() == (EndReason.CLOSED, None)


# ---------------------------------------------------------------- the handshake gate


def test_an_end_behind_the_gate_is_the_handshakes_failure() -> None:
    lifecycle = Lifecycle(gated=True)
    reset = ConnectionResetError()
    lifecycle.fail(reset)
    assert lifecycle.reason is EndReason.HANDSHAKE_FAILED
    assert isinstance(lifecycle.exception, HandshakeFailed)
    assert lifecycle.exception.__cause__ is reset
    failure = HandshakeFailed("the peer went away")
    lifecycle.handshake_failed(failure)
    assert lifecycle.exception is failure
    assert failure.__context__ is not None


def test_a_close_or_abort_behind_the_gate_stays_what_it_is() -> None:
    lifecycle = Lifecycle(gated=True)
    lifecycle.abort()
    assert lifecycle.reason is EndReason.ABORTED
    lifecycle = Lifecycle(gated=True)
    lifecycle.open_gate()
    lifecycle.fail(ConnectionResetError())
    assert lifecycle.reason is EndReason.RESET


# ---------------------------------------------------------------- refused writes


def test_what_a_refused_write_says() -> None:
    def refusal(lifecycle: Lifecycle) -> tuple[str, EndReason | None]:
        error = lifecycle.closed_error()
        assert isinstance(error, ConnectionClosed)
        return str(error), error.reason

    closing = Lifecycle()
    closing.close()
    assert refusal(closing) == ("the stocking is closing", EndReason.CLOSED)
    closing.write_shut()
    assert refusal(closing) == ("the stocking is closing", EndReason.CLOSED)

    aborting = Lifecycle()
    aborting.abort_requested = True
    assert refusal(aborting) == ("the stocking was aborted", EndReason.ABORTED)

    replying = Lifecycle()
    replying.receive_eof(flushing=True)
    assert refusal(replying) == (
        "the peer closed its side; flushing the last replies",
        EndReason.PEER_CLOSED,
    )

    ended = Lifecycle()
    reset = ConnectionResetError()
    ended.fail(reset)
    assert refusal(ended) == ("the stocking has ended: connection reset", EndReason.RESET)
    assert ended.closed_error().__cause__ is reset


# ---------------------------------------------------------------- any order of events

_ORDER = {State.OPEN: 0, State.CLOSING: 1, State.WRITE_SHUT: 2, State.ENDED: 3}


class Events(RuleBasedStateMachine):
    """Any order of events ends with exactly one reason, never changed once decided."""

    def __init__(self) -> None:
        super().__init__()
        self.lifecycle = Lifecycle()
        self.unsent = False  # the engine's queue, which the lifecycle never sees
        self.decided: tuple[EndReason, BaseException | None] | None = None
        self.last_state = State.OPEN
        self.now = 0.0
        self.last_heard = 0.0

    @rule()
    def write(self) -> None:
        if self.lifecycle.state is State.OPEN:
            self.unsent = True

    @rule()
    def flushed(self) -> None:
        self.unsent = False

    @rule()
    def local_close(self) -> None:
        self.lifecycle.close()

    @precondition(lambda self: not self.lifecycle.ended)
    @rule()
    def close_requested_from_a_user_thread(self) -> None:
        # Recorded at once, decided on by the hub later; not once it has ended.
        self.lifecycle.close_requested = True

    @rule()
    def abort(self) -> None:
        if not self.lifecycle.ended:
            self.lifecycle.abort_requested = True
        self.lifecycle.abort()

    @rule(half_close=st.booleans(), incomplete=st.booleans())
    def peer_eof(self, half_close: bool, incomplete: bool) -> None:
        failure = IncompleteMessage("3 bytes missing") if incomplete else None
        self.lifecycle.receive_eof(flushing=self.unsent, half_close=half_close, failure=failure)

    @precondition(lambda self: self.lifecycle.may_shut(self.unsent))
    @rule()
    def shut(self) -> None:
        self.lifecycle.write_shut()

    @rule(exc=st.sampled_from([ConnectionResetError(), OSError("broken"), TimeoutError()]))
    def transport_failed(self, exc: BaseException) -> None:
        self.lifecycle.fail(exc)

    @rule()
    def decode_error(self) -> None:
        self.lifecycle.decode_failed(ProtocolError("bad header"))

    @rule()
    def close_timeout(self) -> None:
        self.lifecycle.close_timed_out(unsent=10 if self.unsent else 0)

    @rule(seconds=st.floats(min_value=0.0, max_value=4.0), heard=st.booleans())
    def time_passes(self, seconds: float, heard: bool) -> None:
        self.now += seconds
        if heard:
            self.last_heard = self.now
        self.lifecycle.check_idle(self.now, self.last_heard, 5.0)

    @rule()
    def error(self) -> None:
        self.lifecycle.end(EndReason.ERROR, RuntimeError("unforeseen"))

    @invariant()
    def one_reason_for_ever(self) -> None:
        lifecycle = self.lifecycle
        if self.decided is not None:
            assert (lifecycle.reason, lifecycle.exception) == self.decided
        elif lifecycle.reason is not None:
            self.decided = (lifecycle.reason, lifecycle.exception)
            # What the reason says happened did, by the time it was decided.
            reason = lifecycle.reason
            if reason is EndReason.CLOSED:
                assert lifecycle.close_requested
            elif reason is EndReason.PEER_CLOSED:
                assert lifecycle.peer_eof and not lifecycle.close_requested
            elif reason is EndReason.ABORTED:
                assert lifecycle.abort_requested

    @invariant()
    def states_only_move_on(self) -> None:
        state = self.lifecycle.state
        assert _ORDER[state] >= _ORDER[self.last_state]
        self.last_state = state
        assert (self.lifecycle.reason is None) == (_ORDER[state] < _ORDER[State.WRITE_SHUT])

    @invariant()
    def shut_only_cleanly(self) -> None:
        lifecycle = self.lifecycle
        if lifecycle.state is State.WRITE_SHUT:
            assert lifecycle.reason in (EndReason.CLOSED, EndReason.PEER_CLOSED)
            assert not self.unsent

    def teardown(self) -> None:
        # However it went, releasing the transport gives one end: the decided one.
        reason, exc = self.lifecycle.released()
        assert self.lifecycle.ended
        if self.decided is not None:
            assert (reason, exc) == self.decided
        assert isinstance(self.lifecycle.closed_error(), ConnectionClosed)


Events.TestCase.settings = settings(max_examples=600, stateful_step_count=30, deadline=None)
test_any_order_of_events = Events.TestCase
