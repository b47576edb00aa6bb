"""``tools/soak`` runs, finds nothing lost, and prints its one-line summary; and the
defects the soak found stay fixed (each test below failed before its fix)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import npipes

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(
    r"^soak (OK|FAIL): seconds=\d+ seed=\d+ sent=(\d+) delivered=(\d+) failed=(\d+)"
    r" abandoned=(\d+) lost=(\d+) untyped=(\d+) connections=(\d+) timeouts=\d+"
    r" disconnects=\d+ kills_client=\d+ kills_server=\d+ torn_lines=\d+ corrupt_at_server=(\d+)$"
)


@pytest.mark.posix
@pytest.mark.slow
def test_soak_for_10_seconds_loses_nothing() -> None:
    """A 10-second soak: exit status 0, one summary line, nothing lost, every message
    accounted for (sent = delivered + failed + abandoned + lost)."""
    done = _soak("--seconds", "10", "--seed", "11")
    lines = done.stdout.splitlines()
    assert len(lines) == 1, (done.stdout, done.stderr[-3000:])
    match = SUMMARY.match(lines[0])
    assert match, lines[0]
    assert done.returncode == 0, (lines[0], done.stderr[-3000:])
    verdict, sent, delivered, failed, abandoned, lost, untyped, connections, corrupt = (
        match.groups()
    )
    assert verdict == "OK"
    assert (int(lost), int(untyped), int(corrupt)) == (0, 0, 0)
    assert int(sent) == int(delivered) + int(failed) + int(abandoned) + int(lost)
    assert int(delivered) > 0
    assert int(connections) > 0


@pytest.mark.posix
@pytest.mark.slow
def test_soak_reports_messages_lost_on_purpose_and_fails() -> None:
    """The detector works: servers that silently drop one echo in 50 (``--drop-one-in``)
    make the soak report lost messages and exit 1."""
    done = _soak("--seconds", "5", "--seed", "12", "--drop-one-in", "50")
    match = SUMMARY.match(done.stdout.strip())
    assert match, done.stdout
    assert match.group(1) == "FAIL"
    assert int(match.group(6)) > 0  # lost
    assert done.returncode == 1


def _soak(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run(
        [str(ROOT / "tools" / "soak"), *args],
        capture_output=True,
        text=True,
        timeout=110,
        env=env,
        check=False,
    )


def test_soak_help_defines_lost() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "soak.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "lost** (must be 0)" in done.stdout
    assert "--seconds" in done.stdout


# -- defects the soak found ----------------------------------------------------------------


def test_npipes1_message_whose_crc_is_zero_passes_a_crc_receiver(pipe_name: str) -> None:
    """npipes 1.x writes 0 for "no CRC-32", but 0 is also the CRC-32 of the empty
    message: with ``crc=True`` on both sides an empty message was refused
    (``ChecksumError``), and the soak's npipes1 servers dropped their clients."""
    payload = ""  # crc32(b"") == 0
    received: list[object] = []

    def serve(listener: npipes.Listener) -> None:
        with listener.accept(timeout=30) as conn:
            received.extend(conn.recv(timeout=30) for _ in range(3))

    with npipes.listen(pipe_name, framing="npipes1", crc=True) as listener:
        thread = threading.Thread(target=serve, args=(listener,))
        thread.start()
        with npipes.connect(pipe_name, framing="npipes1", crc=True, timeout=30) as conn:
            conn.send("before", timeout=30)
            conn.send(payload, timeout=30)
            conn.send("after", timeout=30)
        thread.join(60)
    assert received == ["before", payload, "after"]
