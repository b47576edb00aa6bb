"""Run ``npipes`` and the peers of tests/cli14_peers.py as subprocesses (tests/test_cli14*.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PEERS = str(Path(__file__).with_name("cli14_peers.py"))
IS_WINDOWS = sys.platform == "win32"
LONG = "60"  # --timeout for waits that must not expire (loaded machine, Wine)


def npipes_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "npipes", *args]


def run(
    *args: str, stdin: bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        npipes_cmd(*args),
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=timeout,
    )


def start(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        npipes_cmd(*args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def start_peer(*args: str) -> subprocess.Popen[bytes]:
    """A tests/cli14_peers.py program, once it said ``ready``."""
    proc = subprocess.Popen(
        [sys.executable, PEERS, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != b"ready":
        proc.kill()
        _, err = proc.communicate(timeout=60)
        pytest.fail(f"peer did not start: {line!r} {err.decode(errors='replace')}")
    return proc


def start_server(*args: str) -> subprocess.Popen[bytes]:
    """``npipes serve ARGS``, once it printed its ready line on stderr."""
    proc = start("serve", *args)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode(errors="replace")
    if "serving" not in line:
        proc.kill()
        proc.communicate(timeout=60)
        pytest.fail(f"serve did not start: {line!r}")
    return proc


def finish(proc: subprocess.Popen[bytes], timeout: float = 120) -> tuple[int, bytes, bytes]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=60)


def one_error_line(err: bytes) -> str:
    """The stderr of a failed command: exactly one readable line, no traceback."""
    text = err.decode("utf-8", errors="replace")
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    assert not re.search(r"(?<![\w-])b['\"]", text), text  # no bytes repr
    return lines[0]


@pytest.fixture
def private_runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Give this test (and its children) their own directory for bare names.

    ``npipes clean`` removes every stale socket file of the user, and other test
    runs on this machine share the default directory: clean tests use their own
    (``$XDG_RUNTIME_DIR/npipes``, a short path for sun_path). No effect on Windows.
    """
    path = tempfile.mkdtemp(prefix="c14")
    monkeypatch.setenv("XDG_RUNTIME_DIR", path)
    yield path
    shutil.rmtree(path, ignore_errors=True)
