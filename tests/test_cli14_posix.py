"""The ``npipes`` command on POSIX: Ctrl+C and SIGTERM, stale socket files, the progress bar.

Signals: Windows has no SIGINT to send to one process (CTRL_C_EVENT goes to a
whole console group), so these run on POSIX only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

import npipes
from cli14_helpers import (
    LONG,
    finish,
    npipes_cmd,
    private_runtime,  # noqa: F401 - a fixture
    run,
    start_peer,
    start_server,
)
from npipes._names import resolve

pytestmark = pytest.mark.posix


def _sigint_default() -> None:
    # A child of a shell without job control inherits SIGINT ignored, and Python
    # then installs no KeyboardInterrupt handler: give it the default back.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_fresh(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        npipes_cmd(*args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_sigint_default,
    )


def _wait_for_server(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    assert "serving" in line, line


def test_serve_ctrl_c_exits_130_and_frees_the_name(pipe_name: str) -> None:
    server = start_fresh("serve", "--echo", "--name", pipe_name)
    _wait_for_server(server)
    with npipes.connect(pipe_name, timeout=60) as conn:  # a client still connected
        assert conn.request("hi", timeout=60) == "hi"
        server.send_signal(signal.SIGINT)
        code, _, err = finish(server, timeout=60)
    assert code == 130, err
    assert b"Traceback" not in err
    assert not os.path.exists(resolve(pipe_name).path)


def test_serve_sigterm_exits_0(pipe_name: str) -> None:
    server = start_fresh("serve", "--echo", "--name", pipe_name)
    _wait_for_server(server)
    server.send_signal(signal.SIGTERM)
    code, _, err = finish(server, timeout=60)
    assert code == 0, err
    assert b"Traceback" not in err
    assert not os.path.exists(resolve(pipe_name).path)


@pytest.mark.parametrize("extra", [(), ("--connect",)])
def test_recv_forever_ctrl_c_exits_130(pipe_name: str, extra: tuple[str, ...]) -> None:
    peer = start_peer("listen_send", pipe_name, "first") if extra else None
    receiver = start_fresh("recv", "--name", pipe_name, "--count", "0", *extra)
    if peer is None:
        assert run("send", "--name", pipe_name, "--timeout", LONG, "first").returncode == 0
    assert receiver.stdout is not None
    assert receiver.stdout.readline() == b"first\n"
    receiver.send_signal(signal.SIGINT)
    code, _, err = finish(receiver, timeout=60)
    assert code == 130, err
    assert err.decode().strip().splitlines() == ["npipes recv: interrupted"]
    if peer is not None:
        peer.kill()
        peer.communicate(timeout=60)


def _stale(name: str) -> str:
    """Leave a stale endpoint: a listener killed with SIGKILL keeps its socket file."""
    peer = start_peer("listen_die", name)
    peer.kill()
    peer.communicate(timeout=60)
    path = resolve(name).path
    assert os.path.exists(path)
    return path


def _entry(name: str) -> dict[str, object]:
    result = run("ls", "--json")
    assert result.returncode == 0, result.stderr
    found = [e for e in json.loads(result.stdout) if e["name"] == name]
    assert len(found) == 1
    return found[0]


@pytest.mark.usefixtures("private_runtime")
def test_ls_marks_stale_and_clean_removes_only_stale(pipe_name: str) -> None:
    import pwd

    stale_name = pipe_name + "-stale"
    path = _stale(stale_name)
    entry = _entry(stale_name)
    assert entry["state"] == "stale"
    assert entry["pid"] is None
    assert entry["owner"] == pwd.getpwuid(os.getuid()).pw_name

    server = start_server("--echo", "--name", pipe_name)
    try:
        live = _entry(pipe_name)
        assert live["state"] == "alive"
        assert live["pid"] == server.pid

        dry = run("clean", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert f"would remove {path}" in dry.stdout.decode().splitlines()
        assert os.path.exists(path)

        done = run("clean")
        assert done.returncode == 0, done.stderr
        out = done.stdout.decode()
        assert f"removed {path}" in out.splitlines()
        assert pipe_name + ".sock" not in out.replace(stale_name + ".sock", "")
        assert not os.path.exists(path)
        assert not os.path.exists(path + ".lock")
        assert os.path.exists(resolve(pipe_name).path)
        ping = run("ping", "--name", pipe_name, "--count", "1", "--timeout", LONG)
        assert ping.returncode == 0, ping.stderr
    finally:
        server.kill()
        server.communicate(timeout=60)


def test_progress_bar_only_on_a_terminal(pipe_name: str, tmp_path: os.PathLike[str]) -> None:
    import pty

    data = os.urandom(8 << 20)
    blob = os.path.join(tmp_path, "big.bin")
    with open(blob, "wb") as f:
        f.write(data)
    receiver = subprocess.Popen(
        npipes_cmd("recv", "--name", pipe_name, "--binary", "--timeout", LONG),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    leader, follower = pty.openpty()
    try:
        sender = subprocess.Popen(
            npipes_cmd("send", "--name", pipe_name, "--timeout", LONG, "--binary", "--file", blob),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=follower,
        )
        os.close(follower)
        seen = b""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the sender closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        assert sender.wait(timeout=120) == 0
    finally:
        os.close(leader)
    code, out, err = finish(receiver)
    assert code == 0, err
    assert out == data
    assert b"reading [" in seen
    assert b"8 / 8 MiB" in seen
    # The pipe-stderr case (no bar) is test_cli14::test_send_file_large_binary.
