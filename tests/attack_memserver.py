"""Peer for tests/test_attack_memory.py: a listener in its own process that reports
its memory (VmRSS/VmHWM from /proc/self/status, MiB) and receives from one client.

argv: NAME FRAMING sync|aio default|none [authkey]. Prints ``READY <hwm>``, then on
each stdin line ``VM <hwm> <cpu seconds> <rss>`` (MiB, s, MiB); ``GOT <size>`` per
message received; ``ERR <type>`` when a receive fails.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import npipes
from npipes import aio


def hwm(field: str = "VmHWM") -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) // 1024
    raise RuntimeError(f"no {field}")


def say(*words: object) -> None:
    sys.stdout.write(" ".join(map(str, words)) + "\n")
    sys.stdout.flush()


def main() -> None:
    name, framing, mode, limit = sys.argv[1:5]
    options: dict[str, object] = {"framing": framing}
    if limit == "none":
        options["max_message_size"] = None
    if len(sys.argv) > 5:
        options["authkey"] = sys.argv[5].encode()

    def report(exc: BaseException) -> None:
        say("ERR", type(exc).__name__)

    if mode == "sync":
        listener = npipes.listen(name, **options)  # type: ignore[arg-type]

        def serve() -> None:
            try:
                with listener.accept(timeout=60) as conn:
                    while True:  # keep the connection: its buffers stay measured
                        say("GOT", len(conn.recv(timeout=60)))
            except npipes.NpipesError as exc:
                report(exc)

        threading.Thread(target=serve, daemon=True).start()
    else:

        async def serve_aio(started: threading.Event) -> None:
            async with await aio.listen(name, **options) as alistener:  # type: ignore[arg-type]
                started.set()
                try:
                    async with await alistener.accept(timeout=60) as conn:
                        while True:
                            say("GOT", len(await conn.recv(timeout=60)))
                except npipes.NpipesError as exc:
                    report(exc)
                await asyncio.sleep(3600)

        started = threading.Event()
        threading.Thread(target=lambda: asyncio.run(serve_aio(started)), daemon=True).start()
        started.wait(60)
    say("READY", hwm())
    for _ in sys.stdin:
        say("VM", hwm(), time.process_time(), hwm("VmRSS"))


if __name__ == "__main__":
    main()
