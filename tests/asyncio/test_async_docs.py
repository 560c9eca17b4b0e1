"""The asyncio page's examples run: blocks marked ``<!-- test -->``, as in the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aio import resource_warnings_fail

PAGE = Path(__file__).resolve().parent.parent.parent / "docs" / "topics" / "asyncio.md"
MARKER = "<!-- test -->"
# A fenced python block right after the marker line, as tests/docs/test_docs.py reads the README.
BLOCK = re.compile(r"^" + re.escape(MARKER) + r"\n```python\n(.*?)^```", re.M | re.S)


def marked_blocks() -> list[tuple[int, str]]:
    text = PAGE.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in BLOCK.finditer(text)]


def test_the_page_has_a_runnable_example() -> None:
    text = PAGE.read_text(encoding="utf-8")
    assert text.startswith("# asyncio\n")
    assert marked_blocks()
    assert text.count(MARKER) == len(marked_blocks()), "a marker not followed by a python block"


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("line", "code"), marked_blocks(), ids=lambda v: f"line{v}")
def test_example_runs(line: int, code: str) -> None:
    with resource_warnings_fail() as leaks:
        exec(compile(code, f"{PAGE}:{line}", "exec"), {"__name__": "__main__"})
    assert not leaks
