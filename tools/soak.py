#!/usr/bin/env python3
"""Soak npipes: mixed load with random faults for a given time, then one summary line.

Usage: ``tools/soak --seconds N [--seed S]`` (POSIX; not part of the package, not in CI).

What runs: a **sync** server process (``npipes.serve``) and an **asyncio**
server process (``npipes.aio.serve``), each listening on one name per
(framing, crc) pair: ``npipes`` with and without CRC, ``npipes1`` with CRC,
``multiprocessing``, ``lines`` and ``dotnet``. Both echo every message after
checking it (body, and numbers increasing per connection). Client processes
(3 with 2 threads each, sync API; 2 with 3 tasks each, ``npipes.aio``) open
connection after connection to a random server and name, each connection
sending 1..200 messages of random size (0 B to 4 MiB, within the framing's
limit; text or bytes) and checking every echo, whole and in order. At most 64
KiB of echoes is outstanding unless nothing is (so neither side blocks in a
send while the other does: the deadlock-free way of docs/reliability.md).

Faults, at random:

* the driver SIGKILLs a client process or a server process every 0.3..3 s
  and starts a new one (servers on the same names, replacing the stale socket);
* receive timeouts that fire (0.1 ms..5 ms, and ``asyncio.timeout``
  cancellations), send timeouts that fire on large messages;
* clients disconnecting mid-message: sync clients ``close()`` from a timer
  thread during a large ``send``; asyncio clients ``abort()`` while a large
  message is still being written.

Counts (messages, client to server and echoed back):

* **sent**: ``send`` returned (asyncio: also a ``send`` that timed out, since
  its message stays queued and goes out whole).
* **delivered**: its echo came back whole, equal to it, in order.
* **failed**: not delivered, and the client knows why: a typed npipes error
  was raised on that connection (or the ``TimeoutError`` of a cancelled
  asyncio call) and the server it was connected to was killed since the
  connection started (the driver bumps that server's epoch before the kill
  and again once it is gone; see ``_Session.server_killed``), or the client
  broke the connection itself (a timeout that closed it, ``partial``; its own
  ``close()`` or ``abort()`` mid-message).
  Among them, **torn_lines**: ``lines`` echoes cut short by the server's death
  (docs/framings.md: at the end of the stream a last line without its newline
  is still delivered, so the framing cannot tell a torn message; the soak
  checks it is a prefix of the message, then counts it failed, not lost).
* **abandoned**: sent by a client process that was then SIGKILLed before
  its echo came back (nobody is left to receive it).
* **lost** (must be 0): a sent message whose sender and receiver were alive
  and kept reading, yet it never came back, or came back corrupt, out of
  order or duplicated: an echo that differs from the oldest outstanding
  message; a connection that ended (cleanly or with a typed error) with
  messages outstanding when neither its server was killed nor the client broke
  it; a message the server found corrupt or out of order; and any message
  not accounted for by a client that exited normally.
* **untyped** (must be 0): an exception that is not an npipes error (nor an
  expected ``TimeoutError``) in any client or server, a handler error logged
  by a server, a process that died without being killed, or one that hung.

sent == delivered + failed + abandoned + lost. The exit status is 0 only if
lost == 0 and untyped == 0; details of each lost message and untyped
exception go to stderr and to files in a temporary folder named there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "src") not in sys.path:  # run from a checkout; never installed
    sys.path.insert(0, str(ROOT / "src"))

import npipes  # noqa: E402
import npipes.aio  # noqa: E402

CTX = multiprocessing.get_context("spawn")
WAIT = 60.0
"""Seconds a call may block when no fault is meant (the machine may be loaded)."""
WINDOW = 64 * 1024
"""Bytes of echoes a client lets be outstanding before it reads them (if any are)."""
MAX_SIZE = 4 * 1024 * 1024
COMBOS: tuple[tuple[str, bool], ...] = (
    ("npipes", False),
    ("npipes", True),
    ("npipes1", True),
    ("multiprocessing", False),
    ("lines", False),
    ("dotnet", False),
)
SERVERS = ("sync", "aio")
SYNC_CLIENTS, SYNC_THREADS = 3, 2
AIO_CLIENTS, AIO_TASKS = 2, 3

# Client counters (one shared array per client process; one writer, under a lock).
SENT, DELIVERED, FAILED, LOST, UNTYPED, CONNECTIONS, TIMEOUTS, DISCONNECTS, TORN = range(9)
CLIENT_FIELDS = 9
# Server counters.
S_RECEIVED, S_CORRUPT, S_UNTYPED = range(3)
SERVER_FIELDS = 3

_TABLE = bytes(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[i % 64] for i in range(256)
)


def _block() -> bytes:
    import hashlib

    return hashlib.shake_256(b"npipes soak").digest(MAX_SIZE + 64).translate(_TABLE)


BLOCK = _block()
"""The bytes message bodies are cut from: ASCII letters, digits, ``-`` and ``_``."""
TEXT = BLOCK.decode("ascii")


def _name(prefix: str, server: str, framing: str, crc: bool) -> str:
    return f"{prefix}-{server}-{framing}-{'crc' if crc else 'plain'}"


# -- messages ---------------------------------------------------------------------------


def make_message(
    rng: random.Random, framing: str, client: int, conn: int, seq: int
) -> tuple[bytes | str, bool]:
    """A random message for ``framing``, and whether it is large (a fault target).

    Its header ``client.conn.seq.offset.size|`` says which slice of ``BLOCK``
    the body is, so the server checks it whole; 1 message in 50 is empty.
    """
    roll = rng.random()
    if roll < 0.02:
        return ("" if framing in ("npipes1", "lines", "dotnet") else b""), False
    if roll < 0.6:
        size = rng.randrange(0, 256)
    elif roll < 0.9:
        size = rng.randrange(256, 64 * 1024)
    else:
        size = rng.randrange(64 * 1024, MAX_SIZE)
    if framing == "dotnet":
        size = min(size, 32_000)  # 65,535 bytes of UTF-16
    offset = rng.randrange(0, len(BLOCK) - size)
    header = f"{client}.{conn}.{seq}.{offset}.{size}|"
    text = framing in ("npipes1", "lines", "dotnet") or (framing == "npipes" and rng.random() < 0.3)
    message: bytes | str
    if text:
        message = header + TEXT[offset : offset + size]
    else:
        message = header.encode() + BLOCK[offset : offset + size]
    return message, size >= 256 * 1024


class Torn(ValueError):
    """A message shorter than its header says (whole otherwise)."""


def check_message(message: bytes | str) -> int | None:
    """The ``seq`` of a :func:`make_message` message (None if empty); ValueError if corrupt."""
    if not message:
        return None
    data = message.encode("ascii") if isinstance(message, str) else bytes(message)
    header, bar, body = data.partition(b"|")
    parts = header.split(b".")
    if not bar or len(parts) != 5:
        raise ValueError(f"no header in a message of {len(data)} bytes: {data[:40]!r}")
    offset, size = int(parts[3]), int(parts[4])
    if len(body) != size:
        raise Torn(f"message {header!r} has {len(body)} of its {size} bytes")
    if body != BLOCK[offset : offset + size]:
        raise ValueError(f"corrupt body in message {header!r} ({len(data)} bytes)")
    return int(parts[2])


# -- bookkeeping shared by every process ---------------------------------------------------


class Report:
    """One process's counters (a shared array) and its log of errors (a file)."""

    def __init__(self, counters: Any, log_path: str) -> None:
        self.counters = counters
        self.log_path = log_path
        self.lock = threading.Lock()

    def add(self, field: int, amount: int = 1) -> None:
        with self.lock:
            self.counters[field] += amount

    def note(self, what: str) -> None:
        with self.lock, open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"{time.strftime('%H:%M:%S')} pid {os.getpid()}: {what}\n")


class _Broken(Exception):
    """The client broke its own connection (a fault it injected): pending messages failed."""


# -- servers ----------------------------------------------------------------------------


class _Order:
    """Checks one connection's incoming messages: each whole, numbers increasing."""

    def __init__(self) -> None:
        self.last = -1

    def check(self, message: bytes | str) -> None:
        seq = check_message(message)
        if seq is not None:
            if seq <= self.last:
                raise ValueError(f"message {seq} after {self.last}: out of order or duplicated")
            self.last = seq


def _ends(conn: npipes.Connection) -> bool:
    """True if the peer's stream ends here (``lines``: a torn last line is its peer's death)."""
    try:
        conn.recv(timeout=WAIT)
    except npipes.ConnectionClosedError:
        return True
    except npipes.NpipesError:
        return False
    return False


async def _aends(conn: npipes.aio.Connection) -> bool:
    """:func:`_ends` for asyncio."""
    try:
        await conn.recv(timeout=WAIT)
    except npipes.ConnectionClosedError:
        return True
    except npipes.NpipesError:
        return False
    return False


def _count_logged_errors(report: Report, untyped: int) -> None:
    """Make every ERROR logged by the server (a handler or accept loop failure) an untyped error."""

    class Counter(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            report.add(untyped)
            report.note(f"logged: {self.format(record)}")

    logging.getLogger("npipes").addHandler(Counter(logging.ERROR))


def sync_server(prefix: str, drop: int, counters: Any, log_path: str, stop: Any) -> None:
    """``npipes.serve`` on every (framing, crc) name: check, then echo each message."""
    report = Report(counters, log_path)
    _count_logged_errors(report, S_UNTYPED)

    def handler(conn: npipes.Connection, framing: str) -> None:
        order = _Order()
        try:
            while True:
                message = conn.recv(timeout=WAIT * 2)
                report.add(S_RECEIVED)
                try:
                    order.check(message)
                except ValueError as exc:
                    if not (isinstance(exc, Torn) and framing == "lines" and _ends(conn)):
                        report.add(S_CORRUPT)
                        report.note(f"sync server ({framing}): {exc}")
                    return  # the client sees its connection end unexplained: lost
                if drop and counters[S_RECEIVED] % drop == 0:
                    return  # --drop-one-in: lose it, then close (the tool's self-test)
                conn.send(message, timeout=WAIT * 2)
        except npipes.NpipesError as exc:
            # The client left, died, or broke the connection: its side counts. Anything
            # else is noted, so an unexplained end on the client's side can be traced.
            if not isinstance(exc, npipes.ConnectionClosedError):
                report.note(f"sync server handler ended with {exc!r} after {order.last}")
            return
        except Exception:  # noqa: BLE001 - counted and logged
            report.add(S_UNTYPED)
            report.note("sync server handler: " + traceback.format_exc())

    servers = [
        npipes.serve(
            _name(prefix, "sync", framing, crc),
            functools.partial(handler, framing=framing),
            framing=framing,
            crc=crc,
            max_connections=64,
            handshake_timeout=None,
        )
        for framing, crc in COMBOS
    ]
    try:
        while not stop.value:
            time.sleep(0.05)
    finally:
        for server in servers:
            server.close(timeout=5)


def aio_server(prefix: str, drop: int, counters: Any, log_path: str, stop: Any) -> None:
    """``npipes.aio.serve`` on every (framing, crc) name: check, then echo each message."""
    report = Report(counters, log_path)
    _count_logged_errors(report, S_UNTYPED)

    async def handler(conn: npipes.aio.Connection, framing: str) -> None:
        order = _Order()
        try:
            while True:
                message = await conn.recv(timeout=WAIT * 2)
                report.add(S_RECEIVED)
                try:
                    order.check(message)
                except ValueError as exc:
                    if not (isinstance(exc, Torn) and framing == "lines" and await _aends(conn)):
                        report.add(S_CORRUPT)
                        report.note(f"aio server ({framing}): {exc}")
                    return
                if drop and counters[S_RECEIVED] % drop == 0:
                    return
                await conn.send(message, timeout=WAIT * 2)
        except npipes.NpipesError as exc:
            # The client left, died, or broke the connection: its side counts. Anything
            # else is noted, so an unexplained end on the client's side can be traced.
            if not isinstance(exc, npipes.ConnectionClosedError):
                report.note(f"aio server handler ended with {exc!r} after {order.last}")
            return
        except Exception:  # noqa: BLE001 - counted and logged
            report.add(S_UNTYPED)
            report.note("aio server handler: " + traceback.format_exc())

    async def main() -> None:
        servers = [
            await npipes.aio.serve(
                _name(prefix, "aio", framing, crc),
                functools.partial(handler, framing=framing),
                framing=framing,
                crc=crc,
                max_connections=64,
                handshake_timeout=None,
            )
            for framing, crc in COMBOS
        ]
        try:
            while not stop.value:  # noqa: ASYNC110 - a flag shared with the driver process
                await asyncio.sleep(0.05)
        finally:
            for server in servers:
                await server.aclose(timeout=5)

    asyncio.run(main())


# -- clients ---------------------------------------------------------------------------


class _Session:
    """What one client connection has sent and not yet seen echoed."""

    def __init__(self, report: Report, epochs: Any, server: int, framing: str) -> None:
        self.report = report
        self.framing = framing
        self.epochs = epochs
        self.server = server
        self.epoch = epochs[server]  # read before connecting: a kill after it explains errors
        self.pending: deque[bytes | str] = deque()
        self.pending_bytes = 0

    def server_killed(self) -> bool:
        """True if this connection's server may have been killed while it was open.

        The driver makes the epoch odd before a kill and even again once the
        process is gone, so a connection opened during a kill (odd) may have
        reached the dying server, and one opened at an even epoch saw no kill
        while the epoch is unchanged.
        """
        return bool(self.epoch % 2 == 1 or self.epochs[self.server] != self.epoch)

    def sent(self, message: bytes | str) -> None:
        self.pending.append(message)
        self.pending_bytes += len(message)
        self.report.add(SENT)

    def echoed(self, echo: bytes | str) -> None:
        """Compare an echo with the oldest outstanding message."""
        if not self.pending:
            self.lose(f"an echo nobody waits for: {echo[:40]!r}")
            raise _Broken
        expected = self.pending[0]
        if (
            self.framing == "lines"
            and isinstance(echo, str)
            and isinstance(expected, str)
            and len(echo) < len(expected)
            and expected.startswith(echo)
            and self.server_killed()
        ):
            # docs/framings.md: at the end of the stream a last line without its newline
            # is delivered, so an echo cut by the server's death arrives shortened.
            self.report.add(TORN)
            self.fail()
            raise _Broken
        if type(echo) is not type(expected) or echo != expected:
            self.lose(
                f"echo {echo[:40]!r} ({type(echo).__name__}, {len(echo)}) instead of "
                f"{expected[:40]!r} ({type(expected).__name__}, {len(expected)})"
            )
            raise _Broken
        self.pending.popleft()
        self.pending_bytes -= len(expected)
        self.report.add(DELIVERED)

    def fail(self) -> None:
        self.report.add(FAILED, len(self.pending))
        self.pending.clear()

    def ended(self, exc: BaseException | None, broken: bool) -> None:
        """The connection is over: classify what is still outstanding."""
        if not self.pending:
            return
        if broken or self.server_killed():
            self.fail()
        else:
            self.lose(f"the connection ended with {exc!r}; server alive, client did not break it")

    def lose(self, why: str) -> None:
        if self.pending:
            self.report.note(
                f"LOST {len(self.pending)} messages ({SERVERS[self.server]} server, "
                f"{self.framing}, epoch {self.epoch}->{self.epochs[self.server]}): {why}"
            )
        self.report.add(LOST, len(self.pending))
        self.pending.clear()


def _untyped(report: Report, where: str) -> None:
    report.add(UNTYPED)
    report.note(f"UNTYPED in {where}: " + traceback.format_exc())


def sync_client(
    prefix: str, ident: int, seed: int, counters: Any, log_path: str, epochs: Any, stop: Any
) -> None:
    """``SYNC_THREADS`` threads, each running connection after connection until ``stop``."""
    report = Report(counters, log_path)

    def worker(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        conn_no = 0
        while not stop.value:
            conn_no += 1
            try:
                _sync_connection(prefix, rng, report, epochs, ident * 100 + number, conn_no, stop)
            except Exception:  # noqa: BLE001 - counted and logged
                _untyped(report, "sync client")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(SYNC_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _sync_connection(
    prefix: str,
    rng: random.Random,
    report: Report,
    epochs: Any,
    client: int,
    conn_no: int,
    stop: Any,
) -> None:
    server = rng.randrange(len(SERVERS))
    framing, crc = rng.choice(COMBOS)
    session = _Session(report, epochs, server, framing)
    try:
        conn = npipes.connect(
            _name(prefix, SERVERS[server], framing, crc),
            framing=framing,
            crc=crc,
            timeout=WAIT,
            wait_for_listener=True,
        )
    except npipes.NpipesError:
        if not session.server_killed():
            report.note(f"connect failed with the server alive: {traceback.format_exc()}")
        return
    report.add(CONNECTIONS)
    broken = False
    error: BaseException | None = None
    try:
        for seq in range(rng.randint(1, 200)):
            if stop.value:
                break
            message, large = make_message(rng, framing, client, conn_no, seq)
            if session.pending and session.pending_bytes + len(message) > WINDOW:
                _sync_drain(conn, session, rng, 0)
            roll = rng.random()
            if large and roll < 0.1:  # a send timeout that fires
                try:
                    conn.send(message, timeout=rng.uniform(0.0001, 0.005))
                except npipes.PipeTimeoutError as exc:
                    report.add(TIMEOUTS)
                    if exc.partial or conn.closed:
                        broken = True
                        raise _Broken from exc
                    continue  # nothing went out: not sent
            elif large and roll < 0.2:  # disconnect mid-message: close from another thread
                report.add(DISCONNECTS)
                broken = True
                timer = threading.Timer(rng.uniform(0, 0.003), conn.close)
                timer.start()
                try:
                    conn.send(message, timeout=WAIT)
                    session.sent(message)
                finally:
                    timer.join()
                raise _Broken
            else:
                conn.send(message, timeout=WAIT)
            session.sent(message)
            if rng.random() < 0.3:
                _sync_drain(conn, session, rng, rng.randrange(0, WINDOW))
        _sync_drain(conn, session, rng, 0)
    except _Broken:
        pass
    except npipes.NpipesError as exc:
        error = exc
    finally:
        conn.close()
        session.ended(error, broken)


def _sync_drain(conn: npipes.Connection, session: _Session, rng: random.Random, keep: int) -> None:
    """Read echoes until at most ``keep`` bytes are outstanding; some reads time out."""
    while session.pending and (keep == 0 or session.pending_bytes > keep):
        if rng.random() < 0.05:
            try:
                echo = conn.recv(timeout=rng.uniform(0.0001, 0.005))
            except npipes.PipeTimeoutError as exc:
                session.report.add(TIMEOUTS)
                if exc.partial or conn.closed:  # part of an echo was read: closed (sync rule)
                    session.fail()
                    raise _Broken from exc
                continue
        else:
            echo = conn.recv(timeout=WAIT)
        session.echoed(echo)


def aio_client(
    prefix: str, ident: int, seed: int, counters: Any, log_path: str, epochs: Any, stop: Any
) -> None:
    """``AIO_TASKS`` tasks on one loop, each running connection after connection until ``stop``."""
    report = Report(counters, log_path)

    async def worker(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        conn_no = 0
        while not stop.value:
            conn_no += 1
            try:
                await _aio_connection(
                    prefix, rng, report, epochs, ident * 100 + number, conn_no, stop
                )
            except Exception:  # noqa: BLE001 - counted and logged
                _untyped(report, "aio client")

    async def main() -> None:
        await asyncio.gather(*(worker(n) for n in range(AIO_TASKS)))

    asyncio.run(main())


async def _aio_connection(
    prefix: str,
    rng: random.Random,
    report: Report,
    epochs: Any,
    client: int,
    conn_no: int,
    stop: Any,
) -> None:
    server = rng.randrange(len(SERVERS))
    framing, crc = rng.choice(COMBOS)
    session = _Session(report, epochs, server, framing)
    try:
        conn = await npipes.aio.connect(
            _name(prefix, SERVERS[server], framing, crc),
            framing=framing,
            crc=crc,
            timeout=WAIT,
            wait_for_listener=True,
        )
    except npipes.NpipesError:
        if not session.server_killed():
            report.note(f"connect failed with the server alive: {traceback.format_exc()}")
        return
    report.add(CONNECTIONS)
    broken = False
    error: BaseException | None = None
    try:
        for seq in range(rng.randint(1, 200)):
            if stop.value:
                break
            message, large = make_message(rng, framing, client, conn_no, seq)
            if session.pending and session.pending_bytes + len(message) > WINDOW:
                await _aio_drain(conn, session, rng, 0)
            roll = rng.random()
            if large and roll < 0.2:  # a send timeout that fires: the message still goes out
                try:
                    await conn.send(message, timeout=rng.uniform(0.0001, 0.005))
                except npipes.PipeTimeoutError:
                    report.add(TIMEOUTS)
                session.sent(message)
                if roll < 0.1:  # disconnect mid-message: abort while it is being written
                    report.add(DISCONNECTS)
                    broken = True
                    conn.abort()
                    raise _Broken
            else:
                await conn.send(message, timeout=WAIT)
                session.sent(message)
            if rng.random() < 0.3:
                await _aio_drain(conn, session, rng, rng.randrange(0, WINDOW))
        await _aio_drain(conn, session, rng, 0)
    except _Broken:
        pass
    except npipes.NpipesError as exc:
        error = exc
    finally:
        if broken:
            conn.abort()
        else:
            with contextlib.suppress(npipes.NpipesError):
                await conn.aclose()
        session.ended(error, broken)


async def _aio_drain(
    conn: npipes.aio.Connection, session: _Session, rng: random.Random, keep: int
) -> None:
    """Read echoes until at most ``keep`` bytes are outstanding; some reads time out or are
    cancelled, which must never consume or tear anything (asyncio rule)."""
    while session.pending and (keep == 0 or session.pending_bytes > keep):
        roll = rng.random()
        try:
            if roll < 0.03:
                echo = await conn.recv(timeout=rng.uniform(0.0001, 0.005))
            elif roll < 0.06:
                async with asyncio.timeout(rng.uniform(0.0001, 0.005)):
                    echo = await conn.recv(timeout=WAIT)
            else:
                echo = await conn.recv(timeout=WAIT)
        except TimeoutError as exc:  # PipeTimeoutError, or the cancellation's TimeoutError
            if roll >= 0.06:
                raise
            session.report.add(TIMEOUTS)
            if getattr(exc, "partial", False) or conn.closed:
                session.lose(f"an asyncio recv timeout closed the connection: {exc!r}")
                raise _Broken from exc
            continue
        session.echoed(echo)


# -- the driver -------------------------------------------------------------------------


class _Proc:
    """A started peer: its process, counters, log file, and whether the driver killed it."""

    def __init__(self, kind: str, process: Any, counters: Any, log_path: str) -> None:
        self.kind = kind
        self.process = process
        self.counters = counters
        self.log_path = log_path
        self.killed = False


class Driver:
    """Starts, kills and restarts the peers; adds up their counters."""

    def __init__(self, seconds: float, seed: int, folder: str, drop: int = 0) -> None:
        self.seconds = seconds
        self.drop = drop
        self.rng = random.Random(seed)
        self.seed = seed
        self.folder = folder
        self.prefix = f"soak{os.getpid()}"
        self.epochs = CTX.Array("q", len(SERVERS), lock=False)
        self.stop = CTX.Value("b", 0, lock=False)
        self.server_stop = CTX.Value("b", 0, lock=False)
        self.servers: dict[str, _Proc] = {}
        self.clients: list[_Proc] = []
        self.done: list[_Proc] = []
        self.started = 0
        self.kills = {"client": 0, "server": 0}

    def _event(self, what: str) -> None:
        with open(os.path.join(self.folder, "driver.log"), "a", encoding="utf-8") as log:
            log.write(f"{time.strftime('%H:%M:%S')} {what}\n")

    def _start(self, kind: str, target: Any, fields: int, *args: Any) -> _Proc:
        self.started += 1
        counters = CTX.Array("q", fields, lock=False)
        log_path = os.path.join(self.folder, f"{kind}-{self.started}.log")
        process = CTX.Process(
            target=target, args=(*args, counters, log_path, *self._tail(kind)), daemon=True
        )
        process.start()
        return _Proc(kind, process, counters, log_path)

    def _tail(self, kind: str) -> tuple[Any, ...]:
        if kind in SERVERS:
            return (self.server_stop,)
        return (self.epochs, self.stop)

    def start_server(self, kind: str) -> None:
        target = sync_server if kind == "sync" else aio_server
        self.servers[kind] = self._start(kind, target, SERVER_FIELDS, self.prefix, self.drop)

    def start_client(self, kind: str) -> None:
        target = sync_client if kind == "sync-client" else aio_client
        seed = self.rng.randrange(1 << 30)
        self.clients.append(
            self._start(kind, target, CLIENT_FIELDS, self.prefix, self.started + 1, seed)
        )

    def kill_server(self) -> None:
        kind = self.rng.choice(SERVERS)
        index = SERVERS.index(kind)
        self.epochs[index] += 1  # odd: any error a client sees from now on is explained
        old = self.servers[kind]
        old.killed = True
        os.kill(old.process.pid, signal.SIGKILL)
        old.process.join(10)
        self.epochs[index] += 1  # even: the old server is gone
        self.done.append(old)
        self.kills["server"] += 1
        self._event(f"killed the {kind} server, pid {old.process.pid}")
        self.start_server(kind)

    def kill_client(self) -> None:
        victim = self.rng.choice(self.clients)
        victim.killed = True
        os.kill(victim.process.pid, signal.SIGKILL)
        victim.process.join(10)
        self.clients.remove(victim)
        self.done.append(victim)
        self.kills["client"] += 1
        self._event(f"killed {victim.kind} pid {victim.process.pid}")
        self.start_client(victim.kind)

    def run(self) -> dict[str, int]:
        for kind in SERVERS:
            self.start_server(kind)
        for _ in range(SYNC_CLIENTS):
            self.start_client("sync-client")
        for _ in range(AIO_CLIENTS):
            self.start_client("aio-client")
        end = time.monotonic() + self.seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, self.rng.uniform(0.3, 3.0)))
            if time.monotonic() >= end:
                break
            if self.rng.random() < 0.6:
                self.kill_client()
            else:
                self.kill_server()
        return self.finish()

    def finish(self) -> dict[str, int]:
        """Stop the clients (each ends its connection cleanly), then the servers; add up."""
        self.stop.value = 1
        hung = 0
        for proc in self.clients:
            proc.process.join(WAIT * 3)
            if proc.process.is_alive():
                hung += 1
                proc.process.kill()
                proc.process.join()
        self.server_stop.value = 1
        for proc in self.servers.values():
            proc.process.join(30)
            if proc.process.is_alive():
                hung += 1
                proc.process.kill()
                proc.process.join()
        totals = dict.fromkeys(
            ("sent", "delivered", "failed", "abandoned", "lost", "untyped", "connections"), 0
        )
        totals.update(
            timeouts=0, disconnects=0, torn_lines=0, corrupt_at_server=0, hung=hung, died=0
        )
        totals["untyped"] += hung
        for proc in [*self.clients, *self.done, *self.servers.values()]:
            c = list(proc.counters)
            if not proc.killed and proc.process.exitcode != 0:
                totals["died"] += 1
                totals["untyped"] += 1
            if proc.kind in SERVERS:
                totals["corrupt_at_server"] += c[S_CORRUPT]
                totals["untyped"] += c[S_UNTYPED]
                continue
            for key, field in (
                ("sent", SENT),
                ("delivered", DELIVERED),
                ("failed", FAILED),
                ("lost", LOST),
                ("untyped", UNTYPED),
                ("connections", CONNECTIONS),
                ("timeouts", TIMEOUTS),
                ("disconnects", DISCONNECTS),
                ("torn_lines", TORN),
            ):
                totals[key] += c[field]
            rest = c[SENT] - c[DELIVERED] - c[FAILED] - c[LOST]
            if proc.killed:
                totals["abandoned"] += rest
            elif rest:
                totals["lost"] += rest  # an orderly client must account for every message
        totals["kills_client"] = self.kills["client"]
        totals["kills_server"] = self.kills["server"]
        return totals


SUMMARY_KEYS = (
    "sent",
    "delivered",
    "failed",
    "abandoned",
    "lost",
    "untyped",
    "connections",
    "timeouts",
    "disconnects",
    "kills_client",
    "kills_server",
    "torn_lines",
    "corrupt_at_server",
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tools/soak",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
        epilog=__doc__.split("\n\n", 2)[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, required=True, help="how long to run the load")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument(
        "--drop-one-in",
        type=int,
        default=0,
        metavar="N",
        help="test the tool itself: the servers silently skip the echo of every Nth"
        " message they receive and close that connection; each such message must be"
        " reported as lost (exit status 1)",
    )
    args = parser.parse_args(argv)
    if sys.platform == "win32":
        parser.error("tools/soak needs POSIX (it SIGKILLs its peers)")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    folder = tempfile.mkdtemp(prefix="npipes-soak-")
    began = time.monotonic()
    totals = Driver(args.seconds, seed, folder, args.drop_one_in).run()
    elapsed = time.monotonic() - began
    problems = totals["lost"] + totals["corrupt_at_server"] + totals["untyped"]
    if problems:
        for path in sorted(Path(folder).glob("*.log")):
            text = path.read_text(encoding="utf-8")
            if "LOST" in text or "UNTYPED" in text or "logged" in text or "server:" in text:
                sys.stderr.write(f"--- {path}\n{text[:4000]}\n")
    sys.stderr.write(f"soak: details in {folder}\n")
    fields = " ".join(f"{key}={totals[key]}" for key in SUMMARY_KEYS)
    verdict = "OK" if totals["lost"] == 0 and totals["untyped"] == 0 else "FAIL"
    if totals["corrupt_at_server"]:
        verdict = "FAIL"
    sys.stdout.write(f"soak {verdict}: seconds={elapsed:.0f} seed={seed} {fields}\n")
    sys.stdout.flush()
    return 0 if verdict == "OK" else 1


if __name__ == "__main__":
    sys.exit(main())
