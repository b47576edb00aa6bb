"""Out of descriptors (``RLIMIT_NOFILE`` in the victim) at every step of opening an endpoint.

Rule under attack: npipes raises its own typed errors (never a bare
``OSError``), and a call that failed leaves no descriptor open, so a process
that retries under descriptor pressure does not make it worse.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PEERS = str(Path(__file__).with_name("attack11_peers.py"))


@pytest.mark.posix
def test_fifo_ends_out_of_descriptors_fail_typed_and_leak_nothing(pipe_name: str) -> None:
    """``open_reader`` and ``open_writer`` with 0..6 descriptors free: each either works
    or raises an NpipesError, and a failed one closed every descriptor it opened."""
    done = subprocess.run(
        [sys.executable, PEERS, "fifo-out-of-descriptors", pipe_name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == 14
    bad = [r for r in results if r["outcome"].startswith("UNTYPED") or r["leaked"]]
    assert not bad, bad


@pytest.mark.posix
def test_endpoints_out_of_descriptors_fail_typed_and_leak_nothing(pipe_name: str) -> None:
    """listen, connect, IPC, serve and the asyncio listen, connect and accept with 0..6
    descriptors free: each works or raises an NpipesError, and leaks no descriptor."""
    done = subprocess.run(
        [sys.executable, PEERS, "endpoints-out-of-descriptors", pipe_name],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == 7 * 7
    bad = [r for r in results if r["outcome"].startswith("UNTYPED") or r["leaked"]]
    assert not bad, bad
