"""What making a :class:`~stockings.Stocking` does to give it a channel.

Its defaults, and the steps that serve the constructor alone: the checks
of ``linger`` and of the socket's owner, the choice of a hub, the socket's
preparation for it, and the channel made over the socket's transport.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from ._channel import Channel
from ._hub import Hub, shared_hub
from ._options import ChannelOptions
from ._sockopts import prepare_socket
from ._timeouts import option_seconds
from ._tls import transport_for

if TYPE_CHECKING:
    from ._stocking import Stocking

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_READ_HIGH_WATER",
    "DEFAULT_READ_SPIN",
    "DEFAULT_WRITE_HIGH_WATER",
    "open_channel",
]

#: Default outbound high-water mark: ``write`` blocks above it.
DEFAULT_WRITE_HIGH_WATER = 4 * 1024 * 1024
#: Default inbound high-water mark: the hub stops reading above it.
DEFAULT_READ_HIGH_WATER = 4 * 1024 * 1024
#: How long (seconds) a waiting ``read`` keeps checking the socket before it
#: sleeps: about what a peer on the same machine takes to answer, and far
#: less than the tens of microseconds a thread's wake-up from sleep can cost.
DEFAULT_READ_SPIN = 50e-6
#: Default bound on how long ``close()`` spends flushing.
DEFAULT_CLOSE_TIMEOUT = 10.0

# The channel each socket descriptor of this process belongs to. A second
# stocking on a socket would take the first one's bytes and, ending, close
# the socket under it; so it is refused. Weak references without a callback
# (not a WeakValueDictionary): a callback runs when a channel is collected,
# on whatever thread drops it, and a Ctrl-C landing in one is lost. A dead
# entry stays until its descriptor number is used again.
_owners: dict[int, weakref.ref[Channel]] = {}


def open_channel(
    stocking: Stocking[Any, ...],
    options: ChannelOptions,
    hub: Hub | None,
    private: bool,
    nodelay: bool,
    keepalive: bool | float | None,
    linger: float | None,
    gated: bool,
) -> Channel:
    """Check ``linger``, choose the stocking's hub, prepare its socket, make its channel.

    Args:
        stocking: the stocking being made, its ``sock``, ``addr`` and ``_peer`` set.
        options: the limits its channel keeps.
        hub: the hub it was given, if any.
        private: whether it gets a hub of its own.
        nodelay: its ``nodelay`` option.
        keepalive: its ``keepalive`` option.
        linger: its ``linger`` option.
        gated: whether a custom handshake must pass before messages flow.

    Returns:
        The channel, not yet started.

    Raises:
        TypeError: ``linger`` is no number, or ``hub`` no :class:`Hub`.
        ValueError: ``linger`` or ``keepalive`` is out of range, the hub
            cannot serve the socket's descriptor, or the socket already
            belongs to a stocking that has not ended.
    """
    if hub is not None and not isinstance(hub, Hub):
        raise TypeError(f"hub must be a stockings.Hub or None, not {type(hub).__name__}")
    linger = option_seconds(linger, "linger")
    cls = type(stocking)
    sock = stocking.sock
    fd = sock.fileno()
    known = _owners.get(fd)
    owner = None if known is None else known()
    # An owner that ended (in a forked child, every inherited one) lets go.
    if owner is not None and not owner.ended and owner.sock.fileno() == fd:
        raise ValueError(
            f"this socket already belongs to a stocking ({owner.peer}): one stocking "
            "per socket; close that one, or wrap another socket"
        )
    if hub is None:
        max_wait = cls._max_wait()
        if private:
            name = f"stockings-io-{stocking._peer}"
            hub = Hub(cls.selector_factory, name=name, max_wait=max_wait)
        else:
            hub = shared_hub(stocking.flavour, cls.selector_factory, max_wait)
    prepare_socket(sock, hub, cls.__name__, nodelay, keepalive)
    # The transport is chosen once here, so the plain path never checks for TLS.
    channel = Channel(sock, hub, options, transport_for(sock), gated=gated)
    channel.linger = linger
    channel.peer = stocking._peer
    _owners[fd] = weakref.ref(channel)
    return channel
