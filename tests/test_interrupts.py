"""Ctrl+C ends a blocked accept or recv at once (a real SIGINT to a real process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

SCRIPT = """
import sys, npipes
name, what = sys.argv[1], sys.argv[2]
with npipes.listen(name) as listener:
    if what == "accept":
        try:
            print("ready", flush=True)
            listener.accept()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            raise SystemExit(3)
    else:
        with npipes.connect(name) as client, listener.accept() as conn:
            try:
                print("ready", flush=True)
                conn.recv()
            except KeyboardInterrupt:
                print("interrupted", flush=True)
                raise SystemExit(3)
"""


@pytest.mark.posix
@pytest.mark.parametrize("what", ["accept", "recv"])
def test_sigint_interrupts_blocking_call(pipe_name: str, what: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, pipe_name, what],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)  # so the signal lands inside the blocking call, not before it
        start = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=10) == 3
        assert time.monotonic() - start < 5
        assert proc.stdout.read().strip() == "interrupted"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
