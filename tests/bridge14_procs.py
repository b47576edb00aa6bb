"""Process helpers for tests/test_bridge14*.py: start bridges and peers as real
processes, each "host" with its own private endpoint directory (XDG_RUNTIME_DIR),
and read their output lines with timeouts."""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

TESTS = Path(__file__).resolve().parent
WAIT = 60.0  # generous: the machine is shared


def free_port() -> int:
    """A free TCP port on 127.0.0.1 below Linux's ephemeral range (32768-60999): a
    connect to a port in that range with nothing listening can, rarely, connect
    the socket to itself (TCP simultaneous open), as a bridge reconnecting while
    the far one restarts does again and again."""
    while True:
        port = random.randrange(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def host_dir(base: Path, name: str) -> Path:
    """A private endpoint directory standing in for a host."""
    path = base / name
    path.mkdir(mode=0o700)
    return path


class Proc:
    """A child process whose stdout and stderr lines are collected by threads."""

    def __init__(self, args: list[str], host: Path | None, *, stdin: bool = False) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(TESTS), str(TESTS.parent / "src"), env.get("PYTHONPATH", "")]
        )
        if host is not None:
            env["XDG_RUNTIME_DIR"] = str(host)
        env["PYTHONUNBUFFERED"] = "1"
        self.args = args
        self.popen = subprocess.Popen(
            [sys.executable, *args],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.out: queue.Queue[str] = queue.Queue()
        self.err_lines: list[str] = []
        self.out_lines: list[str] = []
        self._err_event = threading.Condition()
        assert self.popen.stdout is not None
        assert self.popen.stderr is not None
        threading.Thread(target=self._pump_out, args=(self.popen.stdout,), daemon=True).start()
        threading.Thread(target=self._pump_err, args=(self.popen.stderr,), daemon=True).start()

    def _pump_out(self, stream: IO[str]) -> None:
        for line in stream:
            self.out_lines.append(line)
            self.out.put(line)

    def _pump_err(self, stream: IO[str]) -> None:
        for line in stream:
            with self._err_event:
                self.err_lines.append(line)
                self._err_event.notify_all()

    @property
    def stderr(self) -> str:
        return "".join(self.err_lines)

    def wait_err(self, text: str, timeout: float = WAIT, count: int = 1) -> None:
        """Wait until ``text`` appeared ``count`` times on stderr."""
        deadline = time.monotonic() + timeout
        exited = 0
        with self._err_event:
            while sum(text in line for line in self.err_lines) < count:
                left = deadline - time.monotonic()
                if self.popen.poll() is not None:
                    exited += 1  # give the pump a few seconds to read its last lines
                if left <= 0 or exited > 3:
                    raise AssertionError(
                        f"{self.args[:3]}: no {text!r} on stderr within {timeout} s;"
                        f" stderr:\n{self.stderr}"
                    )
                self._err_event.wait(min(left, 1.0))

    def next_json(self, timeout: float = WAIT) -> dict[str, Any]:
        try:
            line = self.out.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"{self.args[:3]}: no output within {timeout} s; stderr:\n{self.stderr}"
            ) from None
        obj: dict[str, Any] = json.loads(line)
        return obj

    def until(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = WAIT
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            obj = self.next_json(max(0.1, deadline - time.monotonic()))
            if pred(obj):
                return obj

    def write(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def wait(self, timeout: float = WAIT) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"{self.args[:3]} hung; stderr:\n{self.stderr}") from None

    def terminate(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.wait()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()

    def rss(self) -> int:
        """Resident memory in bytes (Linux /proc)."""
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


def bridge(host: Path | None, *args: str) -> Proc:
    """Start a bridge; wait for its ready line."""
    proc = Proc(["-m", "npipes", "bridge", *args], host)  # the real command
    proc.wait_err("ready:")
    return proc


def peer(host: Path, *args: str, stdin: bool = False) -> Proc:
    return Proc(["-m", "bridge14_peers", *args], host, stdin=stdin)


class Procs:
    """Every process a test started, killed at its end whatever happened."""

    def __init__(self) -> None:
        self.all: list[Proc] = []

    def add(self, proc: Proc) -> Proc:
        self.all.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.all:
            proc.kill()
            for stream in (proc.popen.stdin, proc.popen.stdout, proc.popen.stderr):
                if stream is not None:
                    stream.close()
