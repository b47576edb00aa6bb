"""Nox sessions: the whole test suite on every supported CPython, and on Windows CPython under Wine.

``nox -s tests-3.12`` (or ``tests-3.11``, ``tests-3.13``) installs ``-e .[dev]`` into
a venv of its own and runs the full suite under coverage.py (3.12 on the pure-Python path,
the others with the C accelerator); ``nox -s wine`` builds the accelerator for Windows with
mingw-w64 and runs ``tools/wine-pytest`` with coverage in the Windows python. Each run leaves
coverage data files (``.coverage.*``) in the checkout root; ``tools/coverage-check`` combines
them and checks every module. Every version runs the whole suite because one defect showed
only on 3.12+.

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


PURE_PYTHONS = {"3.12"}
"""Versions whose session installs as on a machine without a C compiler (``CC=false``:
setup.py's optional extension fails, pip installs pure Python) and runs the whole suite on
that install; the others run with the C accelerator that the editable install builds.
.ci/run runs 3.11 (its README step) and 3.13 accelerated, 3.12 compiler-less: the whole
suite both ways on Linux, and the README's test command proven without a compiler.
(``NPIPES_PURE_PYTHON=1`` turning a built accelerator off has its own tests.)"""


_REMOVE_THIS_BUILD = """
import importlib.machinery, pathlib
package = pathlib.Path("src/npipes")
for suffix in importlib.machinery.EXTENSION_SUFFIXES:
    (package / f"_speedups{suffix}").unlink(missing_ok=True)
"""
"""Delete the running interpreter's build of the accelerator from the source tree."""


def _check_accel(session: nox.Session, pure: bool) -> None:
    """Print the mode this session's suite runs in; fail if it is not the one wanted.

    Without a C compiler the install is pure Python (correct, not a failure); with one, an
    accelerated session that runs pure means the optional build failed: that must not pass.
    """
    got = session.run(
        "python",
        "-c",
        "import npipes._accel as a; print('accelerated' if a.ACCELERATED else 'pure')",
        silent=True,
    )
    if got is None:  # nox --install-only: nothing runs
        return
    got = got.strip()
    want = "pure" if pure else "accelerated"
    session.log(f"npipes runs {got} (wanted: {want})")
    if got != want:
        if want == "accelerated" and shutil.which(os.environ.get("CC", "cc")) is None:
            session.log("no C compiler here: the pure-Python fallback is expected")
            return
        session.error(f"npipes should run {want} here, and runs {got}")


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole test suite on this CPython, against the installed package, under coverage."""
    # Editable, as the README installs it: tests/test_bench.py runs the checkout's harness,
    # which `npipes bench` finds next to the package only in a source tree. It builds the
    # C accelerator next to the sources (one file per CPython version) when it can.
    pure = session.python in PURE_PYTHONS
    session.install("-e", ".[dev]")
    if pure:
        # As on a machine without a C compiler, for npipes alone (its dependencies may need
        # one where they have no wheel): drop this interpreter's build, left by the install
        # above or an earlier run (the editable build lives beside the sources), and install
        # npipes again with every compile failing.
        session.run_install("python", "-c", _REMOVE_THIS_BUILD)
        session.install(
            "--no-deps", "--force-reinstall", "-e", ".", env={"CC": "false", "CXX": "false"}
        )
    # The venv's install is under test, not whatever PYTHONPATH points at.
    session.env.pop("PYTHONPATH", None)
    os.environ.pop("PYTHONPATH", None)
    os.environ.pop("NPIPES_PURE_PYTHON", None)
    session.env["NPIPES_PURE_PYTHON"] = ""  # the install decides: pure only without a compiler
    _check_accel(session, pure)
    args = session.posargs or ["-q"]
    session.run("python", "-m", "coverage", "run", "-m", "pytest", "-p", "no:cacheprovider", *args)


@nox.session(python=False)
def wine(session: nox.Session) -> None:
    """The whole test suite on Windows CPython 3.13 under Wine, under coverage, with the C
    accelerator built by mingw-w64 (tools/build-speedups-mingw; it must load and be used)."""
    session.run(str(ROOT / "tools" / "build-speedups-mingw"), external=True)
    os.environ.pop("NPIPES_PURE_PYTHON", None)
    got = session.run(
        str(ROOT / "tools" / "wine-pytest"),
        "--python",
        "-c",
        "import npipes._accel as a; print('accelerated' if a.ACCELERATED else 'pure')",
        external=True,
        silent=True,
    )
    got = (got or "").strip().splitlines()[-1:] or [""]
    session.log(f"npipes runs {got[0]} under Wine (wanted: accelerated)")
    if got[0] != "accelerated":
        session.error("the mingw-built accelerator does not load under Wine")
    session.env["NPIPES_WINE_COVERAGE"] = "1"
    args = session.posargs or ["-q"]
    session.run(str(ROOT / "tools" / "wine-pytest"), *args, external=True)
