"""Showing received messages: as they are in a pipe, made safe on a terminal.

A message is data from the network, so on a terminal nothing in it may act
as a control sequence: an ``ESC [ 3 1 m`` would recolour the screen, and
worse sequences exist. Text keeps its newlines and tabs and has every
other control character spelled out; bytes are shown as a Python bytes
literal when they are printable ASCII, and as a hex dump otherwise.
"""

from __future__ import annotations

import json
import re
import string

__all__ = ["HEXDUMP_LIMIT", "escape_text", "hexdump", "one_line", "show_bytes", "show_text"]

#: The most bytes of one message a hex dump shows.
HEXDUMP_LIMIT = 1024

# C0 controls but tab and newline, DEL, C1 controls, and the invisible
# characters that reorder or hide text (bidirectional overrides and isolates).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_ONE_LINE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]"
)
_PRINTABLE = frozenset((string.printable.replace("\x0b", "").replace("\x0c", "")).encode())
_DUMP_CHARS = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in range(256))


def _spell(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_text(text: str) -> str:
    """``text`` with every control character but newline and tab spelled out as ``\\xNN``."""
    return _UNSAFE.sub(_spell, text)


def one_line(text: str) -> str:
    """``text`` on one line: newlines and tabs are spelled out too."""
    return _UNSAFE_ONE_LINE.sub(_spell, text)


def show_text(text: str, pretty_json: bool) -> str:
    """A text message as shown: pretty-printed when ``pretty_json`` and it parses."""
    if pretty_json:
        try:
            value = json.loads(text)
        except ValueError:
            pass
        else:
            return json.dumps(value, indent=2, ensure_ascii=False)
    return text


def hexdump(data: bytes, limit: int = HEXDUMP_LIMIT) -> str:
    """``data`` as lines of offset, 16 bytes in hex, and the printable ASCII among them.

    At most ``limit`` bytes are shown; a last line says how many were left out.
    """
    lines = []
    for offset in range(0, min(len(data), limit), 16):
        chunk = data[offset : offset + 16]
        left = " ".join(f"{b:02x}" for b in chunk[:8])
        right = " ".join(f"{b:02x}" for b in chunk[8:])
        text = "".join(_DUMP_CHARS[b] for b in chunk)
        lines.append(f"{offset:08x}  {left:<23}  {right:<23}  |{text}|")
    if len(data) > limit:
        lines.append(
            f"... {len(data) - limit:,} more bytes ({len(data):,} in all; --raw shows all)"
        )
    return "\n".join(lines)


def show_bytes(data: bytes) -> str:
    """A bytes message as shown on a terminal: a bytes literal, or a hex dump.

    Short printable ASCII reads best as ``b'...'``; anything else (control
    bytes, binary, other encodings, long runs) as a hex dump under a line
    that gives its length.
    """
    if len(data) <= 256 and _PRINTABLE.issuperset(data):
        return repr(data)
    return f"bytes, {len(data):,} B:\n{hexdump(data)}"
