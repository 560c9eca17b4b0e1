"""Socket options and checks for a socket about to become a stocking, or failing to.

What the ``nodelay`` and ``keepalive`` options of :class:`~stockings.Stocking`
do to the socket, the check that the hub's selector can watch its
descriptor at all, and how to let go of a socket whose stocking could not
be made.
"""

from __future__ import annotations

import socket
import struct

from ._hub import Hub
from ._options import check_keepalive

__all__ = [
    "TCP_FAMILIES",
    "check_fd_limit",
    "discard_socket",
    "prepare_socket",
    "reset_on_close",
    "set_keepalive",
    "set_nodelay",
]

#: The address families of TCP sockets.
TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)
#: ``SO_LINGER`` on, zero seconds: closing the socket sends RST.
_LINGER_RESET = struct.pack("ii", 1, 0)


def prepare_socket(
    sock: socket.socket, hub: Hub, what: str, nodelay: bool, keepalive: bool | float | None
) -> None:
    """Check that ``hub`` can serve ``sock`` and set the options a stocking asked for.

    Args:
        sock: the connected socket.
        hub: the hub that is to serve it.
        what: the stocking class's name, for the error.
        nodelay: set ``TCP_NODELAY`` (TCP sockets only; a refusal is ignored).
        keepalive: as for :func:`set_keepalive`; ``None`` or ``False`` leaves it.

    Raises:
        ValueError: as :func:`check_fd_limit` and :func:`set_keepalive` do.
    """
    check_fd_limit(sock, hub, what)
    # Keepalive first: it judges its value before it sets anything, so a
    # refused one leaves the socket as the caller gave it.
    if keepalive is not None and keepalive is not False:
        set_keepalive(sock, keepalive)
    if nodelay:
        set_nodelay(sock, True)


def set_nodelay(sock: socket.socket, on: bool) -> None:
    """Set ``TCP_NODELAY`` on a TCP socket, or clear it; other sockets are left alone."""
    if sock.family in TCP_FAMILIES:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if on else 0)
        except OSError:
            pass


def reset_on_close(sock: socket.socket) -> None:
    """Make closing ``sock`` (TCP only) reset the connection rather than end it cleanly.

    So that the peer cannot mistake a stream cut short, perhaps inside a
    message, for a clean end.
    """
    if sock.family in TCP_FAMILIES:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass


def discard_socket(sock: socket.socket) -> None:
    """Close a connected socket whose stocking could not be made.

    A subclass's ``__init__`` may raise after ``Stocking.__init__`` has
    handed the socket to a hub: then the connection is aborted through its
    channel, so the hub never watches a descriptor closed under it.
    Otherwise the socket is simply closed.
    """
    # Imported here: the channel's own modules use this one.
    from ._channel import _live_channels

    for channel in list(_live_channels):
        if channel.sock is sock:
            channel.close(flush=False)
            return
    sock.close()


def check_fd_limit(sock: socket.socket, hub: Hub, what: str) -> None:
    """Refuse a socket whose descriptor ``hub``'s selector cannot watch.

    Raises:
        ValueError: the descriptor is at or over the hub's limit (``select()``'s
            ``FD_SETSIZE``), naming the flavours that have none.
    """
    limit = hub.fd_limit
    fd = sock.fileno()
    if limit is not None and fd >= limit:
        raise ValueError(
            f"{what} cannot serve descriptor {fd}: select() only takes descriptors"
            f" below FD_SETSIZE ({limit}); use Stocking or PollStocking, which have no such limit"
        )


def set_keepalive(sock: socket.socket, keepalive: bool | float) -> None:
    """Turn TCP keepalive on for ``sock``; see the ``keepalive`` option of :class:`Stocking`.

    Args:
        sock: the socket; anything but TCP is left alone.
        keepalive: ``True`` for the system's timings, or the seconds of
            silence before the first probe.

    Raises:
        ValueError: ``keepalive`` is a number that is not positive.
    """
    check_keepalive(keepalive)
    if sock.family not in TCP_FAMILIES:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if keepalive is True:
        return
    idle = max(1, round(keepalive))
    interval = max(1, round(keepalive / 3))
    # Linux, the BSDs and Windows name the idle option TCP_KEEPIDLE; macOS
    # names it TCP_KEEPALIVE. A system without them keeps its own timings.
    idle_option = getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None))
    for option, value in (
        (idle_option, idle),
        (getattr(socket, "TCP_KEEPINTVL", None), interval),
        (getattr(socket, "TCP_KEEPCNT", None), 3),
    ):
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
    # The kernel sends no probe while sent data awaits its acknowledgement:
    # it retransmits instead, for some 15 minutes on Linux. A user timeout
    # as long as the probes take bounds that wait too, and (Linux) takes
    # over from TCP_KEEPCNT with the same result for probes.
    user_timeout = getattr(socket, "TCP_USER_TIMEOUT", None)
    if user_timeout is not None:
        sock.setsockopt(socket.IPPROTO_TCP, user_timeout, (idle + 3 * interval) * 1000)
