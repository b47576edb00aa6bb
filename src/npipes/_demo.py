"""``npipes demo``: two real processes, the seed's Hello, and a quick speed check.

The demo listens on a fresh name, starts ``python -m npipes demo --peer NAME``
as the second process, and drives it with text commands over the same
connection: ``echo`` (send back every message), ``sink N`` (swallow N
messages, then answer with their byte count) and ``quit``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import TextIO

from .connection import Connection, connect, listen

_ROUND_TRIP_SIZES = (64, 1024, 64 * 1024)
_THROUGHPUT_SIZES = (64 * 1024, 1024 * 1024, 16 * 1024 * 1024)
_SECONDS_PER_STEP = 0.4


def _human(size: int) -> str:
    for unit, step in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= step:
            return f"{size // step} {unit}"
    return f"{size} B"


def run_peer(name: str) -> int:
    """The second process: connect, then obey the commands above until ``quit``."""
    with connect(name, timeout=30, wait_for_listener=True) as conn:
        mode = "echo"
        while True:
            msg = conn.recv()
            if isinstance(msg, str) and msg.startswith("!"):
                command, _, arg = msg[1:].partition(" ")
                if command == "quit":
                    return 0
                if command == "hello":
                    hello = conn.recv(crc=True)  # CRC required and verified
                    print(
                        f"  [peer pid {os.getpid()}] received {hello!r}, CRC-32 verified",
                        flush=True,
                    )
                    conn.send(hello, crc=True)
                elif command == "sink":
                    total = sum(len(conn.recv()) for _ in range(int(arg)))
                    conn.send(str(total))
                else:
                    mode = command
                continue
            if mode == "echo":
                conn.send(msg)


def _round_trip(conn: Connection, size: int) -> tuple[float, int]:
    payload = b"x" * size
    conn.send("!echo")
    count = 0
    start = time.perf_counter()
    end = start + _SECONDS_PER_STEP
    while True:
        conn.send(payload)
        conn.recv()
        count += 1
        now = time.perf_counter()
        if now >= end:
            return (now - start) / count, count


def _throughput(conn: Connection, size: int) -> float:
    payload = b"x" * size
    count = max(4, min(20000, (256 << 20) // size // 4))
    start = time.perf_counter()
    conn.send(f"!sink {count}")
    for _ in range(count):
        conn.send(payload)
    total = int(conn.recv())
    elapsed = time.perf_counter() - start
    assert total == size * count
    return total / elapsed


def run(out: TextIO = sys.stdout) -> int:
    """The main job: show two processes talking, then measure. Returns the exit code."""

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    name = f"npipes-demo-{os.getpid()}"
    say("npipes demo: two processes, one named pipe")
    with listen(name) as listener:
        say(f"  listening on {name!r} -> {listener.address}")
        peer = subprocess.Popen([sys.executable, "-m", "npipes", "demo", "--peer", name])
        try:
            with listener.accept(timeout=60) as conn:
                say(f"  peer process connected: pid {conn.peer.pid}")
                say("  sending 'Hello' with crc=True ...")
                conn.send("!hello")
                conn.send("Hello", crc=True)
                echoed = conn.recv(timeout=10, crc=True)
                say(f"  the peer echoed {echoed!r} back, CRC-32 verified on both sides")
                say()
                say("Round trip (send + echo back):")
                rows: list[tuple[str, str, str]] = []
                for size in _ROUND_TRIP_SIZES:
                    per, count = _round_trip(conn, size)
                    say(f"  {_human(size):>7}  {per * 1e6:9.1f} us   ({count} round trips)")
                    rows.append((f"round trip {_human(size)}", f"{per * 1e6:.1f} us", ""))
                say("Throughput (one way, to a counting peer):")
                for size in _THROUGHPUT_SIZES:
                    rate = _throughput(conn, size)
                    say(f"  {_human(size):>7}  {rate / 1e6:9.0f} MB/s  ({rate / size:,.0f} msg/s)")
                    rows.append(
                        (
                            f"throughput {_human(size)}",
                            f"{rate / 1e6:.0f} MB/s",
                            f"{rate / size:,.0f} msg/s",
                        )
                    )
                conn.send("!quit")
        finally:
            try:
                peer.wait(timeout=30)
            except subprocess.TimeoutExpired:
                peer.kill()
                peer.wait()
    say()
    say("Summary")
    say("  | measurement          | result       |              |")
    say("  |----------------------|--------------|--------------|")
    for label, value, extra in rows:
        say(f"  | {label:<20} | {value:>12} | {extra:>12} |")
    say()
    say("Try it across two terminals (either one may start first):")
    say("  terminal 1:  npipes recv --name hello")
    say("  terminal 2:  npipes send --name hello 'Hello from terminal 2'")
    say("or in Python, the two lines of each side:")
    say("  from npipes.ipc import IPC; IPC().send_message('Hello', crc=True)")
    say("  from npipes.ipc import IPC; print(IPC().receive_message(crc=True))")
    return 0 if peer.returncode == 0 else 1
