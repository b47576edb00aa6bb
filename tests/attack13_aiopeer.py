"""Peers for tests/test_attack13_aio.py, each run as ``python attack13_aiopeer.py WHAT NAME``.

``echo``: ``npipes.aio.serve`` echoing every message, all clients in one loop (one
shared scratch read buffer). ``numbers COUNT``: serve one client the messages
``b"<n>"`` for n in range(COUNT), then ``b"end"``. ``sink``: a raw Unix socket
listener that accepts and never reads. Each prints ``READY`` and exits when its
stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys

import npipes
from npipes import aio
from npipes._names import resolve


def ready() -> None:
    sys.stdout.write("READY\n")
    sys.stdout.flush()


async def echo(name: str) -> None:
    async def handler(conn: aio.Connection) -> None:
        async for message in conn:
            await conn.send(message, timeout=60)

    async with await aio.serve(name, handler, max_connections=64):
        ready()
        await asyncio.to_thread(sys.stdin.read)


async def numbers(name: str, count: int) -> None:
    async def handler(conn: aio.Connection) -> None:
        for start in range(0, count, 100):
            batch = [str(n).encode() for n in range(start, min(start + 100, count))]
            await conn.send_many(batch, timeout=60)
        await conn.send(b"end", timeout=60)
        with contextlib.suppress(npipes.ConnectionClosedError):
            await conn.recv(timeout=60)

    async with await aio.serve(name, handler):
        ready()
        await asyncio.to_thread(sys.stdin.read)


def sink(name: str) -> None:
    path = resolve(name).path
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(4)
        ready()
        conn, _ = server.accept()
        sys.stdin.read()
        conn.close()
    os.unlink(path)


if __name__ == "__main__":
    what, name = sys.argv[1], sys.argv[2]
    if what == "echo":
        asyncio.run(echo(name))
    elif what == "numbers":
        asyncio.run(numbers(name, int(sys.argv[3])))
    else:
        sink(name)
