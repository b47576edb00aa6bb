"""A server child for tests/test_server_limits.py: an echo server under a low RLIMIT_NOFILE.

Usage: ``python server_emfile.py sync|aio NAME``. Logging (logger ``npipes.server``)
goes to stderr. Once the server runs, the descriptor limit is lowered so that only
a few more descriptors can be opened, and ``ready FREE`` is printed (FREE: how many).
Then each stdin line ``cpu`` is answered with this process's CPU seconds; at EOF on
stdin the server is closed and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import sys
import time

import npipes
import npipes.aio


def squeeze_descriptors() -> int:
    """Lower RLIMIT_NOFILE to leave a few free descriptors; return how many are free."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    probe: list[int] = []
    try:
        while True:  # the highest descriptor in use bounds the limit
            probe.append(os.open(os.devnull, os.O_RDONLY))
            if len(probe) > 4:
                break
    finally:
        highest = max(probe)
        for fd in probe:
            os.close(fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest - 1, hard))
    free: list[int] = []
    try:
        while True:
            free.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    finally:
        for fd in free:
            os.close(fd)
    return len(free)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def echo(conn: npipes.Connection) -> None:
    for message in conn:
        conn.send(message, timeout=30)


async def aio_echo(conn: npipes.aio.Connection) -> None:
    async for message in conn:
        await conn.send(message, timeout=30)


def answer_stdin() -> None:
    for line in sys.stdin:
        if line.strip() == "cpu":
            say(f"cpu {time.process_time()}")


async def aio_main(name: str) -> None:
    async with await npipes.aio.serve(name, aio_echo):
        say(f"ready {squeeze_descriptors()}")
        await asyncio.to_thread(answer_stdin)


def main() -> None:
    logging.basicConfig(
        stream=sys.stderr, level=logging.DEBUG, format="LOG %(levelname)s %(message)s"
    )
    mode, name = sys.argv[1], sys.argv[2]
    if mode == "aio":
        asyncio.run(aio_main(name))
        return
    with npipes.serve(name, echo):
        say(f"ready {squeeze_descriptors()}")
        answer_stdin()


if __name__ == "__main__":
    main()
