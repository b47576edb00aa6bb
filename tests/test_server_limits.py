"""Servers out of file descriptors (EMFILE on accept): issue 10 §5.

A server child (tests/server_emfile.py) runs under a low RLIMIT_NOFILE. Clients
beyond its free descriptors wait in the OS queue while every accept fails. The
server must not spin or log a traceback per failed accept, and must serve the
waiting clients once descriptors are free again.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import npipes

WAIT = 30.0
SCRIPT = Path(__file__).with_name("server_emfile.py")
WINDOW = 2.0  # seconds of failing accepts watched


def _lines(stream: object, into: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line)


def _cpu(proc: subprocess.Popen[str], answers: queue.Queue[str]) -> float:
    assert proc.stdin is not None
    proc.stdin.write("cpu\n")
    proc.stdin.flush()
    line = answers.get(timeout=WAIT)
    assert line.startswith("cpu "), line
    return float(line.split()[1])


@pytest.mark.posix
@pytest.mark.parametrize("mode", ["sync", "aio"])
def test_server_out_of_descriptors_backs_off_and_recovers(mode: str, pipe_name: str) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), mode, pipe_name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    out: queue.Queue[str] = queue.Queue()
    err: queue.Queue[str] = queue.Queue()
    readers = [
        threading.Thread(target=_lines, args=(proc.stdout, out), daemon=True),
        threading.Thread(target=_lines, args=(proc.stderr, err), daemon=True),
    ]
    for reader in readers:
        reader.start()
    served: list[npipes.Connection] = []
    queued: list[npipes.Connection] = []
    try:
        ready = out.get(timeout=WAIT)
        assert ready.startswith("ready "), ready
        free = int(ready.split()[1])
        assert free >= 1
        for n in range(free):  # each takes one descriptor in the server
            conn = npipes.connect(pipe_name, timeout=WAIT)
            served.append(conn)
            conn.send(f"s{n}", timeout=WAIT)
            assert conn.recv(timeout=WAIT) == f"s{n}"
        # The OS queues these; every accept now fails with EMFILE (whether the server
        # or its backend retries them, neither may spin or flood the log).
        for n in range(2):
            conn = npipes.connect(pipe_name, timeout=WAIT)
            queued.append(conn)
            conn.send(f"q{n}", timeout=WAIT)
        before = _cpu(proc, out)
        began = time.monotonic()
        time.sleep(WINDOW)  # the window being measured, not a synchronisation
        used = _cpu(proc, out) - before
        elapsed = time.monotonic() - began
        logged: list[str] = []
        while not err.empty():
            logged.append(err.get())
        chained = ("The above exception was the direct cause", "During handling of the above")
        tracebacks = sum(line.startswith("Traceback") for line in logged) - sum(
            line.startswith(chained) for line in logged
        )
        records = sum(line.startswith("LOG") for line in logged)
        assert tracebacks <= 1, f"{tracebacks} tracebacks logged in {elapsed:.1f} s"
        assert records <= 5, f"{records} log records in {elapsed:.1f} s"
        assert used < 0.25 * elapsed, f"{used:.2f} s of CPU in {elapsed:.1f} s: spinning"

        for conn in served:  # frees descriptors in the server
            conn.close()
        for n, conn in enumerate(queued):
            assert conn.recv(timeout=WAIT) == f"q{n}"
            conn.send("again", timeout=WAIT)
            assert conn.recv(timeout=WAIT) == "again"
    finally:
        for conn in served + queued:
            conn.close()
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            code = proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        for reader in readers:
            reader.join(WAIT)
        proc.stdout.close()
        proc.stderr.close()
    assert code == 0
