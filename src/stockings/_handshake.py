"""The 1.2.3 handshake: the hook a stocking class overrides, and the thread that runs it.

:class:`Handshaking` is the stocking's side of it: ``handshake()``, what it
returned (``handshake_complete``) and the wait for it. A class that
overrides ``handshake()`` has it run by a :class:`HandshakeThread`, a
non-daemon thread as in 1.2.3, while the hub already serves the connection
(the handshake talks to the peer with ``_write`` / ``_read``). Until it
returns a true value the stocking refuses ``read`` and ``write``, and its
readiness (``fileno()``, :func:`~stockings.wait`) stays quiet; a false
value, an exception, or the connection ending first ends the stocking with
``EndReason.HANDSHAKE_FAILED``.

While it runs, the thread is counted in :mod:`stockings._shutdown`, which
ends the stocking if the interpreter exits first, so that the thread does
not hold the exit.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ._errors import HandshakeFailed
from ._log import connection_log
from ._shutdown import handshake_finished, handshake_started
from ._sync import join_thread
from ._timeouts import bounded

if TYPE_CHECKING:
    from ._channel import Channel

__all__ = ["HandshakeThread", "Handshaking"]


class Handshaking:
    """A stocking's side of the handshake: the hook, its outcome, the wait for it.

    The stocking refuses ``read`` and ``write`` while
    ``_handshake_complete`` is false; :meth:`_start_handshake` sets it for
    the default hook, a :class:`HandshakeThread` for an overridden one.
    """

    _handshake_complete: Any = False
    _handshake_thread: HandshakeThread | None = None

    def _has_custom_handshake(self) -> bool:
        """Whether the stocking's class overrides ``handshake`` (asked as it is made)."""
        return type(self).handshake is not Handshaking.handshake

    def handshake(self) -> Any:
        """Agree with the peer before any application message; override to customise.

        Runs once, in its own non-daemon thread when overridden, talking to
        the peer with ``_write`` and ``_read``. Until it returns a true
        value ``read`` and ``write`` raise :class:`NotReady`; a false value
        or an exception ends the stocking with ``HANDSHAKE_FAILED`` (a
        :class:`HandshakeFailed` end exception). A loop in it should check
        ``active``, false once the interpreter exits (``docs/topics/shutdown.md``).

        Returns:
            A true value on success; it becomes :attr:`handshake_complete`.
        """
        return True

    @property
    def handshake_complete(self) -> Any:
        """The value ``handshake`` returned (``True`` for the default), false until then."""
        return self._handshake_complete

    @handshake_complete.setter
    def handshake_complete(self, value: Any) -> None:
        # 1.2.3 kept this as a plain attribute, so code written for it may set it.
        self._handshake_complete = value
        if not value:
            # Refused again: back to the class's read and write, which check
            # it, from the inbox's and outbox's own (see Stocking.__init__).
            vars(self).pop("read", None)
            vars(self).pop("write", None)

    def wait_handshake(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds (``None``: no bound) for a custom handshake.

        Returns at once for the default handshake, which needs no exchange.

        Returns:
            Whether it has completed (``handshake_complete`` is true); false if
            it failed or is still running after ``timeout``.
        """
        timeout = bounded(timeout)
        thread = self._handshake_thread
        if thread is not None:
            thread.wait(timeout)
        return bool(self._handshake_complete)

    def _start_handshake(self, channel: Channel, peer: str, custom: bool) -> None:
        """Run a ``custom`` handshake on its own thread; the default one has nothing to say."""
        if custom:
            self._handshake_thread = HandshakeThread(self, channel, f"stockings-handshake-{peer}")
            self._handshake_thread.start()
        else:
            self._handshake_complete = True

    if TYPE_CHECKING:
        # The 1.2.3 spelling, declared for type checkers; _compat installs it.
        handshakeComplete = handshake_complete


class HandshakeThread(threading.Thread):
    """Runs ``stocking.handshake()`` once and records how it went.

    On success the value it returned becomes the stocking's
    ``handshake_complete`` and the channel starts signalling readiness; on
    failure the connection ends with ``EndReason.HANDSHAKE_FAILED`` and a
    :class:`HandshakeFailed` that says why. The thread never ends with an
    unreported exception: what ``handshake()`` raises becomes the failure's
    cause.

    Args:
        stocking: the stocking whose ``handshake()`` to run.
        channel: its channel, already started, with readiness signals off.
        name: the thread's name.
    """

    def __init__(self, stocking: Handshaking, channel: Channel, name: str) -> None:
        super().__init__(name=name, daemon=False)
        self._stocking = stocking
        self._channel = channel

    def start(self) -> None:
        """Start the thread, counted in for the interpreter's exit while it runs."""
        handshake_started(self._channel)
        try:
            super().start()
        except BaseException:
            # No thread will count it out (the stocking, unreachable now,
            # is aborted by its finalizer).
            handshake_finished(self._channel)
            raise

    def run(self) -> None:
        try:
            self._handshake_and_record()
        finally:
            handshake_finished(self._channel)
            # The stocking holds this thread: drop the cycle once done.
            del self._stocking

    def wait(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` seconds (``None``: no bound) for the handshake to finish.

        Returns at once when called from the handshake itself.
        """
        if self is not threading.current_thread():
            join_thread(self, timeout)

    def _handshake_and_record(self) -> None:
        stocking = self._stocking
        try:
            result = stocking.handshake()
        except HandshakeFailed as exc:
            # Already says what went wrong: record it as it is.
            self._fail(exc)
            return
        except BaseException as exc:
            failure = HandshakeFailed(f"handshake raised {type(exc).__name__}: {exc}")
            failure.__cause__ = exc
            self._fail(failure)
            # A bug in the hook, not the peer's doing: worth an operator's notice.
            peer = self._channel.peer
            connection_log.error(
                "%s: the handshake hook raised", peer, exc_info=exc, extra={"peer": peer}
            )
            return
        if result:
            # The gate first: an end from now on is no failure of the handshake.
            self._channel.open_gate()
            stocking._handshake_complete = result
        else:
            self._fail(HandshakeFailed("handshake returned a false value"))

    def _fail(self, failure: HandshakeFailed) -> None:
        # The channel's lifecycle decides what the end says.
        self._channel.handshake_failed(failure)
