"""The documentation's promises, checked: its examples run and its quick start is what CI runs.

A fenced ``python`` block in README.md or in a page under docs/ (any
``*.md``) runs as a test when the line just before its opening fence is
``<!-- test -->``. Each such block runs on its own, in a fresh namespace, and
must clean up after itself: it fails if it leaves stockings threads or
descriptors behind. Blocks without the marker (sketches that need a server,
say) are shown but not run. Longer programs live in examples/ and are run by
tests/docs/test_examples.py.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import library_threads, open_fds, wait_until
from stockings import Stocking, encode_header

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# Every page that may hold tested examples: the README and the site's pages.
PAGES = [README, *sorted(path for path in DOCS.rglob("*.md") if "_build" not in path.parts)]
DOCS_URL = "https://stockings.readthedocs.io/"
CI_SCRIPT = ROOT / ".ci" / "run"
MARKER = "<!-- test -->"
# An opening fence: a language (```python) or a MyST directive (```{toctree} ...).
FENCE = re.compile(r"^```(\w*|\{[\w-]+\}.*)\s*$")


@dataclass
class Block:
    """A fenced code block of a page."""

    page: str  # the page's path, relative to the repository
    language: str
    line: int  # of the opening fence, counted from 1
    heading: str
    marked: bool
    code: str


def read_blocks(text: str, page: str = "README.md") -> list[Block]:
    """Every fenced code block of ``text`` (the contents of ``page``), in order."""
    blocks: list[Block] = []
    lines = text.splitlines()
    heading = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        match = FENCE.match(line)
        if match is None:
            i += 1
            continue
        start = i
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            i += 1
        if i == len(lines):
            raise AssertionError(f"{page}:{start + 1}: code block never closed")
        marked = start > 0 and lines[start - 1].strip() == MARKER
        code = "\n".join(lines[start + 1 : i]) + "\n"
        language = (match.group(1).split() or [""])[0]
        blocks.append(Block(page, language, start + 1, heading, marked, code))
        i += 1
    return blocks


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


BLOCKS = [
    block
    for path in PAGES
    for block in read_blocks(path.read_text(encoding="utf-8"), _relative(path))
]
RUNNABLE = [block for block in BLOCKS if block.marked]


def _block_id(block: Block) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", block.heading.lower()).strip("-")
    return f"{block.page}:line{block.line}-{slug}"


def test_there_are_runnable_examples() -> None:
    assert len(RUNNABLE) >= 15
    assert any(block.page == "README.md" for block in RUNNABLE)


@pytest.mark.parametrize("path", PAGES, ids=_relative)
def test_every_marker_precedes_a_python_block(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if line.strip() == MARKER:
            following = lines[number] if number < len(lines) else ""
            assert following.strip() == "```python", (
                f"{_relative(path)}:{number}: {MARKER} must come right before a ```python fence"
            )


@pytest.mark.timeout(30)
@pytest.mark.parametrize("block", RUNNABLE, ids=_block_id)
def test_example_runs(block: Block) -> None:
    threads_before = len(library_threads())
    fds_before = open_fds()
    # Blank lines keep the traceback's line numbers those of the page.
    source = "\n" * block.line + block.code
    code = compile(source, str(ROOT / block.page), "exec")
    exec(code, {"__name__": "__readme__"})
    wait_until(lambda: len(library_threads()) <= threads_before)
    wait_until(lambda: open_fds() <= fds_before)


def quick_start_commands() -> list[str]:
    """The lines of the code block under the README's "Quick start" heading."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^## Quick start\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, "README.md has no '## Quick start' section"
    section_blocks = read_blocks(match.group(1))
    assert len(section_blocks) == 1, "the quick start holds exactly one code block"
    return section_blocks[0].code.splitlines()


def test_quick_start_comes_first() -> None:
    headings = re.findall(r"^## (.+)$", README.read_text(encoding="utf-8"), re.M)
    assert headings[0] == "Quick start"


def test_quick_start_is_two_one_line_commands() -> None:
    commands = quick_start_commands()
    assert len(commands) == 2
    install_and_bench, install_and_test = commands
    for command in commands:
        # Only python3 is assumed: each line makes its own venv and uses it by path.
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install ")
        assert "\\" not in command  # no continuation lines
        assert "activate" not in command
    assert install_and_bench.endswith(".venv/bin/stockings bench")
    assert install_and_test.endswith(".venv/bin/python -m pytest -q")
    assert "'.[dev]'" in install_and_test


def test_ci_runs_the_quick_start_test_command() -> None:
    test_command = quick_start_commands()[1]
    ci_lines = [line.strip() for line in CI_SCRIPT.read_text(encoding="utf-8").splitlines()]
    assert test_command in ci_lines, ".ci/run must run the README's test command verbatim"


def test_readme_is_short_and_links_into_the_docs() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    # One click from the README: the modern API, the reference, the migration guide.
    for page in ("tutorial.html", "reference/api.html", "migrating.html"):
        assert DOCS_URL + "en/latest/" + page in text
    assert "pip install stockings" in text


def test_readme_links_work_on_pypi() -> None:
    """PyPI shows the README without the repository: every link must be absolute."""
    text = README.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)]+)\)", text):
        assert target.startswith(("https://", "http://")), f"relative link {target!r}"


def test_readme_links_name_existing_pages() -> None:
    text = README.read_text(encoding="utf-8")
    for page in re.findall(re.escape(DOCS_URL) + r"en/latest/([\w/.-]+)\.html", text):
        assert (DOCS / f"{page}.md").is_file(), f"README links to a missing page: {page}"


def test_wire_page_vectors_match_the_codec() -> None:
    """The spec's table of test vectors is what the codec produces and reads."""
    text = (DOCS / "wire.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| `([0-9a-f]+)` \| `([0-9a-f]+)` \|$", text, re.M)
    assert len(rows) >= 14
    for length, as_bytes, as_text in rows:
        assert encode_header(int(length), is_text=False).hex() == as_bytes
        assert encode_header(int(length), is_text=True).hex() == as_text


def test_the_options_page_describes_every_option_of_a_stocking() -> None:
    """The options page is their one reference, which the class docstring cites."""
    text = (DOCS / "reference" / "options.md").read_text(encoding="utf-8")
    section = text.split("## Keyword arguments of `Stocking(sock, ...)`", 1)[1].split("\n## ", 1)[0]
    described = {
        name
        for row in re.findall(r"^\| (`[^|]+`) \|", section, re.M)
        for name in re.findall(r"`(\w+)`", row)
    }
    options = [
        name
        for name, parameter in inspect.signature(Stocking).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    assert len(options) >= 14
    assert sorted(set(options) - described) == []
    assert sorted(described - set(options)) == []
    defaults = re.findall(r"^\| `\w+`(?:, `\w+`)? \| ([^|]+) \|", section, re.M)
    assert all(default.strip() for default in defaults)
