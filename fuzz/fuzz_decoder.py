"""Coverage-guided fuzzing of the stockings decoder with atheris.

Checks what ``tests/unit/test_fuzz.py`` checks (the same messages and faults as a
plain reference decoder, nothing escaping but ``ProtocolError``, nothing
held beyond what was fed), with libFuzzer choosing the inputs.

Run from the repository root (needs ``pip install -e '.[fuzz]'``)::

    python fuzz/fuzz_decoder.py -max_total_time=300 -rss_limit_mb=1024 -timeout=10 [corpus/]

libFuzzer's ``-timeout`` catches hangs and ``-rss_limit_mb`` over-allocation.
"""

from __future__ import annotations

import os
import sys

import atheris

# tests/ for conftest, which test_fuzz imports; tests/unit/ for test_fuzz itself.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "unit"))

with atheris.instrument_imports(include=["stockings"]):
    import stockings._framing  # noqa: F401  (instrumented before anything imports it)

from test_fuzz import check_decoder

__all__ = ["test_one_input"]

_LIMITS = (None, 0, 63, 8192, 2**40)


def test_one_input(data: bytes) -> None:
    """Decode one fuzzer-chosen stream, with fuzzer-chosen cuts and limit."""
    provider = atheris.FuzzedDataProvider(data)
    choice = provider.ConsumeIntInRange(0, len(_LIMITS))
    max_size = _LIMITS[choice] if choice < len(_LIMITS) else provider.ConsumeIntInRange(0, 70_000)
    cuts = [provider.ConsumeIntInRange(0, 4096) for _ in range(provider.ConsumeIntInRange(0, 16))]
    stream = provider.ConsumeBytes(provider.remaining_bytes())
    check_decoder(stream, cuts, max_size)


def main() -> None:
    """Hand the harness to libFuzzer, with the command line's options."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
