"""npipes.serve under faults: accept failing under a live server, and Ctrl+C in serve_forever.

The listening descriptor is swapped for /dev/null under a running server (a real fault:
accept() then fails with ENOTSOCK): the server must log once, keep serving with pauses
(no spin), and accept again once the descriptor is back, serving the client that
connected meanwhile. Ctrl+C in ``serve_forever`` closes the server (its socket file is
removed) and re-raises KeyboardInterrupt.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import npipes

pytestmark = pytest.mark.posix
WAIT = 30.0


def _echo(conn: npipes.Connection) -> None:
    for message in conn:
        conn.send(message, timeout=WAIT)


def _wait_for_log(caplog: pytest.LogCaptureFixture, text: str) -> logging.LogRecord:
    end = time.monotonic() + WAIT
    while time.monotonic() < end:
        for record in caplog.records:
            if text in record.getMessage():
                return record
        time.sleep(0.05)
    raise AssertionError(f"no log record with {text!r}: {[r.getMessage() for r in caplog.records]}")


def test_server_survives_a_failing_accept_and_recovers(
    pipe_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="npipes.server")
    with npipes.serve(pipe_name, _echo) as server:
        with npipes.connect(pipe_name, timeout=WAIT) as first:  # it serves
            first.send("one", timeout=WAIT)
            assert first.recv(timeout=WAIT) == "one"
        fd = server.listener._raw.listening_socket.fileno()  # type: ignore[attr-defined]
        backup = os.dup(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        try:
            os.dup2(null, fd)  # accept() on it: ENOTSOCK, until it is put back
            # The socket still listens (the backup keeps it): a client connects, which
            # wakes the server's wait, and its accept() fails.
            late = npipes.connect(pipe_name, timeout=WAIT)
            record = _wait_for_log(caplog, "accept failed on")
            assert record.levelno == logging.ERROR
            time.sleep(0.5)  # a few failed accepts, with pauses, while the client waits
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(errors) == 1, "one error per run of failures, not one per accept"
        finally:
            os.dup2(backup, fd)
            os.close(backup)
            os.close(null)
        with late:
            late.send("two", timeout=WAIT)
            assert late.recv(timeout=WAIT) == "two"
        _wait_for_log(caplog, "accepting again on")
    assert not os.path.exists(server.address)


def test_ctrl_c_in_serve_forever_closes_the_server(pipe_name: str) -> None:
    child = textwrap.dedent(
        f"""
        import os, sys, threading, time
        import npipes

        def echo(conn):
            for message in conn:
                conn.send(message)

        def in_serve_forever():
            main = threading.main_thread().ident
            while True:
                frame = sys._current_frames().get(main)
                while frame is not None and frame.f_code.co_name != "serve_forever":
                    frame = frame.f_back
                if frame is not None:
                    print("ready", server.address, flush=True)
                    return
                time.sleep(0.01)

        server = npipes.serve({pipe_name!r}, echo)
        threading.Thread(target=in_serve_forever, daemon=True).start()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("interrupted", server.listener.closed, os.path.exists(server.address),
                  flush=True)
            raise
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", child], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        out, err = _interrupt_when_serving(proc, pipe_name)
    assert out.split() == ["interrupted", "True", "False"], (out, err)
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err


def _interrupt_when_serving(proc: subprocess.Popen[str], pipe_name: str) -> tuple[str, str]:
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline().split()
        assert ready[0] == "ready", ready
        with npipes.connect(pipe_name, timeout=WAIT) as conn:
            conn.send("ping", timeout=WAIT)
            assert conn.recv(timeout=WAIT) == "ping"
        proc.send_signal(signal.SIGINT)
        return proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
