"""Attack (issue 13): Ctrl+C (a real SIGINT) arriving while the sync fast receive
path (``take_message``/``take_message_into``/``take_messages``) waits in the middle
of a frame. No torn frame is ever delivered: a frame left half-received breaks the
connection; one interrupted between frames keeps it open and loses nothing.
A send interrupted mid-frame (``send``/``send_many``) breaks the sender, and its
peer gets IncompleteMessageError, never the torn frame. Accelerated and pure.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from npipes._names import resolve
from test_attack13_wire import MODES, frame, msg

pytestmark = pytest.mark.posix

SRC = str(Path(__file__).resolve().parents[1] / "src")

# Each script restores Python's own SIGINT handler: a child inherits an ignored SIGINT
# (a background job of a shell without job control), and would then never see Ctrl+C.
SCRIPT = """
import hashlib, json, signal, sys, npipes
signal.signal(signal.SIGINT, signal.default_int_handler)
name, api = sys.argv[1], sys.argv[2]

def say(obj):
    print(json.dumps(obj), flush=True)

def receive(conn):
    if api == "recv_into":
        buf = bytearray(1 << 20)
        data = bytes(buf[: conn.recv_into(buf, timeout=60)])
    elif api == "recv_many":
        data = conn.recv_many(100, timeout=60)[0]
    else:
        data = conn.recv(timeout=60)
    return {"msg": [type(data).__name__, len(data), hashlib.sha256(data).hexdigest()[:16]]}

with npipes.listen(name) as listener:
    say("READY")
    with listener.accept(timeout=60) as conn:
        say(receive(conn))
        say("WAITING")
        try:
            say(receive(conn))
        except KeyboardInterrupt:
            say({"interrupted": conn._core.state.name})
        for _ in range(2):
            try:
                say(receive(conn))
            except npipes.NpipesError as exc:
                say({"err": [type(exc).__name__, conn._core.state.name]})
                break
"""


def unread(sock: socket.socket) -> int:
    """Bytes this Unix socket sent that the peer has not read yet (Linux: TIOCOUTQ)."""
    import fcntl
    import struct
    import termios

    return int(struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0" * 4))[0])


def interrupted_run(name: str, api: str, pure: bool, before: bytes, after: bytes) -> list[Any]:
    env = dict(os.environ)
    env["NPIPES_PURE_PYTHON"] = "1" if pure else "0"
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, name, api],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[Any] = []
    try:
        assert proc.stdout is not None

        def line() -> Any:
            got = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
            lines.append(got)
            return got

        assert line() == "READY"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(60)
            sock.connect(resolve(name).path)
            sock.sendall(frame(b"first") + before)
            line()  # the first message
            assert line() == "WAITING"
            deadline = time.monotonic() + 30
            while unread(sock) and time.monotonic() < deadline:
                time.sleep(0.01)  # the receiver read what was sent
            assert unread(sock) == 0
            time.sleep(0.3)  # and sits in its next read
            proc.send_signal(signal.SIGINT)
            line()  # what the interrupted call did
            with contextlib.suppress(OSError):  # the receiver may be gone (broken)
                sock.sendall(after)
                sock.shutdown(socket.SHUT_WR)
            # Read on through the same buffered file (communicate() would skip what
            # readline() already buffered).
            while (rest := proc.stdout.readline()) != "":
                lines.append(json.loads(rest))
            proc.wait(timeout=60)
        assert proc.returncode == 0, proc.stderr and proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    return lines[1:]


SECOND = frame(b"second message")
LARGE = frame(b"L" * 100_000)
GONE = {"err": ["ConnectionClosedError", "BROKEN"]}


@pytest.mark.parametrize("pure", [m == "pure" for m in MODES], ids=MODES)
@pytest.mark.parametrize("api", ["recv", "recv_into", "recv_many"])
@pytest.mark.parametrize(
    ("split", "payload"),
    [("in the header", SECOND), ("in the payload", SECOND), ("in a large payload", LARGE)],
    ids=["header", "payload", "large"],
)
def test_sigint_mid_frame_breaks_and_never_delivers_a_torn_frame(
    pipe_name: str, api: str, pure: bool, split: str, payload: bytes
) -> None:
    cut = 7 if split == "in the header" else len(payload) // 2
    got = interrupted_run(pipe_name, api, pure, payload[:cut], payload[cut:] + frame(b"third"))
    assert got == [msg(b"first"), "WAITING", {"interrupted": "BROKEN"}, GONE], got


@pytest.mark.parametrize("pure", [m == "pure" for m in MODES], ids=MODES)
@pytest.mark.parametrize("api", ["recv", "recv_into", "recv_many"])
def test_sigint_between_frames_keeps_the_connection(pipe_name: str, api: str, pure: bool) -> None:
    got = interrupted_run(pipe_name, api, pure, b"", SECOND + LARGE)
    expected = [msg(b"first"), "WAITING", {"interrupted": "OPEN"}, msg(b"second message")]
    assert got == [*expected, msg(b"L" * 100_000)], got


SEND_SCRIPT = """
import json, signal, sys, npipes
signal.signal(signal.SIGINT, signal.default_int_handler)
name, how = sys.argv[1], sys.argv[2]

def say(obj):
    print(json.dumps(obj), flush=True)

with npipes.connect(name, timeout=60) as conn:
    conn.send(b"first", timeout=60)
    say("SENDING")
    try:
        if how == "send_many":
            conn.send_many([b"s" * 1000] * 20000)
        else:
            conn.send(b"B" * (16 << 20))
        say({"sent": conn._core.state.name})
    except KeyboardInterrupt:
        say({"interrupted": conn._core.state.name})
    try:
        conn.send(b"after", timeout=5)
        say({"sent after": True})
    except npipes.NpipesError as exc:
        say({"err": type(exc).__name__})
"""


def receive_all(conn: Any, into: list[Any]) -> None:
    """Receive until an error (which propagates)."""
    while True:
        into.append(conn.recv(timeout=60))


@pytest.mark.parametrize("pure", [m == "pure" for m in MODES], ids=MODES)
@pytest.mark.parametrize("how", ["send", "send_many"])
def test_sigint_mid_send_never_delivers_a_torn_frame(pipe_name: str, how: str, pure: bool) -> None:
    import npipes

    env = dict(os.environ)
    env["NPIPES_PURE_PYTHON"] = "1" if pure else "0"
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    with npipes.listen(pipe_name) as listener:
        proc = subprocess.Popen(
            [sys.executable, "-c", SEND_SCRIPT, pipe_name, how],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            with listener.accept(timeout=60) as conn:
                assert conn.recv(timeout=60) == b"first"
                assert proc.stdout is not None
                assert proc.stdout.readline().strip() == '"SENDING"'
                time.sleep(0.5)  # the sender is blocked: nobody reads its frames
                proc.send_signal(signal.SIGINT)
                outcome = json.loads(proc.stdout.readline())
                after = json.loads(proc.stdout.readline())
                assert outcome == {"interrupted": "BROKEN"}, outcome
                assert after == {"err": "ConnectionClosedError"}, after
                assert proc.wait(timeout=60) == 0
                received: list[Any] = []
                with pytest.raises(npipes.IncompleteMessageError):
                    receive_all(conn, received)
                # Only whole frames came before the torn one, never "after".
                assert all(m == b"s" * 1000 for m in received), len(received)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
