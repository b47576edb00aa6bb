"""Peer programs for the load tests (tests/test_load.py), run by ``helpers.start``.

Three roles, each in a fresh (spawned) process:

* a **server** (sync ``npipes.serve``, ``npipes.aio.serve`` or a single
  receiving listener) that measures itself: a baseline of open descriptors,
  threads, resident memory and (where cheap enough) ``tracemalloc`` memory after
  a warm-up connection, then the same after the load, polled until it settles;
* a **client** process (256 threads, or 256 asyncio tasks) or a **sender** of
  1,000,000 small messages;
* the test, which talks to the server over a ``multiprocessing`` pipe (no
  feeder thread, unlike a queue, so the server's thread count stays its own).

Every message carries what it must be, so both sides check it whole; every
blocking step has a timeout, so a peer never hangs.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import npipes
import npipes.aio

if TYPE_CHECKING:
    from multiprocessing.connection import Connection as Control

WAIT = 60.0
"""Seconds any single blocking step of a peer may take (the machine is loaded)."""

SETTLE = 30.0
"""Seconds the server waits for descriptors and threads to come back to the baseline."""


# -- what a process holds -----------------------------------------------------------


def _status_field(field: str) -> int | None:
    """A number of /proc/self/status (Linux), e.g. ``Threads`` or ``VmRSS`` (kB)."""
    if not sys.platform.startswith("linux"):
        return None
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def open_fds() -> int | None:
    """Descriptors open in this process; None on Windows (handles are not counted)."""
    if sys.platform == "win32":
        return None
    directory = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    return len(os.listdir(directory)) - 1  # minus the one listdir itself opened


def threads() -> int:
    """OS threads of this process on Linux (Python's and any other); else Python threads."""
    count = _status_field("Threads")
    return threading.active_count() if count is None else count


def rss() -> int:
    """Resident memory in bytes (working set on Windows)."""
    kib = _status_field("VmRSS")
    if kib is not None:
        return kib * 1024
    if sys.platform == "win32":
        import win32api
        import win32process

        info = win32process.GetProcessMemoryInfo(win32api.GetCurrentProcess())
        return int(info["PagefileUsage"])  # private committed bytes
    import resource  # other POSIX: the peak is the best cheap figure

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _trim() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``), so RSS shows what is used.

    glibc keeps freed memory in its heaps (one arena per thread, up to 8 per
    core, and large blocks once its mmap threshold has grown), so without this
    RSS after 256 clients stays ~30 MiB above the baseline with nothing leaked.
    """
    if sys.platform.startswith("linux"):
        import ctypes
        import ctypes.util

        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            libc.malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
            return
    if sys.platform == "win32":
        import ctypes

        kernel32 = ctypes.WinDLL("kernel32")
        heaps = (ctypes.c_void_p * 256)()
        for index in range(min(kernel32.GetProcessHeaps(256, heaps), 256)):
            kernel32.HeapCompact(ctypes.c_void_p(heaps[index]), 0)


def snapshot() -> dict[str, int | None]:
    """What this process holds now, after a full garbage collection."""
    gc.collect()
    _trim()
    traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None
    coverage = sys.modules.get("coverage")
    measured = int(coverage is not None and coverage.Coverage.current() is not None)
    return {
        "fds": open_fds(),
        "threads": threads(),
        "rss": rss(),
        "traced": traced,
        "coverage": measured,
    }


def quiet(python_threads: int) -> dict[str, int | None]:
    """A baseline :func:`snapshot`, once only ``python_threads`` Python threads are left.

    A warm-up connection's thread may still be finishing when its handler is done;
    its exit would otherwise be taken for a return to the baseline later.
    """
    deadline = time.monotonic() + SETTLE
    while threading.active_count() > python_threads:
        if time.monotonic() > deadline:
            raise TimeoutError(f"threads left: {threading.enumerate()}")
        time.sleep(0.02)
    return snapshot()


def settled(baseline: dict[str, int | None]) -> dict[str, int | None]:
    """Poll :func:`snapshot` until descriptors and threads are back to ``baseline``.

    Worker threads and closed connections go away asynchronously (a thread
    exits after its handler returned), so the figures are polled, up to
    ``SETTLE`` seconds; the last snapshot is returned either way and the test
    judges it.
    """
    deadline = time.monotonic() + SETTLE
    while True:
        now = snapshot()
        if (now["fds"] == baseline["fds"] and now["threads"] == baseline["threads"]) or (
            time.monotonic() > deadline
        ):
            return now
        time.sleep(0.05)


# -- messages -------------------------------------------------------------------------

_BLOCK = hashlib.shake_256(b"npipes load").digest(1 << 16)


def client_message(client: int, seq: int) -> bytes:
    """Message ``seq`` of client ``client``: its tag, then 0..~48 KiB of fixed random bytes."""
    size = (client * 7919 + seq * 104729) % 49_000
    start = (client * 131 + seq * 17) % (len(_BLOCK) - size)
    return f"{client}:{seq}:".encode() + _BLOCK[start : start + size]


def check_client_message(message: bytes | str) -> tuple[int, int]:
    """``(client, seq)`` of a :func:`client_message`; ValueError unless it is exactly that."""
    if not isinstance(message, bytes):
        raise ValueError(f"expected bytes, got {type(message).__name__}")
    client, seq, _ = message[:32].split(b":", 2)
    if message != client_message(int(client), int(seq)):
        raise ValueError(f"message {client!r}:{seq!r} ({len(message)} bytes) is corrupt")
    return int(client), int(seq)


def small_message(seq: int) -> bytes:
    """Message ``seq`` of the million: its number (4 bytes), then 12..60 more bytes (16..64)."""
    size = 12 + (seq * 7919) % 49
    start = (seq * 31) % (len(_BLOCK) - size)
    return seq.to_bytes(4, "little") + _BLOCK[start : start + size]


def small_messages(first: int, stop: int) -> Iterator[bytes]:
    """:func:`small_message` ``first`` .. ``stop - 1``."""
    return (small_message(seq) for seq in range(first, stop))


def digest_update(digest: Any, message: bytes) -> None:
    """Add one message to a running sha256 of a message stream: its length, then its bytes.

    The length makes message boundaries part of the hash, so two messages
    spliced into one (or one split in two) change it.
    """
    digest.update(len(message).to_bytes(4, "little"))
    digest.update(message)


# -- 256 clients: sync server (one thread per connection) + a client of 256 threads --


class _Peak:
    """Handlers running now, and the most that ever ran at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.errors: list[str] = []

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


def thread_server(name: str, control: Control, trace: bool) -> None:
    """``npipes.serve`` with CRC: check every message, echo it, until each client leaves.

    Reports ``("ready", baseline)`` once warmed up, then on each ``"measure"``
    ``("after", snapshot, peak, errors)``, and exits on ``"stop"``.
    """
    peak = _Peak()

    def handler(conn: npipes.Connection) -> None:
        peak.enter()
        try:
            for message in conn:
                check_client_message(message)
                conn.send(message, timeout=WAIT)
        except Exception as exc:  # noqa: BLE001 - reported to the test
            peak.errors.append(repr(exc))
        finally:
            peak.leave()

    if trace:
        tracemalloc.start()
    with npipes.serve(name, handler, crc=True, max_connections=512) as server:
        with npipes.connect(name, crc=True, timeout=WAIT) as conn:  # warm-up
            conn.send(client_message(0, 0), timeout=WAIT)
            assert conn.recv(timeout=WAIT) == client_message(0, 0)
        _wait_idle(lambda: server.active)
        peak.peak = 0
        baseline = quiet(2)  # this one and the accept loop
        control.send(("ready", baseline))
        while control.recv() == "measure":
            _wait_idle(lambda: server.active)
            control.send(("after", settled(baseline), peak.peak, peak.errors))
            peak.peak = 0


def _wait_idle(active: Any) -> None:
    deadline = time.monotonic() + WAIT
    while active():
        if time.monotonic() > deadline:
            raise TimeoutError("the server's handlers did not finish")
        time.sleep(0.02)


def thread_clients(name: str, clients: int, rounds: int) -> None:
    """``clients`` threads, all connected at once (CRC on), each sending ``rounds``
    messages and checking every echo; all stay connected until every one is done,
    so the server holds every connection at the same time."""
    connected = threading.Barrier(clients, timeout=WAIT * 2)
    done = threading.Barrier(clients, timeout=WAIT * 2)
    errors: list[str] = []

    def client(number: int) -> None:
        try:
            with npipes.connect(name, crc=True, timeout=WAIT, wait_for_listener=True) as conn:
                connected.wait()
                for seq in range(rounds):
                    message = client_message(number, seq)
                    conn.send(message, timeout=WAIT)
                    if conn.recv(timeout=WAIT) != message:
                        errors.append(f"client {number}: echo {seq} differs")
                done.wait()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(f"client {number}: {exc!r}")
            connected.abort()
            done.abort()

    workers = [threading.Thread(target=client, args=(n,)) for n in range(1, clients + 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(WAIT * 3)
    if errors or any(worker.is_alive() for worker in workers):
        raise AssertionError(f"{len(errors)} clients failed, first: {errors[:3]}")


# -- 256 clients: asyncio server + a client process of 256 tasks ------------------------


def aio_server(name: str, control: Control, trace: bool) -> None:
    """``npipes.aio.serve`` with CRC; the same reports as :func:`thread_server`."""
    peak = _Peak()

    async def handler(conn: npipes.aio.Connection) -> None:
        peak.enter()
        try:
            async for message in conn:
                check_client_message(message)
                await conn.send(message, timeout=WAIT)
        except Exception as exc:  # noqa: BLE001 - reported to the test
            peak.errors.append(repr(exc))
        finally:
            peak.leave()

    async def command() -> str:
        deadline = time.monotonic() + WAIT * 5
        while not control.poll(0):
            if time.monotonic() > deadline:
                raise TimeoutError("the test sent no command")
            await asyncio.sleep(0.05)
        return str(control.recv())

    async def wait_idle(server: Any) -> None:
        deadline = time.monotonic() + WAIT
        while server.active:
            if time.monotonic() > deadline:
                raise TimeoutError("the server's handlers did not finish")
            await asyncio.sleep(0.02)

    async def asettled(baseline: dict[str, int | None]) -> dict[str, int | None]:
        deadline = time.monotonic() + SETTLE
        while True:
            now = snapshot()
            if (now["fds"] == baseline["fds"] and now["threads"] == baseline["threads"]) or (
                time.monotonic() > deadline
            ):
                return now
            await asyncio.sleep(0.05)

    async def main() -> None:
        async with await npipes.aio.serve(name, handler, crc=True, max_connections=512) as server:
            async with await npipes.aio.connect(name, crc=True, timeout=WAIT) as conn:
                await conn.send(client_message(0, 0), timeout=WAIT)
                assert await conn.recv(timeout=WAIT) == client_message(0, 0)
            await wait_idle(server)
            peak.peak = 0
            baseline = quiet(1)
            control.send(("ready", baseline))
            while await command() == "measure":
                await wait_idle(server)
                control.send(("after", await asettled(baseline), peak.peak, peak.errors))
                peak.peak = 0

    if trace:
        tracemalloc.start()
    asyncio.run(main())


def aio_clients(name: str, clients: int, rounds: int) -> None:
    """:func:`thread_clients` with ``npipes.aio``: ``clients`` tasks on one loop."""

    async def main() -> None:
        connected = asyncio.Barrier(clients)
        done = asyncio.Barrier(clients)

        async def client(number: int) -> None:
            async with await npipes.aio.connect(
                name, crc=True, timeout=WAIT, wait_for_listener=True
            ) as conn:
                async with asyncio.timeout(WAIT * 2):
                    await connected.wait()
                for seq in range(rounds):
                    message = client_message(number, seq)
                    await conn.send(message, timeout=WAIT)
                    echo = await conn.recv(timeout=WAIT)
                    assert echo == message, f"client {number}: echo {seq} differs"
                async with asyncio.timeout(WAIT * 2):
                    await done.wait()

        async with asyncio.TaskGroup() as group:
            for number in range(1, clients + 1):
                group.create_task(client(number))

    asyncio.run(main())


# -- 1,000,000 small messages through one connection -------------------------------------


def million_receiver(name: str, control: Control, count: int, trace: bool) -> None:
    """Accept one connection; receive ``count`` :func:`small_message` s (the first half
    with ``recv``, the rest with ``recv_many``), checking each number and hashing them
    in order; reply with the digest; report ``("ready", baseline)`` and
    ``("after", snapshot, received, digest, errors)``."""
    if trace:
        tracemalloc.start()
    with npipes.listen(name) as listener:
        warm = threading.Thread(target=_warm_up_sender, args=(name,))
        warm.start()
        with listener.accept(timeout=WAIT) as conn:
            for seq in range(1000):
                assert conn.recv(timeout=WAIT) == small_message(seq)
        warm.join(WAIT)
        baseline = quiet(1)
        control.send(("ready", baseline))
        digest = hashlib.sha256()
        received = 0
        errors: list[str] = []
        with listener.accept(timeout=WAIT) as conn:
            half = count // 2
            while received < half:
                message = conn.recv(timeout=WAIT)
                assert isinstance(message, bytes)
                if int.from_bytes(message[:4], "little") != received:
                    errors.append(f"message {received} has number {message[:4]!r}")
                digest_update(digest, message)
                received += 1
            while received < count:
                for message in conn.recv_many(timeout=WAIT):
                    assert isinstance(message, bytes)
                    if int.from_bytes(message[:4], "little") != received:
                        errors.append(f"message {received} has number {message[:4]!r}")
                    digest_update(digest, message)
                    received += 1
            conn.send(digest.hexdigest(), timeout=WAIT)
            try:  # the sender closes after reading the digest: nothing more may come
                extra = conn.recv(timeout=WAIT)
                errors.append(f"a message after the last: {extra!r:.60}")
            except npipes.ConnectionClosedError as exc:
                if type(exc) is not npipes.ConnectionClosedError:
                    errors.append(repr(exc))
        del conn
        assert control.recv() == "measure"
        control.send(("after", settled(baseline), received, digest.hexdigest(), errors[:5]))
        assert control.recv() == "stop"


def _warm_up_sender(name: str) -> None:
    with npipes.connect(name, timeout=WAIT) as conn:
        conn.send_many(small_messages(0, 500), timeout=WAIT)
        for message in small_messages(500, 1000):
            conn.send(message, timeout=WAIT)


def million_sender(name: str, count: int, control: Control) -> None:
    """Send ``count`` :func:`small_message` s: the first half one ``send`` each, the
    rest with ``send_many`` in batches of 1000; hash them in order; read the
    receiver's digest; report ``(sent, own digest, receiver's digest)``."""
    digest = hashlib.sha256()
    with npipes.connect(name, timeout=WAIT, wait_for_listener=True) as conn:
        half = count // 2
        for message in small_messages(0, half):
            digest_update(digest, message)
            conn.send(message, timeout=WAIT)
        for first in range(half, count, 1000):
            batch = list(small_messages(first, min(count, first + 1000)))
            for message in batch:
                digest_update(digest, message)
            conn.send_many(batch, timeout=WAIT)
        theirs = conn.recv(timeout=WAIT)
    control.send(("sent", count, digest.hexdigest(), theirs))
