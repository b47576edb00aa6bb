"""Peer programs for the asyncio and server tests: module-level functions run by ``helpers.start``.

Each runs in a fresh (spawned) Python process, most of them on an asyncio loop
of their own. A peer reports failure by raising (non-zero exit code, traceback
on stderr) or through a queue or the connection itself; every blocking call
has a timeout so a peer never hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import struct
import sys
from typing import TYPE_CHECKING, Any

import npipes
import npipes.aio
import peers

if TYPE_CHECKING:
    import multiprocessing.queues
    import multiprocessing.sharedctypes
    import multiprocessing.synchronize

WAIT = 30.0
"""Seconds any single blocking step of a peer may take."""


# -- messages ---------------------------------------------------------------------


def numbered(seq: int, size: int) -> bytes:
    """Message ``seq`` of a numbered stream: its number, then ``size`` fill bytes."""
    return struct.pack("<I", seq) + bytes([seq % 251]) * size


def seq_of(message: bytes | str) -> int:
    """The number of a :func:`numbered` message; ValueError if it is not whole and valid."""
    if not isinstance(message, bytes) or len(message) < 4:
        raise ValueError(f"not a numbered message: {message!r:.40}")
    (seq,) = struct.unpack_from("<I", message)
    if message != numbered(seq, len(message) - 4):
        raise ValueError(f"message {seq} ({len(message)} bytes) is torn or corrupt")
    return seq


def client_message(client: int, seq: int) -> bytes | str:
    """Message ``seq`` of client ``client``: text and binary, small and medium, alternating."""
    if seq % 2:
        return f"{client}:{seq}:" + "é" * (seq * 37 % 3000)
    return f"{client}:{seq}:".encode() + bytes([seq % 256]) * (seq * 101 % 20_000)


def parse_client_message(message: bytes | str) -> tuple[int, int]:
    """``(client, seq)`` of a :func:`client_message`; ValueError if it is not exactly that."""
    text = message if isinstance(message, str) else message[:24].decode("ascii", "replace")
    client, seq, _ = text.split(":", 2)
    if message != client_message(int(client), int(seq)):
        raise ValueError(f"message {client}:{seq} is corrupt or has the wrong type")
    return int(client), int(seq)


def peak_memory() -> int:
    """This process's peak resident memory in bytes (peak working set on Windows).

    On Linux this is ``VmHWM``, which starts afresh when the process image is
    exec'd; ``ru_maxrss`` (``peers.peak_memory``) also counts the forked
    parent's pages and would hide the child's own growth.
    """
    if sys.platform.startswith("linux"):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    return peers.peak_memory()


# -- helpers ----------------------------------------------------------------------


async def _connect(name: str, **options: Any) -> npipes.aio.Connection:
    return await npipes.aio.connect(name, timeout=WAIT, wait_for_listener=True, **options)


async def _wait_for_close(conn: npipes.aio.Connection) -> None:
    """Wait until the test closes its end (or WAIT passes)."""
    with contextlib.suppress(npipes.ConnectionClosedError, npipes.PipeTimeoutError):
        await conn.recv(timeout=WAIT)


async def _echo(conn: npipes.aio.Connection) -> None:
    async for message in conn:
        await conn.send(message, timeout=WAIT)


# -- echo, in every combination ---------------------------------------------------


def aio_echo_client(name: str, crc: bool) -> None:
    """Connect with ``npipes.aio``; send back every message until the other side closes."""

    async def main() -> None:
        async with await _connect(name, crc=crc) as conn:
            await _echo(conn)

    asyncio.run(main())


def aio_echo_server(name: str, crc: bool) -> None:
    """Listen with ``npipes.aio``, accept one client, echo until it closes."""

    async def main() -> None:
        async with (
            await npipes.aio.listen(name, crc=crc) as listener,
            await listener.accept(timeout=WAIT) as conn,
        ):
            await _echo(conn)

    asyncio.run(main())


def sync_echo_server(name: str, crc: bool) -> None:
    """Listen with the sync API, accept one client, echo until it closes."""
    with npipes.listen(name, crc=crc) as listener, listener.accept(timeout=WAIT) as conn:
        for message in conn:
            conn.send(message, timeout=WAIT)


def sync_echo_client(name: str, client: int, count: int) -> None:
    """Send ``count`` messages one at a time, each checked against its echo."""
    with npipes.connect(name, timeout=WAIT, wait_for_listener=True, crc=True) as conn:
        for seq in range(count):
            message = client_message(client, seq)
            conn.send(message, timeout=WAIT)
            echo = conn.recv(timeout=WAIT)
            assert type(echo) is type(message), (client, seq, type(echo))
            assert echo == message, (client, seq)


# -- many clients -----------------------------------------------------------------


def many_clients(name: str, clients: int, count: int) -> None:
    """``clients`` concurrent tasks, each sending ``count`` messages (CRC on) while a
    second task of its own checks the echoes, all of them, in order."""

    async def client(number: int) -> None:
        async with await _connect(name, crc=True) as conn:
            messages = [client_message(number, seq) for seq in range(count)]

            async def send_all() -> None:
                for message in messages:
                    await conn.send(message, timeout=WAIT)

            async def check_echoes() -> None:
                for seq, message in enumerate(messages):
                    echo = await conn.recv(timeout=WAIT)
                    assert type(echo) is type(message), (number, seq, type(echo))
                    assert echo == message, (number, seq)

            await asyncio.gather(send_all(), check_echoes())

    async def main() -> None:
        await asyncio.gather(*(client(number) for number in range(clients)))

    asyncio.run(main())


# -- streams and readers ---------------------------------------------------------


def send_numbered(name: str, sizes: list[int]) -> None:
    """Send one :func:`numbered` message per size (CRC on), then wait for the close."""
    with npipes.connect(name, timeout=WAIT, wait_for_listener=True, crc=True) as conn:
        for seq, size in enumerate(sizes):
            conn.send(numbered(seq, size), timeout=WAIT)
        peers._wait_for_close(conn)


def late_reader(
    name: str,
    go: multiprocessing.synchronize.Event,
    results: multiprocessing.queues.Queue[dict[str, Any]],
) -> None:
    """Connect (CRC on), read nothing until ``go``; then read numbered messages up to
    the text ``"end"`` (or the connection's end) and put what arrived on ``results``."""
    with npipes.connect(name, timeout=WAIT, wait_for_listener=True, crc=True) as conn:
        if not go.wait(WAIT):
            raise AssertionError("never told to read")
        seqs: list[int] = []
        bad: list[str] = []
        ending = "nothing"
        try:
            while True:
                message = conn.recv(timeout=WAIT)
                if message == "end":
                    ending = "end"
                    break
                try:
                    seqs.append(seq_of(message))
                except ValueError as exc:
                    bad.append(str(exc))
        except npipes.NpipesError as exc:
            ending = type(exc).__name__
        results.put({"seqs": seqs, "bad": bad[:10], "ending": ending})


def flood(
    name: str, count: int, size: int, completed: multiprocessing.sharedctypes.Synchronized[int]
) -> None:
    """Send ``count`` numbered messages of ``size`` bytes as fast as ``npipes.aio`` lets
    us, counting completed sends in ``completed``; then send this process's memory use."""

    async def main() -> None:
        async with await _connect(name) as conn:
            before = peak_memory()
            for seq in range(count):
                await conn.send(numbered(seq, size), timeout=WAIT * 2)
                completed.value = seq + 1
            await conn.send(json.dumps({"before": before, "peak": peak_memory()}), timeout=WAIT)
            await _wait_for_close(conn)

    asyncio.run(main())


def aio_receive_big(name: str) -> None:
    """Receive one message with ``npipes.aio``; send back its type, size, SHA-256 and
    this process's peak memory."""

    async def main() -> None:
        async with await _connect(name) as conn:
            data = await conn.recv(timeout=120)
            report: dict[str, Any] = {
                "type": type(data).__name__,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            del data
            report["peak_bytes"] = peak_memory()
            await conn.send(json.dumps(report), timeout=WAIT)
            await _wait_for_close(conn)

    asyncio.run(main())


# -- peers of a server -------------------------------------------------------------


def aio_report_peer(name: str) -> None:
    """Send back who this process is and who ``conn.peer`` says the other side is."""

    async def main() -> None:
        async with await _connect(name) as conn:
            peer = conn.peer
            report = {"pid": os.getpid(), "peer": [peer.pid, peer.uid, peer.gid, peer.sid]}
            await conn.send(json.dumps(report), timeout=WAIT)
            await _wait_for_close(conn)

    asyncio.run(main())


def server_clients(
    name: str,
    clients: int,
    go: multiprocessing.synchronize.Event | None,
    results: multiprocessing.queues.Queue[tuple[int, list[str]]],
) -> None:
    """``clients`` concurrent clients of a server. With ``go``: once it is set, each
    sends ``req<n>`` and reads the reply. Then each reads until the server closes it.
    Each puts ``(n, [what it read, ..., how it ended])`` on ``results``."""

    async def client(number: int) -> None:
        seen: list[str] = []
        try:
            async with await _connect(name) as conn:
                if go is not None:
                    if not await asyncio.to_thread(go.wait, WAIT):
                        raise AssertionError("never told to go")
                    await conn.send(f"req{number}", timeout=WAIT)
                while True:
                    seen.append(str(await conn.recv(timeout=WAIT)))
        except npipes.NpipesError as exc:
            seen.append(type(exc).__name__)
        results.put((number, seen))

    async def main() -> None:
        await asyncio.gather(*(client(number) for number in range(clients)))

    asyncio.run(main())
