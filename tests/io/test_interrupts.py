"""Signals landing inside write() and read(): a storm of them corrupts nothing.

A helper thread sends SIGINT to the main thread every 0.3 to 2 ms; the
handler raises only while the main thread is inside a stockings call, so
every exception lands in the library (at whatever bytecode the interpreter
chose), never in the test's own bookkeeping. Messages are numbered: the peer
must get each at most once, in order, whole, and every one whose write()
returned; a reader must get every message exactly once.
"""

from __future__ import annotations

import random
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import pytest
import trustme

import stockings
from conftest import FLAVOURS, tcp_pair, wait_until
from stockings import EndReason, Stocking

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill"
)

#: How long each storm lasts, in seconds.
STORM = 1.5


class Interrupt(BaseException):
    """What the test's signal handler raises: like KeyboardInterrupt, not an Exception."""


def in_weakref_callback(frame: FrameType | None) -> bool:
    """Whether the main thread is where an exception cannot propagate.

    Weakref callbacks (a ``WeakSet`` removal...) and ``__del__`` methods: the
    collector runs them on whichever thread drops the last reference, and an
    exception raised in one cannot propagate: Python prints it as
    unraisable and drops it. That is true of any program's Ctrl-C, so the
    storm leaves those moments alone; and pytest's hook that reports them,
    which an interrupt would break instead of the library.
    """
    while frame is not None:
        code = frame.f_code
        if code.co_filename.endswith(_UNRAISABLE_PLACES) or code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


# Weakref callbacks, and pytest's own hook for what could not be raised
# (Ctrl-C there would break the hook, not the library).
_UNRAISABLE_PLACES = ("weakref.py", "_weakrefset.py", "unraisableexception.py")


class Storm:
    """SIGINT to the main thread every 0.3 to 2 ms; raises only while armed."""

    def __init__(self) -> None:
        self.armed = False
        self.raised = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-storm", daemon=True)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.armed and not in_weakref_callback(frame) and not self._in_own_catch(frame):
            self.raised += 1
            raise Interrupt

    @staticmethod
    def _in_own_catch(frame: FrameType | None) -> bool:
        """Whether the signal landed in ``call`` itself, not in what it calls.

        An interrupt that has left the library is on its way to
        ``call``'s ``except``; a second one landing before that clause
        matches would escape the harness, which tests nothing of the
        library.
        """
        return frame is not None and frame.f_code is Storm.call.__code__

    def _run(self) -> None:
        target = threading.main_thread().ident
        assert target is not None
        pace = random.Random(1234)
        while not self._stop.is_set():
            signal.pthread_kill(target, signal.SIGINT)
            # Pacing, not synchronisation: when the next signal goes out.
            self._stop.wait(pace.uniform(0.0003, 0.002))

    @contextmanager
    def running(self) -> Iterator[Storm]:
        previous = signal.signal(signal.SIGINT, self._handler)
        self._thread.start()
        try:
            yield self
        finally:
            self.armed = False
            self._stop.set()
            self._thread.join(5)
            signal.signal(signal.SIGINT, previous)

    def call(self, function: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
        """Call ``function`` armed; return (True, its result) or (False, None) if interrupted."""
        try:
            self.armed = True
            result = function(*args)
            self.armed = False
        except Interrupt:
            self.armed = False
            return False, None
        return True, result


def numbered(n: int) -> bytes:
    """Message ``n``: its number, then a body whose size and bytes depend on it."""
    size = (n * 37) % 300 if n % 50 else 5000 + n % 3000
    if n % 997 == 0:
        size = 100_000  # now and then a large payload, sent beside its header
    return struct.pack(">I", n) + bytes([n % 251]) * size


def number_of(message: object) -> int:
    assert isinstance(message, bytes), type(message)
    n: int = struct.unpack(">I", message[:4])[0]
    assert message == numbered(n), f"message {n} arrived changed"
    return n


def plain_pair(flavour: type[Stocking], **options: Any) -> tuple[Stocking, Stocking]:
    a, b = tcp_pair()
    return flavour(a, **options), flavour(b)


@pytest.fixture(scope="module")
def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return client, server


def tls_pair(
    flavour: type[Stocking], contexts: tuple[ssl.SSLContext, ssl.SSLContext], **options: Any
) -> tuple[Stocking, Stocking]:
    a, b = tcp_pair()
    client = contexts[0].wrap_socket(a, server_hostname="localhost", do_handshake_on_connect=False)
    server = contexts[1].wrap_socket(b, server_side=True, do_handshake_on_connect=False)
    return flavour(client, **options), flavour(server)


PAIRS = [pytest.param(flavour, False, id=flavour.__name__) for flavour in FLAVOURS] + [
    pytest.param(stockings.Stocking, True, id="Stocking-tls")
]


def make(
    flavour: type[Stocking], tls: bool, request: pytest.FixtureRequest, **options: Any
) -> tuple[Stocking, Stocking]:
    if tls:
        contexts = request.getfixturevalue("contexts")
        return tls_pair(flavour, contexts, **options)
    return plain_pair(flavour, **options)


def bystander_works(flavour: type[Stocking]) -> None:
    """Another pair on the same hub still carries a message both ways."""
    left, right = plain_pair(flavour)
    with left, right:
        left.write(b"ping")
        assert right.read(timeout=10) == b"ping"
        right.write(b"pong")
        assert left.read(timeout=10) == b"pong"


class Collector:
    """Reads every message of a stocking on a thread of its own (no signals there)."""

    def __init__(self, stocking: Stocking) -> None:
        self.stocking = stocking
        self.numbers: list[int] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-collector", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for message in self.stocking:
                self.numbers.append(number_of(message))
        except BaseException as exc:
            self.error = exc


@pytest.mark.timeout(60)
@pytest.mark.parametrize("high_water", [4 * 1024 * 1024, 32 * 1024], ids=["default", "blocking"])
@pytest.mark.parametrize(("flavour", "tls"), PAIRS)
def test_a_write_storm_neither_loses_nor_repeats_nor_tears(
    flavour: type[Stocking], tls: bool, high_water: int, request: pytest.FixtureRequest
) -> None:
    writer, reader = make(flavour, tls, request, write_high_water=high_water)
    collector = Collector(reader)
    confirmed: list[int] = []
    storm = Storm()
    n = 0
    with storm.running():
        deadline = time.monotonic() + STORM
        while time.monotonic() < deadline:
            n += 1
            if n % 20 == 0:
                batch = [numbered(k) for k in range(n, n + 5)]
                done, _ = storm.call(writer.write_many, batch)
                if done:
                    confirmed.extend(range(n, n + 5))
                n += 4
            else:
                done, _ = storm.call(writer.write, numbered(n))
                if done:
                    confirmed.append(n)
        # close() itself under the storm: repeated until it returns.
        started = time.monotonic()
        while not storm.call(writer.close, 10.0)[0]:
            pass
    assert time.monotonic() - started < 12.0
    assert writer.end_reason is EndReason.CLOSED, repr(writer.end_exception)
    collector.thread.join(30)
    assert not collector.thread.is_alive()
    assert collector.error is None, repr(collector.error)
    assert reader.end_reason in (EndReason.PEER_CLOSED, EndReason.CLOSED), reader.end_exception
    got = collector.numbers
    assert got == sorted(set(got)), "a message arrived twice or out of order"
    missing = set(confirmed) - set(got)
    assert not missing, f"{len(missing)} written messages never arrived"
    assert storm.raised > 20, "the storm hardly reached the library"
    reader.close()
    bystander_works(flavour)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("flavour", "tls"), PAIRS)
def test_a_read_storm_loses_and_repeats_nothing(
    flavour: type[Stocking], tls: bool, request: pytest.FixtureRequest
) -> None:
    reader, writer = make(flavour, tls, request)
    total = 4000
    stop = threading.Event()

    def write_slowly() -> None:
        # Bursts with gaps: the reader finds the inbox empty and waits (or
        # takes the socket over) as often as it finds messages waiting.
        pace = random.Random(99)
        for k in range(total):
            writer.write(numbered(k))
            if k % 7 == 0 and not stop.is_set():
                stop.wait(pace.uniform(0, 0.0008))

    feeder = threading.Thread(target=write_slowly, name="test-feeder", daemon=True)
    feeder.start()
    got: list[int] = []
    storm = Storm()
    with storm.running():
        deadline = time.monotonic() + 40
        turn = 0
        while len(got) < total and time.monotonic() < deadline:
            turn += 1
            if turn % 5 == 0:
                done, messages = storm.call(reader.read_all, 0.01)
                if done:
                    got.extend(map(number_of, messages))
            else:
                done, message = storm.call(reader.read, 0.01 if turn % 2 else 0)
                if done and message is not None:
                    got.append(number_of(message))
    stop.set()
    feeder.join(10)
    assert got == list(range(total)), _first_difference(got, total)
    assert storm.raised > 20, "the storm hardly reached the library"
    assert reader.active and not reader.ended
    # The stocking still works both ways, and closes in time.
    reader.write(b"after")
    assert writer.read(timeout=10) == b"after"
    writer.write(b"again")
    assert reader.read(timeout=10) == b"again"
    started = time.monotonic()
    reader.close(timeout=5)
    assert time.monotonic() - started < 6
    writer.close()
    bystander_works(flavour)


def _first_difference(got: list[int], total: int) -> str:
    for index, (have, want) in enumerate(zip(got, range(total), strict=False)):
        if have != want:
            return f"at {index}: got {have}, expected {want} ({len(got)} read)"
    return f"{len(got)} of {total} read"


@pytest.mark.timeout(60)
def test_a_storm_while_reads_wait_leaves_the_socket_watched() -> None:
    """Interrupt reads that wait on an idle stocking, then send 4 MiB: it all arrives."""
    reader, writer = plain_pair(stockings.Stocking)
    storm = Storm()
    with storm.running():
        deadline = time.monotonic() + STORM
        while time.monotonic() < deadline:
            storm.call(reader.read, 0.005)
    chunk = b"c" * 65536
    for _ in range(64):
        writer.write(chunk)
    received = 0
    while received < 64:
        message = reader.read(timeout=5)
        assert message == chunk, f"only {received} of 64 messages arrived"
        received += 1
    wait_until(lambda: writer.queued_bytes == 0)
    reader.close()
    writer.close()


def test_the_storm_helper_raises_only_when_armed() -> None:
    storm = Storm()
    with storm.running():
        spins = 0
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            spins += 1
        assert storm.raised == 0
        # A call that takes long enough is interrupted.
        done, _ = storm.call(_busy, 0.2)
        assert not done and storm.raised == 1


def test_the_storm_helper_never_raises_in_its_own_catching_frame() -> None:
    """A second signal on an interrupt's way out must not escape ``call``."""
    storm = Storm()
    frames: list[FrameType] = []

    def landing() -> None:
        here = sys._getframe()
        frames.extend([here, here.f_back] if here.f_back else [here])

    assert storm.call(landing) == (True, None)
    inner, catching = frames
    storm.armed = True
    storm._handler(signal.SIGINT, catching)
    with pytest.raises(Interrupt):
        storm._handler(signal.SIGINT, inner)
    assert storm.raised == 1


def _busy(seconds: float) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        pass


def test_a_single_socket_pair_survives_too() -> None:
    """Interrupts over a socketpair (AF_UNIX): the same guarantees."""
    a, b = socket.socketpair()
    writer, reader = Stocking(a), Stocking(b)
    collector = Collector(reader)
    confirmed: list[int] = []
    storm = Storm()
    with storm.running():
        deadline = time.monotonic() + STORM / 2
        n = 0
        while time.monotonic() < deadline:
            n += 1
            if storm.call(writer.write, numbered(n))[0]:
                confirmed.append(n)
    writer.close(timeout=10)
    collector.thread.join(30)
    assert collector.error is None, repr(collector.error)
    got = collector.numbers
    assert got == sorted(set(got))
    assert not set(confirmed) - set(got)
    reader.close()


def test_a_write_whose_send_and_flush_request_were_both_interrupted_is_sent_by_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two interrupts in a row, in the send and then in the request for the hub's flush.

    Made exactly here rather than hoped for from the storm: the message is
    queued with nobody to send it, and the next write, which would join its
    batch without the lock, must ask the hub instead.
    """
    from stockings._sender import Sender

    writer, reader = plain_pair(stockings.Stocking)
    main = threading.get_ident()
    real_send, real_schedule = Sender.send, Sender.schedule_flush
    left = {"send": 1, "schedule": 1}

    def interrupted(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def once(self: Sender, *args: Any) -> Any:
            if threading.get_ident() == main and left[name]:
                left[name] -= 1
                raise Interrupt
            return real(self, *args)

        return once

    monkeypatch.setattr(Sender, "send", interrupted("send", real_send))
    monkeypatch.setattr(Sender, "schedule_flush", interrupted("schedule", real_schedule))
    with pytest.raises(Interrupt):
        writer.write(b"first")
    assert left == {"send": 0, "schedule": 0}
    monkeypatch.undo()
    assert writer.messages_sent == 1  # queued whole, as an interrupted write promises
    writer.write(b"second")
    assert reader.read(timeout=10) == b"first"
    assert reader.read(timeout=10) == b"second"
    wait_until(lambda: writer.queued_bytes == 0)
    writer.close()
    reader.close()


@pytest.mark.timeout(90)
def test_a_storm_over_wait_and_a_waiter_raises_nothing_else_and_leaves_them_working() -> None:
    """``Waiter.wait`` once waited on a ``threading.Condition``: interrupted as it took
    its lock back, it left the ``with`` around it to fail with ``RuntimeError``."""
    reader, writer = plain_pair(stockings.Stocking)
    waiter = stockings.Waiter([reader])
    stop = threading.Event()

    def trickle() -> None:
        pace = random.Random(7)
        while not stop.is_set():
            writer.write(b"t")
            stop.wait(pace.uniform(0, 0.002))

    feeder = threading.Thread(target=trickle, name="test-trickle", daemon=True)
    feeder.start()
    storm = Storm()
    try:
        with storm.running():
            deadline = time.monotonic() + STORM
            turn = 0
            while time.monotonic() < deadline:
                turn += 1
                if turn % 3 == 0:
                    storm.call(stockings.wait, [reader], 0.01)
                elif turn % 3 == 1:
                    storm.call(waiter.wait, 0.01)
                else:
                    storm.call(reader.read_all, 0)
    finally:
        stop.set()
        feeder.join(10)
    assert storm.raised > 20, "the storm hardly reached the library"
    reader.read_all(0)
    writer.write(b"after")
    assert waiter.wait(10) == [reader]
    assert stockings.wait([reader], timeout=10) == [reader]
    # The feeder's last writes may still have been on their way when the
    # inbox was emptied above: they come first, then "after", and nothing else.
    tail: list[object] = []
    deadline = time.monotonic() + 10
    while b"after" not in tail and time.monotonic() < deadline:
        tail += reader.read_all(1)
    assert tail[-1:] == [b"after"]
    assert set(tail[:-1]) <= {b"t"}
    waiter.close()
    reader.close()
    writer.close()


def test_dropping_a_closed_stocking_runs_no_weakref_callback() -> None:
    """A Ctrl-C landing in a weakref callback is lost: Python prints it and drops it.

    A closed stocking, dropped, must therefore run none on the thread that
    drops it. The registry of sockets' owners once was a WeakValueDictionary,
    whose callback ran for every stocking collected; an example server's
    SIGTERM landed in it and the server never stopped.
    """
    import gc

    a, b = socket.socketpair()
    left, right = stockings.Stocking(a), stockings.Stocking(b)
    right.write(b"x")
    assert left.read(10) == b"x"
    left.close()
    right.close()
    calls: list[str] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code.co_filename.endswith(("weakref.py", "_weakrefset.py")):
            calls.append(frame.f_code.co_name)

    gc.collect()
    sys.setprofile(profile)
    try:
        del left, right
        gc.collect()
    finally:
        sys.setprofile(None)
    assert calls == []
