"""The public types hold: mypy --strict over tests/docs/typing/check_types.py."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ROOT / "tests" / "docs" / "typing" / "check_types.py"


@pytest.mark.timeout(180)
def test_type_checkers_accept_and_refuse_what_the_api_promises() -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install -e '.[dev]')")
    # The package under test from src/, whichever way it was installed.
    env = {**os.environ, "MYPYPATH": str(ROOT / "src")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            str(CHECKED),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_type_parameters_cost_nothing_at_run_time() -> None:
    import socket
    from typing import Any

    import stockings

    class Json(stockings.Stocking[Any]):  # the second parameter filled in
        def post_read(self, message: str | bytes) -> Any:
            return ("got", message)

    class Select(stockings.SelectStocking[tuple[str, str], [str, str]]):
        pass

    assert stockings.Stocking[int].__args__ == (int, ...)  # type: ignore[attr-defined]
    assert stockings.Waiter[stockings.Stocking] is not None
    assert Select.flavour == "select"
    a, b = socket.socketpair()
    with stockings.Stocking[str, [str]](a) as plain, Json(b) as json:
        plain.write("hi")
        assert json.read(timeout=10) == ("got", "hi")
