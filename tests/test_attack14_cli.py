"""Attacks on the ``npipes`` command (issue 14 §1) with hostile message contents:
real processes, a real terminal (pty) where the output goes to one."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli14_helpers import LONG, finish, npipes_cmd, run, start, start_server

pytestmark = pytest.mark.posix

# OSC window title + BEL, clear screen, an 8-bit CSI (C1 control), a DEL.
_HOSTILE_TEXT = "hi \x1b]2;owned\x07\x1b[2J\x9b31m\x7f end"


def test_recv_on_a_terminal_does_not_pass_escape_sequences(pipe_name: str) -> None:
    """A peer's text printed raw to a terminal can retitle it, clear it, or (on some
    terminals) make it answer with input: on a terminal, control characters are
    shown escaped (``--binary`` still writes the exact bytes)."""
    import pty

    leader, follower = pty.openpty()
    try:
        receiver = subprocess.Popen(
            npipes_cmd("recv", "--name", pipe_name, "--count", "1", "--timeout", LONG),
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=subprocess.PIPE,
        )
        os.close(follower)
        sent = run("send", "--name", pipe_name, "--timeout", LONG, _HOSTILE_TEXT)
        assert sent.returncode == 0, sent.stderr
        seen = b""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and b"end" not in seen:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the receiver closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
    code, _, err = finish(receiver)
    assert code == 0, err
    assert b"hi " in seen, seen
    assert b" end" in seen, seen
    for control in (b"\x1b", b"\x07", "\x9b".encode(), b"\x7f"):
        assert control not in seen, seen


def test_recv_to_a_pipe_keeps_the_text_exact(pipe_name: str) -> None:
    """Escaping is for terminals only: a pipeline gets the message as sent."""
    receiver = subprocess.Popen(
        npipes_cmd("recv", "--name", pipe_name, "--count", "1", "--timeout", LONG),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    sent = run("send", "--name", pipe_name, "--timeout", LONG, _HOSTILE_TEXT)
    assert sent.returncode == 0, sent.stderr
    code, out, err = finish(receiver)
    assert code == 0, err
    assert out == (_HOSTILE_TEXT + "\n").encode()


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


@pytest.mark.slow
@pytest.mark.parametrize("source", ["stdin", "file"])
def test_send_endless_input_stops_at_the_message_limit(pipe_name: str, source: str) -> None:
    """``npipes send -`` (or ``--file``) on endless input (``/dev/zero``, ``yes``)
    stops reading past the largest message it could send and says so, instead
    of reading until memory runs out."""
    args = ["send", "--name", pipe_name, "--binary", "--timeout", "5"]
    args += ["-"] if source == "stdin" else ["--file", "/dev/zero"]
    with open("/dev/zero", "rb") as zero:
        done = subprocess.run(
            npipes_cmd(*args),
            stdin=zero if source == "stdin" else subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
            preexec_fn=_limit_memory,
        )
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 1, err
    assert "Traceback" not in err, err
    assert "MemoryError" not in err, err
    assert "larger than" in err, err


def test_recv_into_a_closed_pipe_exits_quietly(pipe_name: str) -> None:
    """``npipes recv --count 0 | head -1``: once the reader is gone, recv stops
    without an error line and exits 141 (128 + SIGPIPE, what a shell reports for
    ``cat`` in the same place), not 1 with ``[Errno 32] Broken pipe``."""
    receiver = subprocess.Popen(
        npipes_cmd("recv", "--name", pipe_name, "--count", "0", "--timeout", LONG),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        sent = run("send", "--name", pipe_name, "--timeout", LONG, "first")
        assert sent.returncode == 0, sent.stderr
        assert receiver.stdout is not None
        assert receiver.stdout.readline() == b"first\n"
        receiver.stdout.close()  # what head -1 does after its line
        for _ in range(2):  # the first one may still be taken and then not printed
            run("send", "--name", pipe_name, "--timeout", "5", "second")
        err = receiver.stderr.read() if receiver.stderr is not None else b""
        code = receiver.wait(timeout=120)
    finally:
        receiver.kill()
        receiver.wait()
        if receiver.stderr is not None:
            receiver.stderr.close()
    assert err == b"", err
    assert code == 141


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_serve_stopped_leaves_no_exec_command_running(pipe_name: str) -> None:
    """A ``serve --exec CMD`` stopped by SIGTERM while CMD runs (a CMD that never
    exits, fed by a client) does not leave CMD behind, orphaned."""
    server = start_server(
        "--name", pipe_name, "--exec", f"{sys.executable} -c 'import time; time.sleep(600)'"
    )
    client = start("send", "--name", pipe_name, "--wait", "--timeout", LONG, "hi")
    try:
        deadline = time.monotonic() + 60
        while not (kids := _children(server.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert kids, "CMD never started"
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=120)
        deadline = time.monotonic() + 30
        while any(_alive(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [k for k in kids if _alive(k)]
    finally:
        for proc in (server, client):
            proc.kill()
            proc.communicate(timeout=60)
    for k in left:
        os.kill(k, signal.SIGKILL)
    assert not left, "serve exited and left its CMD running"


def test_send_a_non_utf8_argument_travels_as_bytes(pipe_name: str) -> None:
    """A MESSAGE argument that is not UTF-8 (argv bytes from a file name, a
    hostile script) travels as a bytes message, as non-UTF-8 stdin does, rather
    than failing after the wait with a UnicodeEncodeError."""
    import base64
    import json

    receiver = subprocess.Popen(
        npipes_cmd("recv", "--name", pipe_name, "--json", "--timeout", LONG),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    argv = [os.fsencode(a) for a in npipes_cmd("send", "--name", pipe_name, "--timeout", LONG)]
    sent = subprocess.run([*argv, b"a\x9bb"], capture_output=True, timeout=120)
    assert sent.returncode == 0, sent.stderr
    code, out, err = finish(receiver)
    assert code == 0, err
    assert base64.b64decode(json.loads(out)["base64"]) == b"a\x9bb"
