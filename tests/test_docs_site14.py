"""The documentation site builds with ``mkdocs build --strict`` (mkdocs.yml): every
page in the nav exists, no link or anchor is broken, every page of docs/ is in the
nav, and mkdocstrings renders the API reference from the docstrings in src/ without
a warning. POSIX only: the Windows CPython under Wine has no mkdocs."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.posix

ROOT = Path(__file__).parent.parent
MKDOCS_MISSING = importlib.util.find_spec("mkdocs") is None


def _nav_files() -> list[str]:
    """The Markdown files named in mkdocs.yml's nav (``- Title: file.md`` lines)."""
    files = []
    in_nav = False
    for line in (ROOT / "mkdocs.yml").read_text(encoding="utf-8").splitlines():
        if not line.startswith((" ", "-")):
            in_nav = line.startswith("nav:")
            continue
        if in_nav and line.rstrip().endswith(".md"):
            files.append(line.rsplit(":", 1)[1].strip())
    return files


def test_every_nav_page_exists() -> None:
    files = _nav_files()
    assert "index.md" in files, files
    missing = [name for name in files if not (ROOT / "docs" / name).is_file()]
    assert not missing, f"in mkdocs.yml's nav but not in docs/: {missing}"


@pytest.mark.skipif(MKDOCS_MISSING, reason="mkdocs is not installed (the 'docs' extra)")
def test_site_builds_strictly(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    reference = (tmp_path / "site" / "reference" / "index.html").read_text(encoding="utf-8")
    for name in ("npipes.connect", "npipes.aio.connect", "npipes.errors.NpipesError"):
        assert f'id="{name}"' in reference, f"the API reference lacks {name}"
