"""Review of issue 14's ``npipes`` command: what a hanging ``serve --exec`` CMD leaves behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

import npipes
from cli14_helpers import finish, npipes_cmd, one_error_line, run, start, stop

pytestmark = pytest.mark.posix

_HANG = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(300)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_serve_exec_stop_ends_a_hanging_cmd(pipe_name: str, how: signal.Signals) -> None:
    """Stopping ``serve --exec`` (no --timeout) ends a CMD still running (no orphan)."""
    fd, marker = tempfile.mkstemp(prefix="r14pid")
    os.close(fd)
    os.unlink(marker)
    cmd = f'{sys.executable} -c "{_HANG}" {marker}'
    server = subprocess.Popen(
        npipes_cmd("serve", "--exec", cmd, "--name", pipe_name),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    pid = 0
    try:
        assert server.stderr is not None
        assert "serving" in server.stderr.readline().decode()
        conn = npipes.connect(pipe_name, timeout=60)
        try:
            conn.send("x", timeout=60)
            end = time.monotonic() + 60
            while time.monotonic() < end:
                try:
                    with open(marker) as f:
                        text = f.read()
                    if text:
                        pid = int(text)
                        break
                except FileNotFoundError:
                    pass
                time.sleep(0.05)
            assert pid, "the CMD never started"
            server.send_signal(how)
            code, _, err = finish(server, timeout=60)
        finally:
            conn.close()
        assert code in (0, 130), err
        end = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < end:
            time.sleep(0.05)
        assert not _alive(pid), "serve exited but left its CMD running"
    finally:
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)
        if server.poll() is None:
            server.kill()
            server.communicate(timeout=60)
        if os.path.exists(marker):
            os.unlink(marker)


def test_send_a_message_the_framing_cannot_carry_fails_at_once(pipe_name: str) -> None:
    """``send`` refuses a newline under ``--framing lines`` with 2 before waiting for a receiver."""
    start = time.monotonic()
    done = run("send", "a\nb", "--name", pipe_name, "--framing", "lines", "--timeout", "60")
    took = time.monotonic() - start
    assert done.returncode == 2, done.stderr
    assert "newline" in one_error_line(done.stderr)
    assert took < 30, f"waited {took:.0f} s for a receiver first"


def test_echo_piped_into_send_under_lines_framing(pipe_name: str) -> None:
    """``echo hi | npipes send - --framing lines``: the line's own newline is the framing's."""
    receiver = start("recv", "--name", pipe_name, "--framing", "lines", "--timeout", "60")
    try:
        sent = run(
            "send", "-", "--name", pipe_name, "--framing", "lines", "--timeout", "60", stdin=b"hi\n"
        )
        code, out, err = finish(receiver, timeout=90)
    finally:
        stop(receiver)
    assert sent.returncode == 0, sent.stderr
    assert code == 0, err
    assert out == b"hi\n"


def test_serve_exec_under_lines_framing_answers_a_line(pipe_name: str) -> None:
    """``serve --framing lines --exec "wc -c"``: CMD's line (with its newline) is one reply line."""
    server = subprocess.Popen(
        npipes_cmd("serve", "--framing", "lines", "--exec", "wc -c", "--name", pipe_name),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert server.stderr is not None
        assert "serving" in server.stderr.readline().decode()
        with npipes.connect(pipe_name, framing="lines", timeout=60) as conn:
            conn.send("hello", timeout=60)
            assert conn.recv(timeout=60).strip() == "5"
            conn.send("hi", timeout=60)  # the connection keeps serving
            assert conn.recv(timeout=60).strip() == "2"
    finally:
        server.terminate()
        server.communicate(timeout=60)
