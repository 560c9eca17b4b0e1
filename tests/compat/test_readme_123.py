"""Every example of the Stockings 1.2.3 README, run as written.

The snippets below are copied from the 1.2.3 README character for character
(trailing spaces aside), two-space indentation and ``>>>`` prompts included,
and run by :func:`run_snippet`. Where an example needs a live peer, the test
sets one up around the snippet. The README's ``read()`` returns ``None``
until a message is complete, so an expected output is polled for.
"""

from __future__ import annotations

import ast
import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import Stockings
from conftest import wait_until

__all__: list[str] = []

INITIALIZATION = """\
>>> import socket, Stockings
>>>
>>> sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
>>> sock.connect(('127.0.0.1', 1234))
>>>
>>> stocking = Stockings.Stocking(sock)
"""

SEND_AND_RECEIVE = """\
>>> stocking1.write("Test Message")
>>> stocking2.read()
"Test Message"
"""

PRE_WRITE = """\
class MyStocking(Stockings.Stocking):

  def preWrite(self, user, status="OK"):
      return "%s:%s" % (user, status)
...

# Sends "Username:ERROR" to the endpoint
>>> myStocking.write("Username", status="ERROR")
"""

POST_READ = """\
class MyStocking(Stockings.Stocking):

  def postRead(self, message):
    \"\"\" Returns a tuple containing (user, status) \"\"\"

    return re.search("(.*):(.*)", message).groups()
...

>>> myStocking.read()
('username', 'error')
"""

HANDSHAKE = """\
class MyStocking(Stockings.Stocking):

  def handshake(self):
    \"\"\" Sends our unique ID to the remote and receives the remotes unique ID. \"\"\"

    self._write(str(self.uniqueID))

    while self.active:
      read = self._read()
      if read is not None:
        self.remoteID = read
        return True

    return False
"""


def run_snippet(snippet: str, namespace: dict[str, Any], timeout: float = 10.0) -> None:
    """Run a README snippet: plain lines as a block, ``>>>`` lines one by one.

    A ``>>>`` line followed by an output line is an expression whose value
    must equal that output; ``None`` means "not yet" (the README's ``read``),
    so it is evaluated again until it is not ``None`` or ``timeout`` passes.
    A ``...`` line ends a block, as in the README.
    """
    lines = snippet.splitlines()
    block: list[str] = []

    def flush() -> None:
        if block:
            exec("\n".join(block), namespace)
            block.clear()

    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if line.startswith(">>>"):
            flush()
            source = line[4:]
            following = lines[index] if index < len(lines) else ""
            if following.strip() and not following.startswith((">>>", "#", "...")):
                index += 1
                expected = ast.literal_eval(following)
                results: list[Any] = []

                def answered(source: str = source, results: list[Any] = results) -> bool:
                    results.append(eval(source, namespace))
                    return results[-1] is not None

                wait_until(answered, timeout)
                assert results[-1] == expected, f"{source!r} gave {results[-1]!r}"
            else:
                exec(source, namespace)
        elif line.strip() == "...":
            flush()
        else:
            block.append(line)
    flush()


@pytest.fixture
def port_1234(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A listener that the README's ``connect(('127.0.0.1', 1234))`` reaches.

    The README names port 1234; the test listens on a free port and sends
    connections for 1234 there, so the snippet runs unchanged on a busy machine.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        if address == ("127.0.0.1", 1234):
            address = listener.getsockname()
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    with listener:
        yield listener


def namespace_with(**names: Any) -> dict[str, Any]:
    """The names a README snippet may use without importing them."""
    return {"Stockings": Stockings, "re": re, "socket": socket, **names}


def test_initialization(port_1234: socket.socket) -> None:
    namespace = namespace_with()
    run_snippet(INITIALIZATION, namespace)
    stocking = namespace["stocking"]
    server_side, _ = port_1234.accept()
    with stocking, Stockings.Stocking(server_side) as peer:
        assert isinstance(stocking, Stockings.Stocking)
        # "the only option/configuration change that is made is that it is set to nonblocking mode"
        assert stocking.sock is namespace["sock"]
        assert stocking.sock.getblocking() is False
        assert stocking.addr == port_1234.getsockname()
        assert stocking.handshakeComplete is True
        assert stocking.active is True
        stocking.write("from the README's client")
        assert peer.read(timeout=10) == "from the README's client"


def test_send_and_receive() -> None:
    a, b = socket.socketpair()
    with Stockings.Stocking(a) as stocking1, Stockings.Stocking(b) as stocking2:
        run_snippet(SEND_AND_RECEIVE, namespace_with(stocking1=stocking1, stocking2=stocking2))


def test_read_returns_none_until_the_message_is_complete() -> None:
    a, b = socket.socketpair()
    with Stockings.Stocking(b) as stocking2:
        message = Stockings.encode("Test Message")
        a.sendall(message[:5])
        assert stocking2.read() is None
        assert stocking2.read(timeout=0.05) is None  # half a message stays unread
        a.sendall(message[5:])
        run_snippet('>>> stocking2.read()\n"Test Message"\n', namespace_with(stocking2=stocking2))
        a.close()


def test_unique_fileno() -> None:
    pairs = [socket.socketpair() for _ in range(3)]
    made = [Stockings.Stocking(sock) for pair in pairs for sock in pair]
    try:
        filenos = [stocking.fileno() for stocking in made]
        assert all(isinstance(fd, int) and fd >= 0 for fd in filenos)
        assert len(set(filenos)) == len(made)
    finally:
        for stocking in made:
            stocking.close()


@pytest.mark.timeout(30)
def test_checking_busyness() -> None:
    a, b = socket.socketpair()
    with Stockings.Stocking(a) as busy, Stockings.Stocking(b, read_high_water=0) as slow:
        assert busy.writeDataQueued() is False
        # 3 MiB: under the writer's high-water mark, so write() does not block,
        # and more than the peer takes once it stops reading after one message.
        for _ in range(3):
            busy.write(b"z" * (1 << 20))
        assert busy.writeDataQueued() is True
        for _ in range(3):
            assert slow.read(timeout=10) == b"z" * (1 << 20)
        wait_until(lambda: busy.writeDataQueued() is False)


def test_close_and_active() -> None:
    a, b = socket.socketpair()
    stocking, peer = Stockings.Stocking(a), Stockings.Stocking(b)
    assert stocking.active
    stocking.close()
    assert stocking.active is False
    wait_until(lambda: peer.active is False)
    peer.close()


def test_with_context_closes() -> None:
    a, b = socket.socketpair()
    with Stockings.Stocking(a) as stocking, Stockings.Stocking(b) as peer:
        assert stocking.active and peer.active
    assert stocking.active is False
    assert peer.active is False


def test_pre_write_example() -> None:
    namespace = namespace_with()
    a, b = socket.socketpair()
    exec_class_then(PRE_WRITE, namespace, a)
    with namespace["myStocking"], Stockings.Stocking(b) as endpoint:
        run_snippet(PRE_WRITE.split("...\n", 1)[1], namespace)
        assert endpoint.read(timeout=10) == "Username:ERROR"


def test_post_read_example() -> None:
    namespace = namespace_with()
    a, b = socket.socketpair()
    exec_class_then(POST_READ, namespace, a)
    with namespace["myStocking"], Stockings.Stocking(b) as endpoint:
        endpoint.write("username:error")
        run_snippet(POST_READ.split("...\n", 1)[1], namespace)


def exec_class_then(snippet: str, namespace: dict[str, Any], sock: socket.socket) -> None:
    """Define the snippet's ``MyStocking`` and make ``myStocking`` from it over ``sock``."""
    run_snippet(snippet.split("...\n", 1)[0], namespace)
    namespace["myStocking"] = namespace["MyStocking"](sock)


@pytest.mark.timeout(30)
def test_handshake_example() -> None:
    namespace = namespace_with()
    run_snippet(HANDSHAKE, namespace)
    my_stocking = namespace["MyStocking"]
    # The README leaves ``uniqueID`` to the subclass; the thread reads it at once.
    left_class = type("Left", (my_stocking,), {"uniqueID": 1111})
    right_class = type("Right", (my_stocking,), {"uniqueID": 2222})
    a, b = socket.socketpair()
    left = left_class(a)
    try:
        # "use of the Stocking ... will raise a Stockings.NotReady exception until
        # the handshake completes": the peer has not answered yet.
        with pytest.raises(Stockings.NotReady):
            left.read()
        with pytest.raises(Stockings.NotReady):
            left.write("too early")
        assert not left.handshakeComplete
        right = right_class(b)
        try:
            wait_until(lambda: left.handshakeComplete and right.handshakeComplete)
            assert left.handshakeComplete is True
            assert left.remoteID == "2222"
            assert right.remoteID == "1111"
            left.write("after the handshake")
            assert right.read(timeout=10) == "after the handshake"
        finally:
            right.close()
    finally:
        left.close()


@pytest.mark.timeout(30)
def test_handshake_example_gives_up_when_closed() -> None:
    """The README's loop checks ``self.active``: closing ends it and it returns False."""
    namespace = namespace_with()
    run_snippet(HANDSHAKE, namespace)
    lonely_class = type("Lonely", (namespace["MyStocking"],), {"uniqueID": 1})
    a, b = socket.socketpair()
    lonely = lonely_class(a)
    threads_before = {t.name for t in threading.enumerate()}
    assert any(name.startswith("stockings-handshake") for name in threads_before)
    lonely.close()
    wait_until(
        lambda: not any(t.name.startswith("stockings-handshake") for t in threading.enumerate())
    )
    assert not lonely.handshakeComplete
    b.close()
