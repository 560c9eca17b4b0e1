"""Keeping the C allocator from giving received messages' memory back at once.

A hub's thread makes every message it receives; readers free them on their
own threads, often a whole inbox in a row. glibc's ``malloc`` then finds a
large free block at the top of the hub thread's heap, and once it is over
the trim threshold (128 KiB until raised) it hands those pages back to the
system; the next messages fault them in again, one zeroed page at a time.
In a stream of 64 KiB messages that was 3 to 8 faults per message, and at
512 KiB up to 25: a third of the reading process's time and more.

glibc raises the threshold by itself, to twice the size of the largest
block it mapped for a request and was given back (up to 32 MiB), so any
program that frees a large buffer once gets the same. A hub does it on
purpose, once per process (:func:`keep_freed_messages`): a reader emptying
a full inbox then leaves the memory for the next messages to reuse. The
cost is a few MiB of free memory kept per thread's heap. With another C
library it is one harmless allocation.
"""

from __future__ import annotations

__all__ = ["keep_freed_messages"]

#: A full inbox at the default read high-water mark (4 MiB), and a page:
#: freed, it sets the trim threshold above what a reader frees in one go.
RAISING_BLOCK_SIZE = 4 * 1024 * 1024 + 4096

_raised = False


def keep_freed_messages() -> None:
    """Raise the C allocator's trim threshold, once per process (see the module)."""
    global _raised
    if not _raised:
        _raised = True
        # Zero-filled by calloc: glibc maps a block this size and does not
        # touch it, so it costs two page faults, not a thousand.
        block = bytes(RAISING_BLOCK_SIZE)
        del block
