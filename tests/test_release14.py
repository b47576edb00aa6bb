"""Release-ready (issue 14 §4): one version, a Keep a Changelog CHANGELOG, a release
job on tags, and a dist checker that refuses a wheel holding more than the library.

.ci/run builds the real sdist and wheel and runs tools/check-dist on them; these
tests prove the checker and the project files it relies on."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import npipes

ROOT = Path(__file__).parent.parent
KINDS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def test_the_version_is_written_once() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    project = pyproject.split("[project]", 1)[1].split("\n[", 1)[0]
    assert re.search(r"^version\s*=", project, re.M) is None
    assert re.search(r'^dynamic = \["version"\]', project, re.M)
    assert 'version = { attr = "npipes.__version__" }' in pyproject
    literal = re.compile(re.escape(f'"{npipes.__version__}"'))
    holders = [
        p.relative_to(ROOT).as_posix()
        for p in [ROOT / "setup.py", ROOT / "pyproject.toml", *(ROOT / "src").rglob("*.py")]
        if literal.search(p.read_text(encoding="utf-8"))
    ]
    assert holders == ["src/npipes/__init__.py"]


def test_changelog_is_keep_a_changelog() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert text.startswith("# Changelog\n")
    assert "keepachangelog.com" in text
    versions = re.findall(r"^## (.*)$", text, re.M)
    assert versions, "no version section"
    assert versions[0] == "[Unreleased]"
    for heading in versions[1:]:
        assert re.fullmatch(r"\[\d+\.\d+\.\d+[\w.]*\] - \d{4}-\d{2}-\d{2}", heading), heading
    for section in re.split(r"^## .*$", text, flags=re.M)[1:]:
        kinds = re.findall(r"^### (.*)$", section, re.M)
        assert set(kinds) <= KINDS, kinds
        assert len(kinds) == len(set(kinds)), f"a kind appears twice: {kinds}"


def test_release_job_runs_on_tags_with_trusted_publishing() -> None:
    workflow = (ROOT / ".github" / "workflows" / "wheels.yml").read_text(encoding="utf-8")
    assert 'tags: ["v*"]' in workflow
    release = workflow.split("\n  release:\n", 1)[1]
    assert "needs: [wheels, sdist]" in release
    assert "id-token: write" in release
    assert "pypa/gh-action-pypi-publish" in release
    assert "startsWith(github.ref, 'refs/tags/v')" in release


def _dist(tmp: Path, wheel_files: dict[str, str]) -> Path:
    version = npipes.__version__
    dist = tmp / "dist"
    dist.mkdir()
    with zipfile.ZipFile(dist / f"npipes-{version}-py3-none-any.whl", "w") as zf:
        for name, body in wheel_files.items():
            zf.writestr(name, body)
    src = tmp / f"npipes-{version}"
    src.mkdir()
    (src / "README.md").write_text("x", encoding="utf-8")
    with tarfile.open(dist / f"npipes-{version}.tar.gz", "w:gz") as tf:
        tf.add(src, arcname=src.name)
    return dist


def _check(dist: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "check-dist"), str(dist)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    return done.stdout


def test_check_dist_refuses_a_wheel_with_more_than_the_library(tmp_path: Path) -> None:
    info = f"npipes-{npipes.__version__}.dist-info"
    files = {
        "npipes/__init__.py": "",
        "npipes/py.typed": "",
        "tests/test_x.py": "",
        "benchmarks/run.py": "",
        "npipes/_speedups.c": "",
        f"{info}/METADATA": "",
    }
    out = _check(_dist(tmp_path, files))
    for bad in ("tests/test_x.py", "benchmarks/run.py", "npipes/_speedups.c"):
        assert f"holds {bad}, which is not the library" in out
    assert "holds npipes/__init__.py" not in out
    assert "lacks npipes/connection.py" in out  # every module must be there
    assert "lacks src/npipes/_speedups.c" in out  # the sdist builds the accelerator


def test_check_dist_wants_py_typed(tmp_path: Path) -> None:
    out = _check(_dist(tmp_path, {"npipes/__init__.py": ""}))
    assert "lacks npipes/py.typed" in out
