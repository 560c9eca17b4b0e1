"""Compare stockings with its peers over TCP loopback and print one table.

Usage: ``python benchmarks/compare.py [--quick] [--repeat N] [--systems a,b]``;
the same as ``stockings bench --compare``. See ``stockings._compare``.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__: list[str] = []

if __name__ == "__main__":
    # Run from a checkout without installing: prefer the source tree.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from stockings._compare import main

    raise SystemExit(main())
