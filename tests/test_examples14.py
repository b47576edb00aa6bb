"""Every file in examples/ is exercised by a test (issue 14, section 2).

`COVERAGE` says which test runs each file; `test_every_example_file_is_covered` fails for a
file no rule claims, so a new example comes with its test. The rules:

- examples/c: the sources are built and run against npipes by tests/test_examples_c.py
  (checked: it names each of them); the Makefile is run here (``make check``), into a
  temporary directory.
- examples/csharp: built and run with Mono by the .NET tests, tests/test_dotnet14*.py
  (checked: one of them names examples/csharp).
- examples/python: each program runs here as real processes, one per terminal of its
  docstring.
- README.md files: documentation of their directory, not programs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from doc_samples import ROOT, Running, child_env

EXAMPLES = ROOT / "examples"
PYTHON = EXAMPLES / "python"
DEADLINE = 90.0


def _names_it(test_glob: str, *words: str) -> bool:
    """Whether a test module matching ``test_glob`` mentions every one of ``words``."""
    for module in (ROOT / "tests").glob(test_glob):
        text = module.read_text(encoding="utf-8")
        if all(word in text for word in words):
            return True
    return False


def _owner(path: Path) -> str | None:
    """The test that exercises ``path`` (relative to examples/), or None."""
    parts = path.parts
    if path.name == "README.md":
        return "documentation"
    if parts[0] == "c":
        if path.name == "Makefile":
            return "tests/test_examples14.py::test_c_makefile_builds_and_checks"
        if path.suffix in {".c", ".h"} and _names_it("test_examples_c.py", f'"{path.name}"'):
            return "tests/test_examples_c.py"
        return None
    if parts[0] == "csharp":
        if not list((ROOT / "tests").glob("test_dotnet14*.py")):
            pytest.xfail("the .NET tests (tests/test_dotnet14*.py) are not in this branch yet")
        for pattern in ("test_dotnet14*.py", "dotnet14*.py"):
            if _names_it(pattern, '"examples"', '"csharp"') or _names_it(
                pattern, "examples/csharp"
            ):
                return "tests/test_dotnet14*.py"
        return None
    if parts[0] == "python" and path.suffix == ".py":
        return f"tests/test_examples14.py (test_python_{path.stem})"
    return None


FILES = sorted(
    str(path.relative_to(EXAMPLES).as_posix())
    for path in EXAMPLES.rglob("*")
    if path.is_file() and "__pycache__" not in path.parts
)


@pytest.mark.parametrize("relative", FILES)
def test_every_example_file_is_covered(relative: str) -> None:
    assert _owner(Path(relative)), f"examples/{relative}: no test exercises it"


def test_every_python_example_has_its_test() -> None:
    tests = {name for name in globals() if name.startswith("test_python_")}
    wanted = {f"test_python_{path.stem}" for path in PYTHON.glob("*.py")}
    assert wanted <= tests, sorted(wanted - tests)


@pytest.mark.posix
@pytest.mark.skipif(
    not shutil.which("make") or not shutil.which("cc"),
    reason="make and cc (POSIX) are not installed",
)
def test_c_makefile_builds_and_checks(tmp_path: Path) -> None:
    done = subprocess.run(
        ["make", "-C", str(EXAMPLES / "c"), f"OUT={tmp_path}", "all", "check"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert {"npclient", "npserver", "npvectors"} <= {p.name for p in tmp_path.iterdir()}


def _run(
    tmp_path: Path, *commands: list[str], server: list[str] | None = None
) -> tuple[list[Running], Running | None]:
    """Start ``server`` (stopped by Ctrl+C later) and ``commands``, one process each."""
    env = child_env()
    started = []
    stopped = None
    try:
        if server is not None:
            stopped = Running("server", [sys.executable, *server], tmp_path, env)
        for number, command in enumerate(commands):
            started.append(Running(str(number), [sys.executable, *command], tmp_path, env))
    except BaseException:
        for run in [*started, *([stopped] if stopped else [])]:
            run.kill()
        raise
    return started, stopped


def _finish(run: Running) -> str:
    code = run.finish(DEADLINE)
    assert code == 0, f"{run.label}: exit {code}\n{run.out}\n{run.err}"
    return run.out


def test_python_worker_pool(tmp_path: Path) -> None:
    name = f"pool-{uuid.uuid4().hex[:10]}"
    script = str(PYTHON / "worker_pool.py")
    runs, _ = _run(
        tmp_path,
        [script, "dispatch", "--name", name, "--jobs", "20", "--workers", "3"],
        [script, "work", "--name", name],
        [script, "work", "--name", name],
        [script, "work", "--name", name],
    )
    try:
        dispatcher = _finish(runs[0]).splitlines()
        workers = [_finish(run) for run in runs[1:]]
    finally:
        for run in runs:
            run.kill()
    assert dispatcher == [f"job {n}: {n * n}" for n in range(1, 21)] + ["20 jobs done by 3 workers"]
    # Every job was done once, by one of the workers.
    assert sum(int(out.split()[-2]) for out in workers) == 20


def test_python_request_reply(tmp_path: Path) -> None:
    name = f"upper-{uuid.uuid4().hex[:10]}"
    script = str(PYTHON / "request_reply.py")
    runs, server = _run(
        tmp_path,
        [script, "call", "--name", name, "hello", "fail", "world"],
        [script, "call", "--name", name, "again"],
        server=[script, "serve", "--name", name],
    )
    assert server is not None
    try:
        outs = [_finish(run).splitlines() for run in runs]
        assert server.missing(["serving; Ctrl+C stops"]) is None, server.out + server.err
        server.interrupt()
        code = server.finish(DEADLINE)
    finally:
        for run in [*runs, server]:
            run.kill()
    assert outs == [["HELLO", "error: ValueError: asked to fail", "WORLD"], ["AGAIN"]]
    if sys.platform != "win32":  # killed on Windows: a console Ctrl+C cannot be aimed
        assert code in (130, -2), server.err
        assert server.err.strip().splitlines()[-1:] == ["KeyboardInterrupt"], server.err


def test_python_pubsub(tmp_path: Path) -> None:
    name = f"ticks-{uuid.uuid4().hex[:10]}"
    script = str(PYTHON / "pubsub.py")
    runs, _ = _run(
        tmp_path,
        [script, "publish", "--name", name, "--subscribers", "2", "--count", "5"],
        [script, "subscribe", "--name", name],
        [script, "subscribe", "--name", name],
    )
    try:
        publisher = _finish(runs[0])
        subscribers = [_finish(run).splitlines() for run in runs[1:]]
    finally:
        for run in runs:
            run.kill()
    assert publisher.strip() == "published 5 messages to 2 subscribers"
    assert subscribers == [[f"tick {n}" for n in range(5)]] * 2
