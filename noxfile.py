"""Nox sessions: the whole test suite on every supported CPython, and on Windows CPython under Wine.

``nox -s tests-3.12`` (or ``tests-3.11``, ``tests-3.13``) installs ``-e .[dev]`` into
a venv of its own and runs the full suite under coverage.py; ``nox -s wine`` runs
``tools/wine-pytest`` with coverage in the Windows python. Each run leaves coverage data files
(``.coverage.*``) in the checkout root; ``tools/coverage-check`` combines them and checks every
module. Every version runs the whole suite because one defect showed only on 3.12+.

The interpreters come from PATH, or from pyenv (``pyenv root``/versions/3.1x.*), whose bin
folders are put on PATH here so that nox finds ``python3.12`` without ``pyenv global``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import nox

PYTHONS = ["3.11", "3.12", "3.13"]
ROOT = Path(__file__).resolve().parent

nox.options.sessions = [f"tests-{v}" for v in PYTHONS] + ["wine"]
nox.options.reuse_existing_virtualenvs = True


def _pyenv_root() -> Path | None:
    """pyenv's root folder, or None without pyenv."""
    if os.environ.get("PYENV_ROOT"):
        return Path(os.environ["PYENV_ROOT"])
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        default = Path.home() / ".pyenv"
        return default if default.is_dir() else None
    out = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False)
    return Path(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None


def _add_pyenv_versions_to_path() -> None:
    """Put the newest pyenv CPython of each supported minor version first on PATH."""
    root = _pyenv_root()
    if root is None:
        return
    dirs = []
    for minor in PYTHONS:
        found = []
        for d in (root / "versions").glob(f"{minor}.*"):
            m = re.fullmatch(re.escape(minor) + r"\.(\d+)", d.name)
            if m and (d / "bin" / f"python{minor}").exists():
                found.append((int(m.group(1)), d / "bin"))
        if found:
            dirs.append(str(max(found)[1]))
    os.environ["PATH"] = os.pathsep.join([*dirs, os.environ.get("PATH", "")])


_add_pyenv_versions_to_path()


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole test suite on this CPython, against the installed package, under coverage."""
    # Editable, as the README installs it: tests/test_bench.py runs the checkout's harness,
    # which `npipes bench` finds next to the package only in a source tree.
    session.install("-e", ".[dev]")
    # The venv's install is under test, not whatever PYTHONPATH points at.
    session.env.pop("PYTHONPATH", None)
    os.environ.pop("PYTHONPATH", None)
    args = session.posargs or ["-q"]
    session.run("python", "-m", "coverage", "run", "-m", "pytest", "-p", "no:cacheprovider", *args)


@nox.session(python=False)
def wine(session: nox.Session) -> None:
    """The whole test suite on Windows CPython 3.13 under Wine, under coverage."""
    session.env["NPIPES_WINE_COVERAGE"] = "1"
    args = session.posargs or ["-q"]
    session.run(str(ROOT / "tools" / "wine-pytest"), *args, external=True)
