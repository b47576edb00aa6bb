"""Per-call cost of npipes' hot paths, layer by layer (POSIX).

``python -m benchmarks.percall`` prints a Markdown table: microseconds per call
for 64-byte messages, from the codec's fast path up to ``Connection.send`` /
``recv``, next to the system call alone. Each row includes the rows above it,
so the difference between two rows is what that layer costs; a regression shows
up as one row growing. Run it twice to compare the C accelerator with pure
Python: ``NPIPES_PURE_PYTHON=1 python -m benchmarks.percall``.

Both ends live in this process: sends are drained between timed rounds, and
receives find their bytes already in the socket, so the numbers are Python work
plus the system call, without waiting for a peer. Time is this thread's CPU time
(``time.thread_time``), so other processes on a shared machine barely move it.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import npipes
from npipes import _accel, _frame
from npipes._framings import get_codec

ROUND = 100  # messages per timed round: the socket buffer holds them all


def _per_call(call: Callable[[], object], count: int) -> float:
    start = time.thread_time()
    for _ in range(count):
        call()
    return (time.thread_time() - start) / count * 1e6


def _rounds(
    call: Callable[[], object],
    rounds: int,
    *,
    before: Callable[[], object] | None = None,
    after: Callable[[], object] | None = None,
    per_round: int = ROUND,
) -> float:
    """Microseconds per message: ``per_round`` calls (1 for a batch call) per round of
    ROUND messages, with ``before`` and ``after`` each round untimed."""
    total = 0.0
    for _ in range(rounds):
        if before is not None:
            before()
        start = time.thread_time()
        for _ in range(per_round):
            call()
        total += time.thread_time() - start
        if after is not None:
            after()
    return total / (rounds * ROUND) * 1e6


def measure(size: int = 64, rounds: int = 2000) -> list[tuple[str, str, float]]:
    """``(call, layer, microseconds)`` rows for ``size``-byte binary messages."""
    message = b"x" * size
    frame = _frame.encode_frame(message)
    frames = frame * ROUND
    codec = get_codec("npipes")
    name = f"percall-{os.getpid()}"
    rows: list[tuple[str, str, float]] = []
    count = rounds * ROUND
    with npipes.listen(name) as listener, npipes.connect(name, timeout=10) as sender:
        receiver = listener.accept(timeout=10)
        out: socket.socket = sender._stream._sock  # type: ignore[attr-defined]
        into: socket.socket = receiver._stream._sock  # type: ignore[attr-defined]
        core: Any = sender._core

        def drain() -> None:
            got = 0
            while got < ROUND * len(frame):
                got += len(into.recv(1 << 20))

        def fill() -> None:
            out.sendall(frames)

        # Sending: each row adds a layer to the one above it.
        rows.append(
            (
                "encode_small()",
                "codec fast path",
                _per_call(lambda: _frame.encode_small(message, False, None), count),
            )
        )
        rows.append(
            (
                "codec.encode()",
                "framing",
                _per_call(lambda: codec.encode(message, crc=False, max_size=None), count),
            )
        )
        rows.append(
            (
                "core.encode()",
                "connection core",
                _per_call(lambda: core.encode(message, None), count),
            )
        )
        rows.append(
            (
                "socket.sendall()",
                "the system call alone",
                _rounds(lambda: out.sendall(frame), rounds, after=drain),
            )
        )
        rows.append(
            (
                "Connection.send()",
                "front end + backend",
                _rounds(lambda: sender.send(message), rounds, after=drain),
            )
        )
        batch = [message] * ROUND
        rows.append(
            (
                "Connection.send_many() / message",
                "batch of 100",
                _rounds(lambda: sender.send_many(batch), rounds, after=drain, per_round=1),
            )
        )
        # Receiving: the bytes are in the socket before each timed round.
        buffer = bytearray(frames)
        view = memoryview(buffer)
        rows.append(
            (
                "parse_frame()",
                "codec fast path",
                _per_call(lambda: _frame.parse_frame(view, 0, len(frame), None, False), count),
            )
        )
        decoder = codec.decoder(max_message_size=None, require_crc=False, message_mode=False)
        rows.append(
            (
                "decoder.next_frame()",
                "framing",
                _rounds(decoder.next_frame, rounds, before=lambda: decoder.feed_data(frames)),
            )
        )
        rows.append(
            (
                "socket.recv_into()",
                "the system call alone",
                _recv_syscall(fill, into, len(frame), rounds),
            )
        )
        rows.append(
            (
                "Connection.recv()",
                "front end + core + backend",
                _rounds(receiver.recv, rounds, before=fill),
            )
        )
        rows.append(
            (
                "Connection.recv(), one read each",
                "as in a round trip",
                _rounds(
                    receiver.recv, rounds * ROUND, before=lambda: out.sendall(frame), per_round=1
                )
                * ROUND,
            )
        )
        target = bytearray(size)
        rows.append(
            (
                "Connection.recv_into()",
                "into a caller's buffer",
                _rounds(lambda: receiver.recv_into(target), rounds, before=fill),
            )
        )
        rows.append(
            (
                "Connection.recv_many() / message",
                "batch",
                _rounds(lambda: _recv_n(receiver), rounds, before=fill, per_round=1),
            )
        )
        receiver.close()
    return rows


def _recv_n(conn: npipes.Connection) -> None:
    got = 0
    while got < ROUND:
        got += len(conn.recv_many())


def _recv_syscall(fill: Callable[[], object], sock: socket.socket, size: int, rounds: int) -> float:
    """One ``recv_into`` per message of ``size`` bytes: the floor of a one-by-one receive."""
    buffer = bytearray(size)
    return _rounds(lambda: sock.recv_into(buffer, size), rounds, before=fill)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.percall", description=__doc__)
    parser.add_argument("--size", type=int, default=64, help="message size in bytes (default 64)")
    parser.add_argument(
        "--rounds", type=int, default=2000, help="rounds of 100 calls (default 2000)"
    )
    args = parser.parse_args(argv)
    if os.name == "nt":  # (not sys.platform: mypy would call the rest unreachable there)
        sys.stderr.write("benchmarks.percall measures the POSIX backend (Unix sockets)\n")
        return 2
    mode = "C accelerator" if _accel.ACCELERATED else "pure Python"
    python = sys.version.split()[0]
    out = sys.stdout.write
    out(f"npipes {npipes.__version__}, {mode}, Python {python}, {args.size} B messages\n\n")
    out("| call | layer | us per call |\n| --- | --- | ---: |\n")
    for call, layer, us in measure(args.size, args.rounds):
        out(f"| `{call}` | {layer} | {us:.2f} |\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
