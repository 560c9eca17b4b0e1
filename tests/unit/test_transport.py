"""Transports: what the selector watches for, which one a socket gets, and who knows of TLS."""

from __future__ import annotations

import ast
import selectors
import socket
import ssl
from pathlib import Path

import pytest

import stockings
from stockings._tls import TlsTransport, transport_for
from stockings._transport import PLAIN, PLAIN_RULES

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
SOURCE = Path(stockings.__file__).parent

#: The modules a message on a plain socket passes through.
PLAIN_PATH = [
    "_channel.py",
    "_transport.py",
    "_outbox.py",
    "_sender.py",
    "_write_flow.py",
    "_receiver.py",
    "_direct.py",
    "_inbox.py",
    "_interest.py",
    "_ending.py",
    "_hub.py",
]


class FakeTls:
    """Enough of an ``ssl.SSLSocket`` for the transport's bookkeeping."""

    def __init__(self, version: str | None) -> None:
        self._version = version

    def version(self) -> str | None:
        return self._version


def tls_transport(handshake_done: bool) -> TlsTransport:
    return TlsTransport(FakeTls("TLSv1.3" if handshake_done else None))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("reading", "writing", "events"),
    [(False, False, 0), (True, False, READ), (False, True, WRITE), (True, True, READ | WRITE)],
)
def test_the_plain_transport_watches_for_what_the_channel_wants(
    reading: bool, writing: bool, events: int
) -> None:
    assert PLAIN.wanted_events(None, reading, writing) == events  # type: ignore[arg-type]
    assert not PLAIN.handshaking
    assert PLAIN.reads_directly
    assert PLAIN.send_rules is PLAIN_RULES


def test_a_tls_handshake_reads_whatever_the_channel_wants_and_holds_writes() -> None:
    transport = tls_transport(handshake_done=False)
    assert transport.handshaking
    # The peer's handshake messages must be read even while reading is paused,
    # and queued messages wait for the handshake's end.
    assert transport.wanted_events(None, False, True) == READ  # type: ignore[arg-type]


def test_tls_after_the_handshake_follows_the_channel() -> None:
    transport = tls_transport(handshake_done=True)
    assert not transport.handshaking
    assert not transport.reads_directly
    assert not transport.send_rules.use_sendmsg
    for reading in (False, True):
        for writing in (False, True):
            expected = (READ if reading else 0) | (WRITE if writing else 0)
            assert transport.wanted_events(None, reading, writing) == expected  # type: ignore[arg-type]


def test_a_tls_engine_waiting_to_write_is_watched_for_writing() -> None:
    transport = tls_transport(handshake_done=True)
    transport._want_write = True
    assert transport.wanted_events(None, True, False) == READ | WRITE  # type: ignore[arg-type]


def test_an_unwrapping_tls_transport_stops_reading() -> None:
    transport = tls_transport(handshake_done=True)
    transport._unwrapping = True
    assert transport.wanted_events(None, True, False) == 0  # type: ignore[arg-type]


def test_a_plain_socket_gets_the_plain_transport() -> None:
    left, right = socket.socketpair()
    with left, right:
        assert transport_for(left) is PLAIN


def test_an_ssl_socket_gets_a_tls_transport() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    left, right = socket.socketpair()
    with right:
        wrapped = context.wrap_socket(left, server_hostname="x", do_handshake_on_connect=False)
        with wrapped:
            transport = transport_for(wrapped)
            assert isinstance(transport, TlsTransport)
            assert transport.handshaking


@pytest.mark.parametrize("module", PLAIN_PATH)
def test_the_plain_path_knows_nothing_of_ssl(module: str) -> None:
    tree = ast.parse((SOURCE / module).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert all(alias.name != "ssl" for alias in node.names), module
        elif isinstance(node, ast.ImportFrom):
            assert node.module != "ssl", module
            assert node.module != "_tls", module
        elif isinstance(node, ast.Attribute):
            assert not node.attr.startswith("SSL"), f"{module} names ssl.{node.attr}"
