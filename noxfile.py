"""The test suite on every supported Python: ``nox`` (all of them) or ``nox -p 3.12``.

Each session makes a venv with that interpreter's own ``venv`` module,
installs the project with its test and bench extras (the comparison
tests run against pyzmq where it is installed) and runs the whole suite.
``.ci/matrix`` runs these sessions in CI, after it has made the pyenv
interpreters findable; the classifiers in pyproject.toml list exactly these
versions.
"""

from __future__ import annotations

import nox

#: The versions CI tests; keep pyproject.toml's classifiers in step.
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]

nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["tests"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole suite; extra arguments go to pytest (``nox -- -k netns``)."""
    session.install("-q", "-e", ".[test,bench]")
    session.run("python", "-c", "import sys; print('Python', sys.version)")
    session.run("python", "-m", "pytest", "-q", *session.posargs)
