"""Hostile peers for tests/test_attack12_*.py (issue 12's request/reply, objects,
publish/subscribe and reconnect surface), each run in its own process."""

from __future__ import annotations

from typing import Any

import npipes

WAIT = 30.0


def accept_and_close(name: str) -> None:
    """A listener that accepts every client and closes it at once, forever (a
    reconnect storm for a ``reconnect=True`` client); the test kills it."""
    with npipes.listen(name) as listener:
        while True:
            conn = listener.accept(timeout=WAIT)
            conn.close()


def send_deep_json(name: str, depth: int) -> None:
    """Connect and send JSON nested ``depth`` levels deep, then a valid JSON value;
    wait for the test's last word."""
    with npipes.connect(name, timeout=WAIT, wait_for_listener=True) as conn:
        conn.send("[" * depth + "]" * depth, timeout=WAIT)
        conn.send("{}", timeout=WAIT)
        conn.send_json({"after": True}, timeout=WAIT)
        conn.recv(timeout=WAIT)


def threadless_uid() -> int:
    """A uid of its own for this thread-exhaustion peer: RLIMIT_NPROC counts every
    thread of the uid on the machine, so it must not be shared with other tests,
    nor with the same test in another suite run at once (nox runs two: a shared
    constant uid made one run's threads eat the other's limit). Live pids are
    unique, so 100000 + pid is too."""
    import os

    return 100_000 + os.getpid()


def publisher_out_of_threads(path: str, floods: int) -> None:
    """As ``threadless_uid()`` with room for 3 more threads: publish at ``path``, let
    ``floods`` clients connect and never read (the publisher runs out of threads),
    let them go, then check a real subscriber still gets a message. Exits 0 if it
    does, 3 if not (a queue would need a thread of its own: no reporting through one)."""
    import os
    import resource
    import socket
    import sys
    import time

    from posix_peers import become

    become(threadless_uid())
    with npipes.publish(path) as publisher:
        threads = len(os.listdir("/proc/self/task"))
        resource.setrlimit(resource.RLIMIT_NPROC, (threads + 3, threads + 3))
        flood = []
        for _ in range(floods):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            flood.append(sock)
        deadline = time.monotonic() + WAIT
        while publisher.subscribers < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the acceptor meets the thread limit with the rest
        for sock in flood:
            sock.close()
        while publisher.subscribers and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            with npipes.subscribe(path, timeout=10.0) as sub:
                publisher.send(b"still here")
                got = sub.recv(timeout=10.0)
        except npipes.NpipesError as exc:
            sys.stderr.write(f"subscribe after the flood failed: {exc!r}\n")
            sys.exit(3)
        sys.exit(0 if got == b"still here" else 4)


def _upper(message: bytes | str) -> bytes | str:
    return message.upper()


def server_out_of_threads(path: str, floods: int) -> None:
    """As :func:`publisher_out_of_threads`, for ``serve(respond=...)``: ``floods``
    clients hold connections while the server has room for 3 more threads; once
    they are gone, a real client's request must still be answered."""
    import os
    import resource
    import socket
    import sys
    import time

    from posix_peers import become

    become(threadless_uid())
    with npipes.serve(path, respond=_upper) as server:
        threads = len(os.listdir("/proc/self/task"))
        resource.setrlimit(resource.RLIMIT_NPROC, (threads + 3, threads + 3))
        flood = []
        for _ in range(floods):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            flood.append(sock)
        deadline = time.monotonic() + WAIT
        while server.active < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the acceptor meets the thread limit with the rest
        for sock in flood:
            sock.close()
        while server.active and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            with npipes.connect(path, timeout=10.0) as conn:
                got = conn.request(b"still here", timeout=10.0)
        except npipes.NpipesError as exc:
            sys.stderr.write(f"request after the flood failed: {exc!r}\n")
            sys.exit(3)
        sys.exit(0 if got == b"STILL HERE" else 4)


def publisher_drops_without_a_thread(path: str) -> None:
    """As ``threadless_uid()``: a subscriber that never reads, then no room for one more
    thread; publishing past its ``max_queue`` must drop it without raising from
    ``send`` (the drop's grace timer cannot start). Exits 0, or 3 if ``send`` raised,
    4 if the subscriber was not dropped."""
    import os
    import resource
    import sys
    import time

    from posix_peers import become

    become(threadless_uid())
    with (
        npipes.publish(path, max_queue=64 * 1024) as publisher,
        npipes.subscribe(path, timeout=WAIT),  # never reads
    ):
        deadline = time.monotonic() + WAIT
        while publisher.subscribers < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        threads = len(os.listdir("/proc/self/task"))
        resource.setrlimit(resource.RLIMIT_NPROC, (threads, threads))
        try:
            for _ in range(4096):  # 4 MiB: far past the queue and the socket buffers
                publisher.send(b"x" * 1024)
                if not publisher.subscribers:
                    break
        except RuntimeError as exc:
            sys.stderr.write(f"send raised {exc!r}\n")
            sys.exit(3)
        if publisher.subscribers:
            sys.exit(4)


def _echo(message: bytes | str) -> bytes | str:
    return message


async def _aecho(message: bytes | str) -> bytes | str:
    return message


def respond_server(name: str, front: str, ready: Any, stop: Any, results: Any) -> None:
    """``serve(respond=echo)`` (``front`` "sync" or "aio"): put its peak RSS in KiB
    (before and after) once ``stop`` is set."""
    import asyncio
    import resource

    import npipes.aio

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if front == "aio":

        async def main() -> None:
            async with await npipes.aio.serve(name, respond=_aecho):
                ready.set()
                await asyncio.to_thread(stop.wait, 3 * WAIT)

        asyncio.run(main())
    else:
        with npipes.serve(name, respond=_echo):
            ready.set()
            stop.wait(3 * WAIT)
    results.put((before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


LIMIT = 1024
"""The ``max_message_size`` of :func:`quoting_server` (both ends)."""


def _quote(message: bytes | str) -> bytes | str:
    raise ValueError(f"bad request: {message!r}")  # the error quotes the whole request


async def _aquote(message: bytes | str) -> bytes | str:
    return _quote(message)


def quoting_server(name: str, front: str, ready: Any, stop: Any) -> None:
    """``serve(respond=...)`` with ``max_message_size=LIMIT`` whose respond function
    raises an error quoting the request (a message longer than the request)."""
    import asyncio

    import npipes.aio

    if front == "aio":

        async def main() -> None:
            async with await npipes.aio.serve(name, respond=_aquote, max_message_size=LIMIT):
                ready.set()
                await asyncio.to_thread(stop.wait, 3 * WAIT)

        asyncio.run(main())
    else:
        with npipes.serve(name, respond=_quote, max_message_size=LIMIT):
            ready.set()
            stop.wait(3 * WAIT)
