"""A file descriptor that is readable exactly while a flag is set.

It backs :meth:`stockings.Stocking.fileno`, so users can ``select()`` on
stockings. ``os.eventfd`` costs one descriptor where the OS has it; elsewhere
(macOS, Windows) a socket pair stands in, which ``select.select`` accepts on
every platform.
"""

from __future__ import annotations

import os
import socket

__all__ = ["ReadySignal"]


class ReadySignal:
    """A level-triggered readiness flag with a descriptor.

    Not thread-safe by itself: the owner calls :meth:`set` and :meth:`clear`
    under its own lock, so the flag and the descriptor never disagree.
    """

    __slots__ = ("_fd", "_is_set", "_reader", "_writer")

    def __init__(self) -> None:
        self._is_set = False
        self._reader: socket.socket | None = None
        self._writer: socket.socket | None = None
        self._fd = -1
        if hasattr(os, "eventfd"):
            self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:  # pragma: no cover - exercised where eventfd is missing
            self._reader, self._writer = socket.socketpair()
            self._reader.setblocking(False)
            self._writer.setblocking(False)
            self._fd = self._reader.fileno()

    def fileno(self) -> int:
        """The descriptor to wait on; -1 once closed."""
        return self._fd

    @property
    def is_set(self) -> bool:
        """The flag."""
        return self._is_set

    def set(self) -> None:
        """Make the descriptor readable (idempotent)."""
        if self._is_set or self._fd < 0:
            return
        self._is_set = True
        if self._writer is None:
            os.eventfd_write(self._fd, 1)
        else:  # pragma: no cover
            self._writer.send(b"\0")

    def clear(self) -> None:
        """Make the descriptor unreadable again (idempotent)."""
        if not self._is_set or self._fd < 0:
            return
        self._is_set = False
        if self._reader is None:
            os.eventfd_read(self._fd)
        else:  # pragma: no cover
            self._reader.recv(16)

    def close(self) -> None:
        """Release the descriptor."""
        if self._fd < 0:
            return
        if self._reader is None:
            os.close(self._fd)
        else:  # pragma: no cover
            self._reader.close()
            assert self._writer is not None
            self._writer.close()
        self._fd = -1

    def __del__(self) -> None:
        self.close()
