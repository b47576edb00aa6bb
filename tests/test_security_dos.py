"""Slowloris and memory-amplification clients against both servers (issue 11 §2).

Fifty raw clients attack a server in its own process (``uid_peers.py memserver``,
``npipes.serve`` or ``npipes.aio.serve``): each announces a message of the largest
allowed size and then dribbles it or goes silent, or each sends many large
messages and never reads the replies. The server's peak memory (VmHWM, read
from /proc) must stay within a bound set by the configured limits, and an
honest client must still be served within seconds.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import npipes
from npipes._frame import encode_frame
from npipes._names import resolve

pytestmark = [pytest.mark.posix, pytest.mark.slow]
WAIT = 30.0
CLIENTS = 50
MIB = 1024 * 1024
PEER = Path(__file__).with_name("uid_peers.py")


def peak_mib(pid: int, field: str = "VmHWM") -> float:
    """The process's peak (VmHWM) or current (VmRSS) resident memory, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for pid {pid}")


@contextmanager
def memserver(name: str, front: str, limit: int, idle: float, slots: int) -> Iterator[int]:
    """Run the echo server in its own process; yields its pid."""
    args = [sys.executable, str(PEER), "memserver", name, front, str(limit), str(idle), str(slots)]
    with subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "READY\n"
            yield proc.pid
        finally:
            assert proc.stdin is not None
            proc.stdin.close()  # the server ends when its stdin does
            try:
                proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise


def honest_round_trip(name: str) -> float:
    """Seconds an honest client takes to connect, send and get its echo."""
    began = time.monotonic()
    with npipes.connect(name, timeout=WAIT, wait_for_listener=True) as conn:
        conn.send(b"honest", timeout=WAIT)
        assert conn.recv(timeout=WAIT) == b"honest"
    return time.monotonic() - began


def attackers(path: str) -> list[socket.socket]:
    socks = []
    for _ in range(CLIENTS):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        sock.setblocking(False)
        socks.append(sock)
    return socks


@pytest.mark.parametrize("front", ["sync", "aio"])
def test_slowloris_clients_cost_no_memory_and_block_nobody(pipe_name: str, front: str) -> None:
    """50 clients each announce a 4 MiB message (the limit); half dribble a byte every
    0.1 s, half go silent. The server holds 16 slots and ``idle_timeout=2``: memory
    grows with the bytes that arrived (a few KiB), not the 200 MiB announced, and the
    honest client queued behind all 50 is served once their idle time is up."""
    limit, idle, slots = 4 * MIB, 2.0, 16
    header = encode_frame(bytes(limit))[:16]
    with memserver(pipe_name, front, limit, idle, slots) as pid:
        assert honest_round_trip(pipe_name) < WAIT  # warm up: threads, buffers, imports
        base = peak_mib(pid)
        socks = attackers(resolve(pipe_name).path)
        try:
            for sock in socks:
                sock.send(header)
            began = time.monotonic()
            done: list[float] = []
            honest = threading.Thread(target=lambda: done.append(honest_round_trip(pipe_name)))
            honest.start()
            while honest.is_alive() and time.monotonic() - began < 3 * WAIT:
                for sock in socks[::2]:  # the dribblers
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        sock.send(b"x")  # fails once the server closed it (idle deadline)
                honest.join(0.1)
            honest.join(WAIT)
            grown = peak_mib(pid) - base
        finally:
            for sock in socks:
                sock.close()
    assert done, "the honest client was never served"
    # 50 clients over 16 slots, 2 s each: about 4 rounds of idle_timeout.
    assert done[0] < 10 * idle + 10, f"honest client waited {done[0]:.1f} s"
    assert grown < 32, f"server grew {grown:.0f} MiB for {CLIENTS} x {limit // MIB} MiB announced"


@pytest.mark.parametrize("front", ["sync", "aio"])
def test_clients_that_never_read_replies_cannot_amplify_memory(pipe_name: str, front: str) -> None:
    """50 clients each send 32 messages of 256 KiB (the limit) to an echo server and
    never read a reply. The server stops reading a client whose replies do not drain,
    so its memory stays within a few messages per client (bound: 4 x limit x clients),
    not the 400 MiB sent, and an honest client is served at once."""
    limit, count = 256 * 1024, 32
    frame = encode_frame(bytes(limit))
    with memserver(pipe_name, front, limit, 0.0, 64) as pid:
        assert honest_round_trip(pipe_name) < WAIT
        base = peak_mib(pid)
        socks = attackers(resolve(pipe_name).path)
        try:
            stream = memoryview(frame * count)  # one copy: each client sends a view of it
            pending = {sock: stream for sock in socks}
            sent_total = 0
            stalled_since = time.monotonic()
            # Push until no client made progress for 3 s (the server stopped reading).
            while pending and time.monotonic() - stalled_since < 3.0:
                progress = False
                for sock, data in list(pending.items()):
                    try:
                        sent = sock.send(data[: 4 * limit])
                    except BlockingIOError:
                        continue
                    except (BrokenPipeError, ConnectionResetError):
                        del pending[sock]
                        continue
                    progress = True
                    sent_total += sent
                    pending[sock] = data[sent:]
                    if not pending[sock]:
                        del pending[sock]
                if progress:
                    stalled_since = time.monotonic()
                else:
                    time.sleep(0.05)
            sent_mib = sent_total / MIB
            took = honest_round_trip(pipe_name)
            grown = peak_mib(pid) - base
        finally:
            for sock in socks:
                sock.close()
    bound = 4 * limit * CLIENTS / MIB + 16
    assert grown < bound, f"server grew {grown:.0f} MiB (bound {bound:.0f}); {sent_mib:.0f} sent"
    assert took < 10, f"honest client took {took:.1f} s"
