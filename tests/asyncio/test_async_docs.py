"""The asyncio page's examples run: blocks marked ``<!-- test -->``, as in the README."""

from __future__ import annotations

from pathlib import Path

import pytest
from aio import resource_warnings_fail

from test_docs import read_blocks

PAGE = Path(__file__).resolve().parent.parent.parent / "docs" / "topics" / "asyncio.md"
BLOCKS = [block for block in read_blocks(PAGE.read_text(encoding="utf-8")) if block.marked]


def test_the_page_has_a_runnable_example() -> None:
    assert PAGE.read_text(encoding="utf-8").startswith("# asyncio\n")
    assert BLOCKS


@pytest.mark.timeout(30)
@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: f"line{block.line}")
def test_example_runs(block: object) -> None:
    with resource_warnings_fail() as leaks:
        exec(compile(block.code, f"{PAGE}:{block.line}", "exec"), {"__name__": "__main__"})  # type: ignore[attr-defined]
    assert not leaks
