"""Peers for tests/test_review13_*.py: a Connection fed hostile v1 byte streams.

:func:`outcomes` writes random streams (valid frames, bad CRCs, frames without
CRC, bad UTF-8 text, too-large and not-npipes frames, a torn end) through a
real socket and records what each recv/recv_many/recv_into call returns or
raises. Run once accelerated and once with ``NPIPES_PURE_PYTHON=1``: the two
records must be identical (the fast paths may only decline, never decide).
"""

from __future__ import annotations

import json
import os
import random
import struct
import sys
import threading
import uuid
import zlib
from typing import Any

import npipes
from npipes import _accel

_HEADER = struct.Struct("<2sBBIQ")
_SIZES = (0, 1, 10, 100, 5000, 16384, 16385, 40000)


def _frame(rnd: random.Random) -> bytes:
    size = rnd.choice(_SIZES)
    payload = rnd.randbytes(size)
    flags = 0
    if rnd.random() < 0.3:
        flags |= 2  # TEXT
        payload = ("\u00e9" * (size // 2)).encode()
        if rnd.random() < 0.2:
            payload = b"\xff" + payload  # not UTF-8
    crc = rnd.random() < 0.4
    frame = _HEADER.pack(b"NP", 1, flags | (1 if crc else 0), 0, len(payload)) + payload
    if crc:
        value = zlib.crc32(payload) ^ (1 if rnd.random() < 0.2 else 0)
        frame += struct.pack("<I", value)
    if rnd.random() < 0.03:
        frame = b"XX" + frame[2:]  # not an npipes frame
    return frame


def _digest(message: bytes | str) -> list[Any]:
    data = message.encode() if isinstance(message, str) else message
    return [type(message).__name__, len(message), zlib.crc32(data)]


def _run(seed: int) -> list[Any]:
    rnd = random.Random(seed)
    stream = b""
    while len(stream) < 60_000 and (not stream or rnd.random() < 0.9):
        stream += _frame(rnd)
    stream = stream[:60_000]  # all of it fits the socket buffer: reads are deterministic
    if rnd.random() < 0.2:
        stream = stream[: rnd.randrange(len(stream) + 1)]
    name = f"r13-{os.getpid()}-{seed}-{uuid.uuid4().hex[:6]}"
    conn_crc = rnd.random() < 0.3
    limit = rnd.choice([None, None, 20000, 100])
    out: list[Any] = []
    with npipes.listen(name, crc=conn_crc, max_message_size=limit) as listener:
        sent = threading.Event()

        def peer() -> None:
            with npipes.connect(name, framing="raw", timeout=30) as raw:
                raw.send(stream)
            sent.set()  # all of it is in the socket, then the end of stream

        thread = threading.Thread(target=peer)
        thread.start()
        try:
            conn = listener.accept(timeout=30)
            assert sent.wait(30)
            for _ in range(40):
                op = rnd.choice(["recv", "recv", "many", "into", "into_small"])
                crc = rnd.choice([None, None, True, False])
                try:
                    if op == "recv":
                        result: Any = _digest(conn.recv(timeout=30, crc=crc))
                    elif op == "many":
                        count = rnd.choice([1, 2, 5, 100])
                        result = [_digest(m) for m in conn.recv_many(count, timeout=30, crc=crc)]
                    else:
                        buf = bytearray(100 if op == "into_small" else 100_000)
                        n = conn.recv_into(buf, timeout=30, crc=crc)
                        result = [n, zlib.crc32(bytes(buf[:n]))]
                    out.append([op, crc, "ok", result])
                except npipes.NpipesError as exc:
                    out.append([op, crc, type(exc).__name__, str(exc), conn.closed])
                    if type(exc) is npipes.ConnectionClosedError:
                        break
            conn.close()
        finally:
            thread.join(60)
    return out


def outcomes(first: int, stop: int) -> dict[str, Any]:
    """What every call did for seeds ``first..stop-1``, and whether it ran accelerated."""
    return {"accelerated": _accel.ACCELERATED, "runs": [_run(s) for s in range(first, stop)]}


if __name__ == "__main__":
    sys.stdout.write(json.dumps(outcomes(int(sys.argv[1]), int(sys.argv[2]))) + "\n")
