"""A ready handshake that proves both ends share a secret key.

:class:`AuthStocking` is also the worked example of a custom handshake: it
uses nothing but the public hooks (``handshake``, ``_write``, ``_read``).

The exchange, with ``K`` the shared key and ``S``/``C`` the two roles
(``server_side=True`` is ``S``)::

    each side -> peer:  hello = "stockings-auth/1 hello" + role + nonce    (32 random bytes)
    each side -> peer:  proof = HMAC-SHA256(K, "stockings-auth/1 proof" + role
                                               + own hello + peer's hello)

Both sides send their hello at once, send their proof as soon as the
peer's hello is in, and check the peer's proof with a constant-time
compare. Why it is built so:

- Fresh random nonces from both ends make every transcript new: a recorded
  handshake replayed later proves nothing, because the replayed proof
  covers an old nonce of ours.
- Each proof names the role of the side that made it, and each side accepts
  only a proof made by the other role. Without that, an attacker with no
  key could hand our own challenge back to us in a second connection and
  replay our answer as its proof (a reflection attack). The roles must
  therefore differ: the accepting end is the server.
- Each proof also covers both hellos, so it is bound to this exchange and
  to nothing else.
- A peer that says nothing, or too little, is cut off at the deadline.

Both ends see a wrong key as the same clear failure, since each checks the
other's proof; neither side sends a message of its own before its
handshake has succeeded, so no application message can be read as a proof
or delivered early.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import socket
import ssl
import time
from typing import Any

from ._errors import HandshakeFailed
from ._framing import Message
from ._stocking import Stocking

__all__ = ["DEFAULT_HANDSHAKE_TIMEOUT", "AuthStocking"]

#: How long :class:`AuthStocking` waits for the peer to prove itself, in seconds.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0

_PROTOCOL = b"stockings-auth/1"
_HELLO = _PROTOCOL + b" hello "
_PROOF = _PROTOCOL + b" proof "
_NONCE_SIZE = 32
_SERVER = b"S"
_CLIENT = b"C"
_HELLO_SIZE = len(_HELLO) + 1 + _NONCE_SIZE
_PROOF_SIZE = len(_PROOF) + hashlib.sha256().digest_size


def checked_authkey(authkey: object, handshake_timeout: float) -> bytes:
    """The key as ``bytes``, once it and the timeout are fit for a handshake.

    Raises:
        TypeError: ``authkey`` is not bytes-like.
        ValueError: ``authkey`` is empty, or ``handshake_timeout`` is not positive.
    """
    if not isinstance(authkey, (bytes, bytearray)):
        raise TypeError(f"authkey must be bytes, not {type(authkey).__name__}")
    if not authkey:
        raise ValueError("authkey must not be empty")
    if not handshake_timeout > 0:
        raise ValueError("handshake_timeout must be a positive number of seconds")
    return bytes(authkey)


class AuthStocking(Stocking):
    """A stocking that proves, before anything else, that both ends hold ``authkey``.

    Until both proofs have been checked, ``read`` and ``write`` raise
    :class:`~stockings.NotReady` and nothing the peer sends is delivered.
    If the proofs do not match (different keys), the peer does not speak
    this handshake, or it does not finish within ``handshake_timeout``,
    the stocking ends with ``EndReason.HANDSHAKE_FAILED`` and a
    :class:`~stockings.HandshakeFailed` end exception saying which.

    Use a random key of at least 32 bytes (``secrets.token_bytes(32)``):
    anyone may start a handshake, and a short or guessable key could be
    found offline from one recorded proof. The handshake authenticates but
    does not encrypt; run it over TLS to keep the traffic private.

    Args:
        sock: as for :class:`~stockings.Stocking`.
        authkey: the shared secret.
        server_side: true on the accepting end, false on the connecting end;
            the two ends must differ (see the module notes on reflection).
            Defaults to ``sock.server_side`` for a TLS socket, and must be
            given otherwise.
        handshake_timeout: how long the peer has to prove itself, in seconds,
            counted from the stocking's creation (TLS handshake included).
        **kwargs: passed on to :class:`~stockings.Stocking`.

    Raises:
        TypeError: ``authkey`` is not bytes.
        ValueError: ``authkey`` is empty, ``handshake_timeout`` is not
            positive, or ``server_side`` is missing for a plain socket.
    """

    def __init__(
        self,
        sock: socket.socket,
        authkey: bytes,
        *,
        server_side: bool | None = None,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        key = checked_authkey(authkey, handshake_timeout)
        if server_side is None:
            if not isinstance(sock, ssl.SSLSocket):
                raise ValueError(
                    "say server_side=True on the accepting end and False on the connecting end"
                )
            server_side = sock.server_side
        self._authkey = key
        self._role = _SERVER if server_side else _CLIENT
        #: How long the peer has to prove itself, in seconds.
        self.handshake_timeout = handshake_timeout
        # Set before the handshake thread starts, so the deadline counts from here.
        self._deadline = time.monotonic() + handshake_timeout
        super().__init__(sock, **kwargs)

    def handshake(self) -> bool:
        """Prove knowledge of the key to the peer and check the peer's proof.

        Returns:
            True once the peer has proved it holds the same key.

        Raises:
            HandshakeFailed: the keys differ, the peer does not follow the
                protocol, closes, or is too slow.
        """
        hello = _HELLO + self._role + secrets.token_bytes(_NONCE_SIZE)
        self._write(hello)
        peer_hello = self._expect("hello", _HELLO, _HELLO_SIZE)
        peer_role = peer_hello[len(_HELLO) : len(_HELLO) + 1]
        if peer_role not in (_SERVER, _CLIENT):
            raise HandshakeFailed("the peer's hello names no valid role")
        if peer_role == self._role:
            side = "server" if self._role == _SERVER else "client"
            raise HandshakeFailed(
                f"both ends act as the {side} side; exactly one must pass server_side=True"
            )
        self._write(_PROOF + self._mac(self._role, hello, peer_hello))
        peer_proof = self._expect("proof", _PROOF, _PROOF_SIZE)
        expected = _PROOF + self._mac(peer_role, peer_hello, hello)
        if not hmac.compare_digest(peer_proof, expected):
            raise HandshakeFailed("the peer's proof is wrong: the two ends hold different authkeys")
        return True

    def _mac(self, role: bytes, sender_hello: bytes, receiver_hello: bytes) -> bytes:
        message = _PROOF + role + sender_hello + receiver_hello
        return hmac.new(self._authkey, message, hashlib.sha256).digest()

    def _expect(self, what: str, prefix: bytes, size: int) -> bytes:
        """Read the peer's next handshake message and check its shape."""
        message = self._read_before_deadline(what)
        if not isinstance(message, bytes) or len(message) != size or not message.startswith(prefix):
            raise HandshakeFailed(
                f"the peer does not speak {_PROTOCOL.decode()}: unexpected {what} message"
            )
        return message

    def _read_before_deadline(self, what: str) -> Message:
        remaining = self._deadline - time.monotonic()
        message = self._read(timeout=max(remaining, 0.0))
        if message is not None:
            return message
        if self.ended or self.peer_closed:
            reason = self.end_reason.value if self.end_reason is not None else "peer closed"
            raise HandshakeFailed(
                f"the connection ended ({reason}) while waiting for the peer's {what}"
            )
        raise HandshakeFailed(
            f"the peer sent no {what} within the handshake timeout of {self.handshake_timeout} s"
        )
