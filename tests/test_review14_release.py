"""Review of issue 14's tools/check-dist: the wheel holds the library only."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_check_dist_refuses_tests_inside_the_package(tmp_path: Path) -> None:
    """A wheel with ``npipes/tests/...`` or ``npipes/benchmarks/...`` is not the library only."""
    init = (ROOT / "src" / "npipes" / "__init__.py").read_text(encoding="utf-8")
    found = re.search(r'^__version__ = "([^"]+)"$', init, re.M)
    assert found is not None
    version = found.group(1)
    dist = tmp_path / "dist"
    dist.mkdir()
    with zipfile.ZipFile(dist / f"npipes-{version}-py3-none-any.whl", "w") as zf:
        for module in (ROOT / "src" / "npipes").rglob("*.py"):
            zf.writestr("npipes/" + module.relative_to(ROOT / "src" / "npipes").as_posix(), "")
        zf.writestr("npipes/py.typed", "")
        zf.writestr("npipes/tests/test_stray.py", "")
        zf.writestr("npipes/benchmarks/run.py", "")
    with tarfile.open(dist / f"npipes-{version}.tar.gz", "w:gz") as tf:
        tf.add(ROOT / "pyproject.toml", arcname=f"npipes-{version}/pyproject.toml")
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "check-dist"), str(dist)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "npipes/tests/test_stray.py" in done.stdout, done.stdout
    assert "npipes/benchmarks/run.py" in done.stdout, done.stdout
