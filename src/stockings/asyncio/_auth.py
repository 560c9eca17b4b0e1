"""The shared-key handshake of :class:`stockings.AuthStocking`, for asyncio.

The same exchange, byte for byte, as the threaded class (see
``stockings._auth`` for why it is built so), so either end may be threaded
or asyncio.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from typing import Any

from .._auth import (
    _CLIENT,
    _HELLO,
    _HELLO_SIZE,
    _NONCE_SIZE,
    _PROOF,
    _PROOF_SIZE,
    _PROTOCOL,
    _SERVER,
    DEFAULT_HANDSHAKE_TIMEOUT,
    checked_authkey,
)
from .._errors import HandshakeFailed
from .._framing import Message
from ._stocking import Stocking

__all__ = ["AuthStocking"]


class AuthStocking(Stocking):
    """An asyncio stocking that proves, before anything else, that both ends hold ``authkey``.

    Speaks the handshake of :class:`stockings.AuthStocking`, so it meets a
    threaded ``AuthStocking`` as well as another asyncio one. Pass it as
    ``cls=AuthStocking, authkey=...`` to :func:`connect` or :func:`serve`;
    the accepting end is the server side. A wrong key, a peer that does not
    speak the handshake or one slower than ``handshake_timeout`` ends the
    stocking with ``EndReason.HANDSHAKE_FAILED``, and ``connect`` raises
    :class:`~stockings.HandshakeFailed` (a server drops the connection
    without calling its handler).

    Args:
        authkey: the shared secret; use ``secrets.token_bytes(32)``.
        handshake_timeout: how long the peer has to prove itself, in seconds.
        **options: as for :class:`Stocking`.

    Raises:
        TypeError: ``authkey`` is not bytes.
        ValueError: ``authkey`` is empty or ``handshake_timeout`` not positive.
    """

    def __init__(
        self,
        *,
        authkey: bytes,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        **options: Any,
    ) -> None:
        key = checked_authkey(authkey, handshake_timeout)
        super().__init__(**options)
        self._authkey = key
        #: How long the peer has to prove itself, in seconds.
        self.handshake_timeout = handshake_timeout

    async def handshake(self) -> bool:
        """Prove knowledge of the key to the peer and check the peer's proof.

        Raises:
            HandshakeFailed: the keys differ, the peer does not follow the
                protocol, closes, or is too slow.
        """
        deadline = asyncio.get_running_loop().time() + self.handshake_timeout
        role = _SERVER if self.server_side else _CLIENT
        hello = _HELLO + role + secrets.token_bytes(_NONCE_SIZE)
        await self._write(hello)
        peer_hello = await self._expect("hello", _HELLO, _HELLO_SIZE, deadline)
        peer_role = peer_hello[len(_HELLO) : len(_HELLO) + 1]
        if peer_role not in (_SERVER, _CLIENT):
            raise HandshakeFailed("the peer's hello names no valid role")
        if peer_role == role:
            side = "server" if role == _SERVER else "client"
            raise HandshakeFailed(
                f"both ends act as the {side} side; exactly one must pass server_side=True"
            )
        await self._write(_PROOF + self._mac(role, hello, peer_hello))
        peer_proof = await self._expect("proof", _PROOF, _PROOF_SIZE, deadline)
        expected = _PROOF + self._mac(peer_role, peer_hello, hello)
        if not hmac.compare_digest(peer_proof, expected):
            raise HandshakeFailed("the peer's proof is wrong: the two ends hold different authkeys")
        return True

    def _mac(self, role: bytes, sender_hello: bytes, receiver_hello: bytes) -> bytes:
        message = _PROOF + role + sender_hello + receiver_hello
        return hmac.new(self._authkey, message, hashlib.sha256).digest()

    async def _expect(self, what: str, prefix: bytes, size: int, deadline: float) -> bytes:
        message = await self._read_before(what, deadline)
        if not isinstance(message, bytes) or len(message) != size or not message.startswith(prefix):
            raise HandshakeFailed(
                f"the peer does not speak {_PROTOCOL.decode()}: unexpected {what} message"
            )
        return message

    async def _read_before(self, what: str, deadline: float) -> Message:
        remaining = deadline - asyncio.get_running_loop().time()
        message = await self._read(timeout=max(remaining, 0.0))
        if message is not None:
            return message
        if self.ended:
            reason = self._protocol.decided_reason
            said = reason.value if reason is not None else "ended"
            raise HandshakeFailed(
                f"the connection ended ({said}) while waiting for the peer's {what}"
            )
        raise HandshakeFailed(
            f"the peer sent no {what} within the handshake timeout of {self.handshake_timeout} s"
        )
