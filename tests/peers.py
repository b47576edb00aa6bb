"""Peer programs for the process tests: module-level functions run by ``helpers.start``.

Each runs in a fresh (spawned) Python process. A peer reports failure by
raising (non-zero exit code, traceback on stderr) or through a queue or the
connection itself; every blocking call has a timeout so a peer never hangs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import sys
import time
from typing import TYPE_CHECKING, Any

import npipes
from npipes._deadline import Deadline
from npipes._frame import frame_parts
from npipes.ipc import IPC

if TYPE_CHECKING:
    import multiprocessing.queues
    import multiprocessing.synchronize

WAIT = 30.0
"""Seconds any single blocking step of a peer may take."""

NOBODY = 65534

IPC_LAST = b"last words " * 6000
"""What ``ipc_conversation`` sends right before it exits."""


def _connect(name: str, **options: Any) -> npipes.Connection:
    return npipes.connect(name, timeout=WAIT, wait_for_listener=True, **options)


def _wait_for_close(conn: npipes.Connection) -> None:
    """Block until the test closes its end (or WAIT passes)."""
    with contextlib.suppress(npipes.ConnectionClosedError, npipes.PipeTimeoutError):
        conn.recv(timeout=WAIT)


# -- messages -------------------------------------------------------------------


def echo(name: str, crc: bool = False) -> None:
    """Send back every message until the other side closes the connection."""
    with _connect(name, crc=crc) as conn:
        try:
            while True:
                conn.send(conn.recv(timeout=WAIT), timeout=WAIT)
        except npipes.ConnectionClosedError as exc:
            if type(exc) is not npipes.ConnectionClosedError:
                raise


def peak_memory() -> int:
    """This process's peak resident memory in bytes (peak working set on Windows)."""
    if sys.platform == "win32":
        import win32api
        import win32process

        info = win32process.GetProcessMemoryInfo(win32api.GetCurrentProcess())
        return int(info["PeakWorkingSetSize"])
    if sys.platform.startswith("linux"):
        # VmHWM starts afresh at exec; ru_maxrss keeps the forked parent's peak.
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def receive_big(name: str) -> None:
    """Receive one message; send back its type, size, SHA-256 and this process's peak RSS."""
    with _connect(name) as conn:
        data = conn.recv(timeout=120)
        report = {
            "type": type(data).__name__,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        del data
        report["peak_bytes"] = peak_memory()
        conn.send(json.dumps(report), timeout=WAIT)
        _wait_for_close(conn)


def die_mid_message(
    name: str, announced: int, sent: int, ready: multiprocessing.synchronize.Event
) -> None:
    """Write a frame header announcing ``announced`` bytes and ``sent`` of them; await death."""
    conn = _connect(name)
    header, payload, _ = frame_parts(bytes(announced))
    # Raw bytes through the backend stream: Connection.send only writes whole frames.
    conn._stream.send([header, memoryview(payload)[:sent]], Deadline(WAIT))
    ready.set()
    # Read nothing: the test may have sent data that must stay unread when we die.
    time.sleep(WAIT)  # the test kills us long before this ends
    conn.close()


def dribble(name: str, announced: int, interval: float, count: int) -> None:
    """Write a frame header, then one payload byte every ``interval`` s (never the whole frame).

    The sleeps pace the writes (the behaviour under test); they synchronize nothing.
    """
    with _connect(name) as conn:
        header, _, _ = frame_parts(bytes(announced))
        stream = conn._stream
        stream.send([header], Deadline(WAIT))
        for _ in range(count):
            time.sleep(interval)
            try:
                stream.send([b"x"], Deadline(WAIT))
            except npipes.ConnectionClosedError:
                return  # the receiver gave up, as it should


def send_then_close(name: str, messages: list[bytes | str], rounds: int) -> None:
    """``rounds`` times: connect, send ``messages``, close cleanly."""
    for _ in range(rounds):
        with _connect(name) as conn:
            for message in messages:
                conn.send(message, timeout=WAIT)


def count_client(name: str, client: int, count: int) -> None:
    """Send ``count`` numbered messages with CRC, then ``end``; check the server's count."""
    with _connect(name, crc=True) as conn:
        for seq in range(count):
            conn.send(f"{client}:{seq}", timeout=WAIT)
        conn.send(f"{client}:end", timeout=WAIT)
        reply = conn.recv(timeout=WAIT)
        assert reply == f"{client}:{count}", reply


def ipc_conversation(name: str) -> None:
    """The IPC facade's other side; its last message goes out right before it exits."""
    ipc = IPC(name, timeout=WAIT)
    first = ipc.receive_message()
    assert type(first) is str, first
    assert first == "one", first
    second = ipc.receive_message()
    assert type(second) is bytes, second
    assert second == b"two", second
    assert ipc.message == b"two"
    ipc.send_message(b"three")
    ipc.send_message("four", crc=True)
    fifth = ipc.receive_message(crc=True)
    assert fifth == "five", fifth
    assert ipc.message == "five"
    ipc.send_message(IPC_LAST)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no close(), no finalizers: the message must already be on its way


# -- endpoints ------------------------------------------------------------------


def hold_listener(
    name: str,
    ready: multiprocessing.queues.Queue[str],
    stop: multiprocessing.synchronize.Event,
) -> None:
    """Listen on ``name``, put its address on ``ready``, keep listening until ``stop``."""
    with npipes.listen(name) as listener:
        ready.put(listener.address)
        stop.wait(WAIT)


def race_listen(
    name: str,
    ready: multiprocessing.queues.Queue[int],
    go: multiprocessing.synchronize.Event,
    results: multiprocessing.queues.Queue[tuple[int, str]],
    stop: multiprocessing.synchronize.Event,
) -> None:
    """Wait for ``go``, try to listen on ``name``, report the outcome, hold until ``stop``."""
    ready.put(os.getpid())
    go.wait(WAIT)
    try:
        listener = npipes.listen(name)
    except npipes.PipeInUseError:
        results.put((os.getpid(), "in use"))
        return
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put((os.getpid(), repr(exc)))
        return
    with listener:
        results.put((os.getpid(), "listening"))
        stop.wait(WAIT)


def serve_once(name: str, message: str) -> None:
    """Listen on ``name``, accept one client, send it ``message``, wait until it closes."""
    with npipes.listen(name) as listener, listener.accept(timeout=WAIT) as conn:
        conn.send(message, timeout=WAIT)
        _wait_for_close(conn)


def oversize_peer(name: str, limit: int) -> None:
    """Report the first message's type and size, then send ``limit + 1`` bytes."""
    with _connect(name) as conn:
        first = conn.recv(timeout=WAIT)
        conn.send(f"{type(first).__name__}:{len(first)}", timeout=WAIT)
        conn.send(b"y" * (limit + 1), timeout=WAIT)
        _wait_for_close(conn)


def report_peer(name: str) -> None:
    """Send back who this process is and who ``conn.peer`` says the other side is."""
    with _connect(name) as conn:
        peer = conn.peer
        conn.send(
            json.dumps({"pid": os.getpid(), "peer": [peer.pid, peer.uid, peer.gid]}),
            timeout=WAIT,
        )
        _wait_for_close(conn)


def as_nobody_client(name: str, results: multiprocessing.queues.Queue[tuple[Any, ...]]) -> None:
    """Become ``nobody``, connect to ``name``, report what the first ``recv`` gives."""
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    try:
        with npipes.connect(name, timeout=WAIT) as conn:
            start = time.monotonic()
            try:
                message = conn.recv(timeout=WAIT)
            except npipes.ConnectionClosedError as exc:
                results.put(("closed", type(exc).__name__, time.monotonic() - start))
                return
            conn.send(f"uid {os.getuid()} got {message}", timeout=WAIT)
            results.put(("message", message, conn.peer.uid))
            _wait_for_close(conn)
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(("error", repr(exc)))


# -- concurrency ----------------------------------------------------------------


def threaded_message(thread: int, seq: int) -> bytes:
    """Message ``seq`` of sender thread ``thread``: id, then a fill byte; small and large."""
    size = 300 * 1024 if seq % 2 else 10
    return struct.pack("<II", thread, seq) + bytes([(thread * 31 + seq) % 256]) * size


def check_threaded(name: str, threads: int, per_thread: int) -> None:
    """Receive ``threads * per_thread`` messages; send back what arrived out of place."""
    with _connect(name) as conn:
        following = [0] * threads
        errors: list[str] = []
        try:
            for _ in range(threads * per_thread):
                message = conn.recv(timeout=WAIT)
                assert isinstance(message, bytes)
                thread, seq = struct.unpack_from("<II", message)
                if thread >= threads or message != threaded_message(thread, seq):
                    errors.append(f"corrupt message ({len(message)} bytes)")
                    continue
                if seq != following[thread]:
                    errors.append(f"thread {thread}: got {seq}, expected {following[thread]}")
                following[thread] = seq + 1
        except npipes.NpipesError as exc:
            errors.append(repr(exc))
        with contextlib.suppress(npipes.ConnectionClosedError):
            conn.send(json.dumps({"next": following, "errors": errors[:10]}), timeout=WAIT)
            _wait_for_close(conn)
