"""The limits a channel enforces, checked once when a stocking is made."""

from __future__ import annotations

__all__ = ["ChannelOptions"]


class ChannelOptions:
    """The limits one channel enforces; see :class:`stockings.Stocking`."""

    __slots__ = (
        "half_close",
        "idle_timeout",
        "max_message_size",
        "read_high_water",
        "read_low_water",
        "read_spin",
        "write_high_water",
        "write_low_water",
    )

    def __init__(
        self,
        max_message_size: int | None,
        write_high_water: int,
        write_low_water: int | None,
        read_high_water: int,
        read_low_water: int | None,
        idle_timeout: float | None = None,
        read_spin: float = 0.0,
        half_close: bool = False,
    ) -> None:
        self.half_close = half_close
        if not read_spin >= 0:
            raise ValueError("read_spin must be a number of seconds, 0 or more")
        self.read_spin = read_spin
        if idle_timeout is not None and not idle_timeout > 0:
            raise ValueError("idle_timeout must be a positive number of seconds, or None")
        self.idle_timeout = idle_timeout
        if max_message_size is not None and max_message_size < 0:
            raise ValueError("max_message_size cannot be negative")
        if write_high_water < 0 or read_high_water < 0:
            raise ValueError("high-water marks cannot be negative")
        self.max_message_size = max_message_size
        self.write_high_water = write_high_water
        self.write_low_water = write_high_water // 4 if write_low_water is None else write_low_water
        self.read_high_water = read_high_water
        self.read_low_water = read_high_water // 4 if read_low_water is None else read_low_water
        if self.write_low_water > write_high_water or self.read_low_water > read_high_water:
            raise ValueError("a low-water mark cannot exceed its high-water mark")
