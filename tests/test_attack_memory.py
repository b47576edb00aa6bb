"""Attack: a hostile peer announces a huge length and sends almost nothing.

The receiver's memory must grow with the bytes that arrived, never with the
length announced (issue 10 §4), in every framing, sync and aio, with the default
limit (1 GiB) and with ``max_message_size=None``. Measured in a separate server
process (VmHWM from /proc), POSIX only.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from npipes._names import resolve

pytestmark = [
    pytest.mark.posix,
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)"),
]

PEER = str(Path(__file__).with_name("attack_memserver.py"))
GIB = 1 << 30
OVER_2GIB = 2 * GIB + 1  # multiprocessing: the -1 + 8-byte length form
ALLOWED_GROWTH_MIB = 64


def _header(framing: str, size: int) -> bytes:
    if framing == "npipes":
        return struct.pack("<2sBBIQ", b"NP", 1, 0, 0, size)
    if framing == "multiprocessing":
        if size < 2**31 - 1:
            return struct.pack("!i", size)
        return struct.pack("!i", -1) + struct.pack("!Q", size)
    if framing == "npipes1":
        return struct.pack(">II", size + 8, size)
    if framing == "dotnet":
        return struct.pack(">H", 65535)
    raise AssertionError(framing)


def _vm(server: subprocess.Popen[str]) -> list[str]:
    """Ask the server for ``VM <hwm MiB> <cpu s> <rss MiB>`` (skipping GOT/ERR lines)."""
    assert server.stdin is not None
    assert server.stdout is not None
    server.stdin.write("\n")
    server.stdin.flush()
    while True:
        line = server.stdout.readline().split()
        assert line, "the memory server died"
        if line[0] == "VM":
            return line


CASES = [
    pytest.param("npipes", "sync", "default", GIB - 100, id="npipes-sync-1GiB"),
    pytest.param("npipes", "sync", "none", 4 * GIB, id="npipes-sync-4GiB-nolimit"),
    pytest.param("npipes", "aio", "none", 4 * GIB, id="npipes-aio-4GiB-nolimit"),
    pytest.param("dotnet", "sync", "none", 65535, id="dotnet-sync"),
    pytest.param("multiprocessing", "sync", "default", GIB - 100, id="mp-sync-1GiB"),
    pytest.param("multiprocessing", "sync", "none", OVER_2GIB, id="mp-sync-2GiB-nolimit"),
    pytest.param("multiprocessing", "aio", "none", OVER_2GIB, id="mp-aio-2GiB-nolimit"),
    pytest.param("npipes1", "sync", "default", GIB - 100, id="npipes1-sync-1GiB"),
    pytest.param("npipes1", "sync", "none", 2 * GIB, id="npipes1-sync-2GiB-nolimit"),
    pytest.param("npipes1", "aio", "none", 2 * GIB, id="npipes1-aio-2GiB-nolimit"),
]


@pytest.mark.parametrize(("framing", "mode", "limit", "size"), CASES)
def test_announced_length_costs_no_memory(
    pipe_name: str, framing: str, mode: str, limit: str, size: int
) -> None:
    server = subprocess.Popen(
        [sys.executable, PEER, pipe_name, framing, mode, limit],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    assert server.stdin is not None
    assert server.stdout is not None
    try:
        ready = server.stdout.readline().split()
        assert ready[0] == "READY", ready
        base = int(ready[1])
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(resolve(pipe_name).path)
            sock.sendall(_header(framing, size) + b"abc")
            # The server reads when the kernel wakes it: sample its peak for 2 s
            # (a late read can only hide a break, never invent one).
            peak = base
            for _ in range(10):
                time.sleep(0.2)
                sock.sendall(b"d")  # a dribble: an event loop reads (and sizes) again
                peak = max(peak, int(_vm(server)[1]))
        grown = peak - base
        assert grown < ALLOWED_GROWTH_MIB, f"{framing}: +{grown} MiB for {size} announced bytes"
    finally:
        server.kill()
        server.wait(60)
        server.stdin.close()
        server.stdout.close()


def test_long_unfinished_line_costs_linear_cpu(pipe_name: str) -> None:
    """A 48 MiB line arriving 4 KiB per read: each byte is scanned once, so the
    receiver spends well under 2 s of CPU (a rescan per read costs tens of seconds)."""
    server = subprocess.Popen(
        [sys.executable, PEER, pipe_name, "lines", "sync", "default"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None
    assert server.stdout is not None
    try:
        assert server.stdout.readline().split()[0] == "READY"
        before = float(_vm(server)[2])
        chunk = b"x" * 4096
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(resolve(pipe_name).path)
            for _ in range((48 << 20) // len(chunk)):
                sock.sendall(chunk)
                # One read per chunk: wait until the server has taken it (TIOCOUTQ:
                # bytes the peer has not read yet), so the test does not depend on load.
                import fcntl  # POSIX only, like this module (imported here so Windows collects it)
                import termios

                while struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0" * 4))[0]:
                    time.sleep(0)
            sock.sendall(b"\n")
            got = server.stdout.readline().split()
            assert got == ["GOT", str(48 << 20)], got
        after = float(_vm(server)[2])
        assert after - before < 2.0, f"{after - before:.1f} s of CPU for a 48 MiB line"
    finally:
        server.kill()
        server.wait(60)
        server.stdin.close()
        server.stdout.close()


def _frame(framing: str, payload: bytes) -> bytes:
    if framing == "npipes":
        return _header(framing, len(payload)) + payload
    if framing == "multiprocessing":
        return _header(framing, len(payload)) + payload
    if framing == "npipes1":
        return _header(framing, len(payload)) + payload + b"\0\0\0\0"
    raise AssertionError(framing)


@pytest.mark.parametrize(
    "framing",
    [
        "npipes",
        "multiprocessing",
        "npipes1",
    ],
)
def test_receiver_gives_memory_back_after_a_large_message(pipe_name: str, framing: str) -> None:
    """After a 64 MiB message was received and dropped, an open connection keeps
    far less than 64 MiB (its buffer shrank)."""
    server = subprocess.Popen(
        [sys.executable, PEER, pipe_name, framing, "sync", "default"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None
    assert server.stdout is not None

    def rss() -> int:
        return int(_vm(server)[3])

    try:
        assert server.stdout.readline().split()[0] == "READY"
        base = rss()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(resolve(pipe_name).path)
            payload = bytes(64 << 20)
            if framing == "npipes1":
                payload = b"x" * (64 << 20)  # text: npipes 1.x carries strings
            sock.sendall(_frame(framing, payload))
            del payload
            assert server.stdout.readline().split() == ["GOT", str(64 << 20)]
            sock.sendall(_frame(framing, b"y" * 10))  # a small one after it
            assert server.stdout.readline().split() == ["GOT", "10"]
            kept = rss() - base
        assert kept < 32, f"{framing}: {kept} MiB still held after a 64 MiB message"
    finally:
        server.kill()
        server.wait(60)
        server.stdin.close()
        server.stdout.close()
