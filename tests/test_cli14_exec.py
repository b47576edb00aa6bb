"""``npipes serve --exec``: a CMD's output is bounded (``--max-reply``) and its run time
by ``--timeout`` (the review of issue 14: a flooding CMD such as ``yes`` grew serve's
memory without limit; a slow one only timed out through ``communicate``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import npipes
from cli14_helpers import npipes_cmd, start_server, stop

FLOOD = (
    f'"{sys.executable}" -c "import itertools, sys;'
    " [sys.stdout.write('y' * 65536) for _ in itertools.count()]\""
)
SLOW = f'"{sys.executable}" -c "import time; time.sleep(60)"'
SMALL = f'"{sys.executable}" -c "import sys; sys.stdout.write(\'z\' * 1000)"'


def test_a_flooding_cmd_is_cut_at_max_reply_and_serve_goes_on(pipe_name: str) -> None:
    server = start_server("--exec", FLOOD, "--max-reply", "1000000", "--name", pipe_name)
    try:
        with (
            npipes.connect(pipe_name, timeout=60) as conn,
            pytest.raises(npipes.RemoteError, match="more than 1000000 bytes"),
        ):
            conn.request("x", timeout=120)
        assert server.poll() is None  # serve goes on
    finally:
        stop(server)


def test_max_reply_lets_output_up_to_it_through(pipe_name: str) -> None:
    server = start_server("--exec", SMALL, "--max-reply", "1000", "--name", pipe_name)
    try:
        with npipes.connect(pipe_name, timeout=60) as conn:
            assert conn.request("x", timeout=60) == "z" * 1000
    finally:
        stop(server)


def test_a_cmd_past_timeout_is_killed_and_reported(pipe_name: str) -> None:
    server = start_server("--exec", SLOW, "--timeout", "1", "--name", pipe_name)
    try:
        with (
            npipes.connect(pipe_name, timeout=60) as conn,
            pytest.raises(npipes.RemoteError, match="did not finish within 1 s"),
        ):
            conn.request("x", timeout=60)
    finally:
        stop(server)


@pytest.mark.posix
def test_bridge_on_a_port_in_use_is_one_line_exit_1(tmp_path: Path) -> None:
    """A ZeroMQ error (here: the port is taken) is one line and exit 1, no traceback."""
    pytest.importorskip("zmq", reason="the bridge extra (pyzmq) is part of dev on POSIX")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
        tmp_path.chmod(0o700)
        done = subprocess.run(
            npipes_cmd("bridge", "--name", "inuse14", "--zmq-bind", f"tcp://127.0.0.1:{port}"),
            capture_output=True,
            env=env,
            timeout=60,
        )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr.decode()
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("npipes bridge: ZeroMQ"), lines
