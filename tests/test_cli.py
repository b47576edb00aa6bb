"""The command line: ``npipes demo`` (the main job), ``send`` and ``recv``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from npipes.cli import main


def _npipes(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "npipes", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_demo_runs_end_to_end() -> None:
    result = _npipes("demo")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "received 'Hello', CRC-32 verified" in out
    assert "echoed 'Hello' back" in out
    for label in ("round trip 64 B", "round trip 64 KiB", "throughput 1 MiB", "throughput 16 MiB"):
        assert label in out
    assert "npipes recv" in out
    assert "npipes send" in out


def test_send_then_recv_either_order(pipe_name: str) -> None:
    receiver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "npipes",
            "recv",
            "--name",
            pipe_name,
            "--crc",
            "--count",
            "2",
            "--timeout",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    for text in ("first message", "second message"):
        sent = _npipes("send", "--name", pipe_name, "--crc", "--timeout", "60", text)
        assert sent.returncode == 0, sent.stderr
    out, err = receiver.communicate(timeout=60)
    assert receiver.returncode == 0, err
    assert out.splitlines() == ["first message", "second message"]


def test_recv_timeout_reports_error(pipe_name: str, capsys: pytest.CaptureFixture[str]) -> None:
    # issue 14: a timeout exits 3 (was 1) with one line saying what to do (no class name).
    assert main(["recv", "--name", pipe_name, "--timeout", "0.2"]) == 3
    assert "within 0.2 s" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert "2.0.0.dev0" in capsys.readouterr().out
