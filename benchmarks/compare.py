"""Compare stockings with its peers over TCP loopback and print one table.

Usage: ``python benchmarks/compare.py [--quick] [--repeat N] [--systems a,b]
[--tests stream,rtt,fanin,tls] [--lib PATH]``; see ``--help`` and
``docs/topics/performance-benchmark.md``. The work is in the ``comparison``
package next to this file.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__: list[str] = []

if __name__ == "__main__":
    # The comparison package lives next to this script.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from comparison.report import main

    raise SystemExit(main())
