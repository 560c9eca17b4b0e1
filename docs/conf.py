"""Sphinx configuration for the stockings documentation site.

Build with ``python -m sphinx -W --keep-going -b html docs docs/_build/html``
(``.ci/docs`` does). Pages are MyST Markdown; the reference comes from the
docstrings (autodoc + napoleon), the CLI page from the argparse parser.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The docs describe the source tree they sit in, installed or not.
sys.path.insert(0, str(ROOT / "src"))

import stockings  # noqa: E402

project = "stockings"
author = "The stockings developers"
copyright = "The stockings developers"  # noqa: A001 - Sphinx's own name
release = stockings.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinxarg.ext",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist"]
# Headings down to ### get anchors, so pages can link to sections.
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# No network during a build: the Python docs' inventory is optional, and
# links to it stay plain text when it cannot be fetched.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

html_theme = "furo"
html_title = f"stockings {release}"
html_static_path: list[str] = []
