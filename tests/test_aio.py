"""npipes.aio between real processes: sync and async peers, many clients, cancellation at
every await point, timeouts, backpressure, dying peers, the async server, errors and peer
info as in the sync API, docs/asyncio.md's example, and uvloop.

Every test drives its own loop with ``asyncio.run`` (no pytest plugin). Peers run in
spawned processes (tests/aiopeers.py, tests/peers.py); a test waits for one without
blocking its loop through ``asyncio.to_thread``.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import json
import logging
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

import aiopeers
import npipes
import npipes.aio as aio
import peers
from helpers import CTX, finish, start
from npipes import (
    ChecksumError,
    ConnectionClosedError,
    IncompleteMessageError,
    InvalidPipeNameError,
    MessageTooLargeError,
    PipeInUseError,
    PipeNotFoundError,
    PipeTimeoutError,
)

MiB = 1024 * 1024
WAIT = 30.0
DOC = Path(__file__).parent.parent / "docs" / "asyncio.md"
T = TypeVar("T")

# (sent, expected back): str stays str, any bytes-like comes back as bytes.
MESSAGES: list[tuple[bytes | bytearray | memoryview | str, bytes | str]] = [
    (b"", b""),
    (b"\xff", b"\xff"),
    (bytearray(b"\x00"), b"\x00"),
    (memoryview(b"view"), b"view"),
    (bytes(range(256)) * (MiB // 256), bytes(range(256)) * (MiB // 256)),
    ("", ""),
    ("x", "x"),
    ("é" * (MiB // 2), "é" * (MiB // 2)),  # 1 MiB of UTF-8
]


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, bounded like every other wait."""

    async def bounded() -> T:
        async with asyncio.timeout(100):
            return await main

    return asyncio.run(bounded())


async def finished(proc: Any) -> int:
    """``helpers.finish`` without blocking the loop (servers in this process keep serving)."""
    return await asyncio.to_thread(finish, proc)


async def loop_turn() -> None:
    """One pass of the event loop: a task created just before runs up to its first await.

    A scheduling step, not a timed wait.
    """
    await asyncio.sleep(0)


async def exchange_messages(conn: aio.Connection) -> None:
    for sent, expected in MESSAGES:
        await conn.send(sent, timeout=WAIT)
        got = await conn.recv(timeout=WAIT)
        assert type(got) is type(expected)
        assert len(got) == len(expected)
        assert got == expected


def exchange_messages_sync(conn: npipes.Connection) -> None:
    for sent, expected in MESSAGES:
        conn.send(sent, timeout=WAIT)
        got = conn.recv(timeout=WAIT)
        assert type(got) is type(expected)
        assert got == expected


# -- sync and async peers ------------------------------------------------------------


@pytest.mark.parametrize(
    "here",
    ["aio-listener", "aio-client", "sync-listener", "sync-client"],
)
def test_sync_and_async_peers_talk_both_ways_with_crc(pipe_name: str, here: str) -> None:
    """Each side is sync in one process and async in the other; messages go both ways."""
    if here == "aio-listener":

        async def main() -> None:
            async with await aio.listen(pipe_name, crc=True) as listener:
                proc = start(peers.echo, pipe_name, True)  # a sync client
                async with await listener.accept(timeout=WAIT) as conn:
                    assert conn.crc
                    await exchange_messages(conn)
            assert await finished(proc) == 0

        run(main())
    elif here == "aio-client":
        proc = start(aiopeers.sync_echo_server, pipe_name, True)

        async def client() -> None:
            conn = await aio.connect(pipe_name, crc=True, timeout=WAIT, wait_for_listener=True)
            async with conn:
                assert conn.peer.pid == proc.pid
                await exchange_messages(conn)

        run(client())
        assert finish(proc) == 0
    elif here == "sync-listener":
        with npipes.listen(pipe_name, crc=True) as listener:
            proc = start(aiopeers.aio_echo_client, pipe_name, True)
            with listener.accept(timeout=WAIT) as sync_conn:
                exchange_messages_sync(sync_conn)
        assert finish(proc) == 0
    else:
        proc = start(aiopeers.aio_echo_server, pipe_name, True)
        with npipes.connect(pipe_name, crc=True, timeout=WAIT, wait_for_listener=True) as c:
            exchange_messages_sync(c)
        assert finish(proc) == 0


# -- many clients ----------------------------------------------------------------------


def test_100_async_clients_100_messages_each_with_crc(pipe_name: str) -> None:
    clients, count = 100, 100
    seen: dict[int, list[int]] = {}
    errors: list[str] = []

    async def handler(conn: aio.Connection) -> None:
        mine: list[int] = []
        async for message in conn:
            try:
                client, seq = aiopeers.parse_client_message(message)
            except ValueError as exc:
                errors.append(str(exc))
                raise
            mine = seen.setdefault(client, mine)
            mine.append(seq)  # before the echo: the client ends after the last echo
            await conn.send(message, timeout=WAIT)

    async def main() -> int:
        async with await aio.serve(pipe_name, handler, crc=True) as server:
            proc = start(aiopeers.many_clients, pipe_name, clients, count)
            code = await finished(proc)
            assert server.listener.crc
        return code

    assert run(main()) == 0
    assert not errors
    assert sorted(seen) == list(range(clients))
    for seqs in seen.values():
        assert seqs == list(range(count))


# -- cancellation and timeouts ----------------------------------------------------------


def test_cancelled_accept_leaves_the_listener_serving(pipe_name: str) -> None:
    async def main() -> None:
        async with await aio.listen(pipe_name) as listener:
            for _ in range(3):
                task = asyncio.create_task(listener.accept())
                await loop_turn()
                assert not task.done()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            with pytest.raises(TimeoutError) as timed_out:
                async with asyncio.timeout(0.1):
                    await listener.accept()
            assert type(timed_out.value) is TimeoutError
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(listener.accept(), 0.1)
            began = time.monotonic()
            with pytest.raises(PipeTimeoutError) as info:
                await listener.accept(timeout=0.3)
            assert 0.25 <= time.monotonic() - began < 3
            assert isinstance(info.value, TimeoutError)
            assert info.value.timeout == 0.3
            assert info.value.name == pipe_name
            assert not listener.closed

            proc = start(peers.echo, pipe_name, False)
            async with await listener.accept(timeout=WAIT) as conn:
                assert conn.peer.pid == proc.pid
                await conn.send("after the cancellations", timeout=WAIT)
                assert await conn.recv(timeout=WAIT) == "after the cancellations"
        assert await finished(proc) == 0

    run(main())


def test_listener_aclose_ends_a_pending_accept(pipe_name: str) -> None:
    async def main() -> None:
        listener = await aio.listen(pipe_name)
        address = listener.address
        task = asyncio.create_task(listener.accept(timeout=WAIT))
        await loop_turn()
        await listener.aclose()
        with pytest.raises(ConnectionClosedError):
            await task
        assert listener.closed
        with pytest.raises(ConnectionClosedError):
            await listener.accept(timeout=1)
        await listener.aclose()  # idempotent
        if sys.platform != "win32":
            assert not os.path.lexists(address)  # noqa: ASYNC240 - a quick local stat
        with pytest.raises(PipeNotFoundError):
            await aio.connect(pipe_name, timeout=5)

    run(main())


def test_cancelled_recv_consumes_nothing(pipe_name: str) -> None:
    # Small and large (multi-read) messages; each recv is cancelled after 0 to 3 loop
    # turns: before anything arrived, mid-message, or just as one completed. Every
    # message must still arrive exactly once, whole and in order.
    sizes = [10, 100_000, 1_000_000, 3, 3 * MiB, 0, 70_000] * 12
    rng = random.Random(20240601)

    async def main() -> tuple[list[bytes | str], int]:
        got: list[bytes | str] = []
        cancelled = 0
        async with await aio.listen(pipe_name, crc=True) as listener:
            proc = start(aiopeers.send_numbered, pipe_name, sizes)
            async with await listener.accept(timeout=WAIT) as conn:
                while len(got) < len(sizes):
                    task = asyncio.create_task(conn.recv(timeout=WAIT))
                    for _ in range(rng.randrange(4)):
                        await loop_turn()
                    task.cancel()
                    try:
                        got.append(await task)
                    except asyncio.CancelledError:
                        cancelled += 1
                assert not conn.closed
        assert await finished(proc) == 0
        return got, cancelled

    got, cancelled = run(main())
    assert cancelled > len(sizes)  # most attempts were cancelled, many of them mid-message
    assert [aiopeers.seq_of(message) for message in got] == list(range(len(sizes)))
    assert [len(message) - 4 for message in got] == sizes


def test_recv_timeouts_keep_the_connection(pipe_name: str) -> None:
    async def main() -> None:
        async with await aio.listen(pipe_name) as listener:
            proc = start(peers.echo, pipe_name, False)
            async with await listener.accept(timeout=WAIT) as conn:
                began = time.monotonic()
                with pytest.raises(PipeTimeoutError) as info:
                    await conn.recv(timeout=0.3)
                assert 0.25 <= time.monotonic() - began < 3
                assert isinstance(info.value, TimeoutError)
                assert info.value.timeout == 0.3
                assert not info.value.partial
                assert (info.value.name, info.value.address) == (pipe_name, conn.address)
                assert not conn.closed

                with pytest.raises(TimeoutError) as timed_out:
                    async with asyncio.timeout(0.1):
                        await conn.recv()
                assert type(timed_out.value) is TimeoutError  # asyncio's own, not ours
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(conn.recv(), 0.1)

                task = asyncio.create_task(conn.recv())
                await loop_turn()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

                await conn.send("still here", timeout=WAIT)
                assert await conn.recv(timeout=WAIT) == "still here"
        assert await finished(proc) == 0

    run(main())


def test_recv_timeout_mid_message_keeps_the_connection(pipe_name: str) -> None:
    # One byte every 50 ms: the message never completes. Unlike the sync API (which
    # closes a connection a timeout left mid-frame), the frame keeps being decoded.
    async def main() -> None:
        async with await aio.listen(pipe_name) as listener:
            proc = start(peers.dribble, pipe_name, 1000, 0.05, 100)
            async with await listener.accept(timeout=WAIT) as conn:
                began = time.monotonic()
                with pytest.raises(PipeTimeoutError) as info:
                    await conn.recv(timeout=0.5)
                assert 0.45 <= time.monotonic() - began < 3
                assert not info.value.partial
                assert not conn.closed
        assert await finished(proc) == 0

    run(main())


def test_use_after_aclose_raises_connection_closed(pipe_name: str) -> None:
    async def main() -> None:
        async with await aio.listen(pipe_name) as listener:
            client = await aio.connect(pipe_name, timeout=WAIT)
            async with await listener.accept(timeout=WAIT) as server_side:
                await client.send("last", timeout=WAIT)
                await client.aclose()
                await client.aclose()  # idempotent
                assert client.closed
                with pytest.raises(ConnectionClosedError) as info:
                    await client.send("more", timeout=WAIT)
                assert info.value.name == pipe_name
                with pytest.raises(ConnectionClosedError):
                    await client.recv(timeout=WAIT)
                # What was sent before aclose is still delivered.
                assert [message async for message in server_side] == ["last"]

    run(main())


@pytest.mark.parametrize("how", ["aclose", "abort"])
def test_aclose_gives_up_flushing_to_a_peer_that_does_not_read(pipe_name: str, how: str) -> None:
    async def main() -> float:
        async with await aio.listen(pipe_name) as listener:
            with npipes.connect(pipe_name, timeout=WAIT) as reader:  # reads nothing yet
                async with await listener.accept(timeout=WAIT) as conn:
                    with pytest.raises(PipeTimeoutError):
                        await conn.send(bytes(8 * MiB), timeout=0.3)  # stays queued
                    began = time.monotonic()
                    if how == "aclose":
                        await conn.aclose(flush_timeout=0.3)
                    else:
                        conn.abort()  # at once, dropping what is queued
                    took = time.monotonic() - began
                    assert conn.closed
                    with pytest.raises(ConnectionClosedError):
                        await conn.send("more", timeout=WAIT)
                # Part of the frame arrived, then the end.
                with pytest.raises(IncompleteMessageError):
                    await asyncio.to_thread(reader.recv, WAIT)
        return took

    took = run(main())
    assert took < 3
    if how == "aclose":
        assert took >= 0.25


@pytest.mark.windows
def test_selector_loop_on_windows_is_refused_clearly(pipe_name: str) -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError, match="proactor"):
            await aio.connect(pipe_name, timeout=1)
        async with await aio.listen(pipe_name) as listener:
            with pytest.raises(RuntimeError, match="proactor"):
                await listener.accept(timeout=1)

    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        runner.run(main())


def test_cancelled_send_never_tears_a_message(pipe_name: str) -> None:
    # The reader does not read until `go`: sends soon block waiting for the transport to
    # drain. Cancelling one there (and timing one out) must leave whole messages only.
    go, results = CTX.Event(), CTX.Queue()

    async def main() -> tuple[int, bool, dict[str, Any]]:
        async with await aio.listen(pipe_name, crc=True) as listener:
            proc = start(aiopeers.late_reader, pipe_name, go, results)
            async with await listener.accept(timeout=WAIT) as conn:
                sent = 0
                cancelled_one = False
                while not cancelled_one:
                    assert sent < 64, "no send ever waited for the transport to drain"
                    task = asyncio.create_task(conn.send(aiopeers.numbered(sent, MiB)))
                    sent += 1
                    await loop_turn()
                    if task.done():
                        task.result()
                        continue
                    task.cancel()  # blocked in drain, its only await
                    with pytest.raises(asyncio.CancelledError):
                        await task
                    cancelled_one = True
                began = time.monotonic()
                with pytest.raises(PipeTimeoutError) as info:
                    await conn.send(aiopeers.numbered(sent, MiB), timeout=0.3)
                sent += 1
                assert 0.25 <= time.monotonic() - began < 3
                assert isinstance(info.value, TimeoutError)
                assert info.value.timeout == 0.3

                go.set()
                intact = not conn.closed
                if intact:
                    await conn.send("end", timeout=WAIT)
            report = await asyncio.to_thread(results.get, True, WAIT)
        assert await finished(proc) == 0
        return sent, intact, report

    sent, intact, report = run(main())
    assert report["bad"] == []
    if intact:
        # Everything queued went out, the cancelled and the timed-out message too.
        assert report["seqs"] == list(range(sent))
        assert report["ending"] == "end"
    else:  # closed: whole messages, in order, then a clean end
        assert report["seqs"] == list(range(len(report["seqs"])))
        assert report["ending"] == "ConnectionClosedError"


def test_cancelled_connect_leaks_nothing(pipe_name: str) -> None:
    async def main() -> None:
        task = asyncio.create_task(aio.connect(pipe_name, timeout=WAIT, wait_for_listener=True))
        await loop_turn()
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        began = time.monotonic()
        with pytest.raises(PipeTimeoutError) as info:
            await aio.connect(pipe_name, timeout=0.3, wait_for_listener=True)
        assert 0.25 <= time.monotonic() - began < 3
        assert isinstance(info.value, TimeoutError)

    run(main())


# -- backpressure -----------------------------------------------------------------------


def test_backpressure_holds_a_fast_sender_and_bounds_its_memory(pipe_name: str) -> None:
    # Our side reads nothing until the sender stalls. Its queue takes 64 decoded messages
    # (docs/asyncio.md), the OS a few more; the sender must wait there, far short of
    # `count`, with its memory flat.
    count, size = 128, MiB
    bound = 64 + 8
    completed = CTX.Value("i", 0)

    async def main() -> tuple[int, dict[str, int]]:
        async with await aio.listen(pipe_name) as listener:
            proc = start(aiopeers.flood, pipe_name, count, size, completed)
            async with await listener.accept(timeout=WAIT) as conn:
                stalled_at = await _wait_until_stalled(lambda: completed.value, count)
                for seq in range(count):
                    message = await conn.recv(timeout=WAIT)
                    assert aiopeers.seq_of(message) == seq
                    assert len(message) == size + 4
                memory = json.loads(await conn.recv(timeout=WAIT))
        assert await finished(proc) == 0
        return stalled_at, memory

    stalled_at, memory = run(main())
    assert 0 < stalled_at <= bound, f"{stalled_at} of {count} 1 MiB sends completed unread"
    assert memory["peak"] - memory["before"] <= 24 * MiB, memory


async def _wait_until_stalled(progress: Any, total: int) -> int:
    """Wait until ``progress()`` has not moved for 0.5 s; return it (``total`` if it got
    there). Measures how far the sender gets; the reader then starts."""
    last, quiet_since = -1, time.monotonic()
    while True:
        now = progress()
        if now >= total:
            return now
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif now > 0 and time.monotonic() - quiet_since >= 0.5:
            return now
        await asyncio.sleep(0.02)  # samples progress; orders nothing


# -- a dying peer ----------------------------------------------------------------------


@pytest.mark.parametrize("unread", [False, True], ids=["clean", "unread-data-at-peer"])
@pytest.mark.parametrize("how", ["recv", "async-for"])
def test_peer_killed_mid_message_is_incomplete(pipe_name: str, unread: bool, how: str) -> None:
    ready = CTX.Event()

    async def main() -> float:
        async with await aio.listen(pipe_name) as listener:
            proc = start(peers.die_mid_message, pipe_name, 10 * MiB, 1 * MiB, ready)
            async with await listener.accept(timeout=WAIT) as conn:
                if unread:
                    await conn.send("unread", timeout=WAIT)
                assert await asyncio.to_thread(ready.wait, WAIT), "the peer never wrote"

                async def receive() -> None:
                    if how == "recv":
                        await conn.recv(timeout=WAIT)  # a hang ends as PipeTimeoutError
                    else:
                        async for message in conn:
                            raise AssertionError(f"got {message!r:.40}")

                task = asyncio.create_task(receive())
                await loop_turn()
                killed = time.monotonic()
                proc.kill()  # SIGKILL on POSIX, TerminateProcess on Windows
                with pytest.raises(IncompleteMessageError) as info:
                    await task
                noticed = time.monotonic() - killed
                assert isinstance(info.value, ConnectionClosedError)
                with pytest.raises(ConnectionClosedError):
                    await conn.recv(timeout=WAIT)
                with pytest.raises(ConnectionClosedError):
                    await conn.send("anyone?", timeout=WAIT)
        assert await finished(proc) != 0
        return noticed

    assert run(main()) < 5


# -- async for ------------------------------------------------------------------------


def test_async_for_ends_when_the_peer_closes(pipe_name: str) -> None:
    messages: list[bytes | str] = ["a", b"b", "c" * 70_000, b"d" * (2 * MiB)]

    async def main() -> None:
        async with await aio.listen(pipe_name) as listener:
            proc = start(peers.send_then_close, pipe_name, messages, 2)
            async with await listener.accept(timeout=WAIT) as conn:
                assert [message async for message in conn] == messages
                assert [message async for message in conn] == []  # stays ended
            async with await listener.accept(timeout=WAIT) as conn:
                assert [await conn.recv(timeout=WAIT) for _ in messages] == messages
                with pytest.raises(ConnectionClosedError) as info:
                    await conn.recv(timeout=WAIT)
                assert type(info.value) is ConnectionClosedError
                with pytest.raises(ConnectionClosedError):
                    await conn.send("too late", timeout=WAIT)
        assert await finished(proc) == 0

    run(main())


def test_closed_is_true_once_the_peer_has_closed(pipe_name: str) -> None:
    async def main() -> bool:
        async with await aio.listen(pipe_name) as listener:
            proc = start(peers.send_then_close, pipe_name, ["only"], 1)
            async with await listener.accept(timeout=WAIT) as conn:
                assert [message async for message in conn] == ["only"]
                closed = conn.closed  # the sync Connection says True here
        assert await finished(proc) == 0
        return closed

    assert run(main())


# -- the async server ------------------------------------------------------------------


def test_serve_aclose_lets_running_handlers_finish(pipe_name: str) -> None:
    clients = 3
    go, results = CTX.Event(), CTX.Queue()
    finished_handlers: list[str] = []

    async def main() -> None:
        everyone_in = asyncio.Event()
        entered = 0

        async def handler(conn: aio.Connection) -> None:
            nonlocal entered
            entered += 1
            if entered == clients:
                everyone_in.set()
            request = await conn.recv(timeout=WAIT)
            await conn.send(f"re:{request}", timeout=WAIT)
            finished_handlers.append(str(request))

        server = await aio.serve(pipe_name, handler)
        proc = start(aiopeers.server_clients, pipe_name, clients, go, results)
        async with asyncio.timeout(WAIT):
            await everyone_in.wait()
        closing = asyncio.create_task(server.aclose(timeout=WAIT))
        done, _ = await asyncio.wait({closing}, timeout=0.2)
        assert not done, "aclose returned while handlers were still running"
        assert server.listener.closed  # no new clients while it waits
        go.set()  # now the clients send, and their handlers answer and return
        began = time.monotonic()
        async with asyncio.timeout(WAIT):
            await closing
        assert time.monotonic() - began < WAIT / 2
        assert await finished(proc) == 0

    run(main())
    assert sorted(finished_handlers) == [f"req{n}" for n in range(clients)]
    outcomes = dict(results.get(timeout=WAIT) for _ in range(clients))
    assert outcomes == {n: [f"re:req{n}", "ConnectionClosedError"] for n in range(clients)}


def test_serve_aclose_cancels_handlers_after_its_timeout(pipe_name: str) -> None:
    clients = 3
    results = CTX.Queue()
    cancelled: list[int] = []

    async def main() -> float:
        everyone_in = asyncio.Event()
        entered = 0

        async def handler(conn: aio.Connection) -> None:
            nonlocal entered
            entered += 1
            if entered == clients:
                everyone_in.set()
            try:
                await conn.recv()  # the clients never send
            except asyncio.CancelledError:
                cancelled.append(1)
                raise

        server = await aio.serve(pipe_name, handler)
        proc = start(aiopeers.server_clients, pipe_name, clients, None, results)
        async with asyncio.timeout(WAIT):
            await everyone_in.wait()
        began = time.monotonic()
        await server.aclose(timeout=0.3)
        took = time.monotonic() - began
        assert server.active == 0
        await server.aclose()  # idempotent
        assert await finished(proc) == 0
        return took

    took = run(main())
    assert 0.25 <= took < 5
    assert len(cancelled) == clients
    outcomes = dict(results.get(timeout=WAIT) for _ in range(clients))
    assert outcomes == {n: ["ConnectionClosedError"] for n in range(clients)}


def test_serve_aclose_is_bounded_when_a_client_stops_reading(pipe_name: str) -> None:
    async def main() -> bool:
        sending = asyncio.Event()

        async def handler(conn: aio.Connection) -> None:
            sending.set()
            while True:
                await conn.send(bytes(MiB))

        server = await aio.serve(pipe_name, handler)
        client = npipes.connect(pipe_name, timeout=WAIT)  # reads nothing
        closing = None
        try:
            async with asyncio.timeout(WAIT):
                await sending.wait()
            closing = asyncio.create_task(server.aclose(timeout=0.3))
            done, _ = await asyncio.wait({closing}, timeout=1.5)
            return bool(done)
        finally:
            client.close()  # unblocks the flush, so aclose can end either way
            async with asyncio.timeout(WAIT):
                if closing is not None:
                    await closing
                await server.aclose()

    assert run(main()), "aclose(timeout=0.3) still running after 1.5 s"


def test_serve_logs_handler_errors_and_keeps_serving(
    pipe_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(conn: aio.Connection) -> None:
        message = await conn.recv(timeout=WAIT)
        if message == "fail":
            raise ValueError("handler bug")
        await conn.send(f"ok:{message}", timeout=WAIT)

    async def main() -> None:
        # One handler at a time: the second client is served only after the first
        # handler's error has been logged.
        async with await aio.serve(pipe_name, handler, max_connections=1) as server:
            async with await aio.connect(pipe_name, timeout=WAIT) as first:
                await first.send("fail", timeout=WAIT)
                with pytest.raises(ConnectionClosedError):
                    await first.recv(timeout=WAIT)
            async with await aio.connect(pipe_name, timeout=WAIT) as second:
                await second.send("hello", timeout=WAIT)
                assert await second.recv(timeout=WAIT) == "ok:hello"
            assert not server.listener.closed

    with caplog.at_level(logging.ERROR, logger="npipes.server"):
        run(main())
    failures = [r for r in caplog.records if r.name == "npipes.server"]
    assert len(failures) == 1
    assert failures[0].levelno == logging.ERROR
    assert failures[0].exc_info is not None
    assert failures[0].exc_info[0] is ValueError


def test_serve_does_not_log_a_client_leaving(
    pipe_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(conn: aio.Connection) -> None:
        while True:  # no async for: recv raises ConnectionClosedError when the client leaves
            await conn.send(await conn.recv(timeout=WAIT), timeout=WAIT)

    async def main() -> None:
        async with await aio.serve(pipe_name, handler, max_connections=1):
            for _ in range(2):  # the second is served after the first handler ended
                async with await aio.connect(pipe_name, timeout=WAIT) as client:
                    await client.send("ping", timeout=WAIT)
                    assert await client.recv(timeout=WAIT) == "ping"

    with caplog.at_level(logging.ERROR, logger="npipes.server"):
        run(main())
    assert [r.getMessage() for r in caplog.records if r.name == "npipes.server"] == []


def test_serve_max_connections_bounds_running_handlers(pipe_name: str) -> None:
    async def main() -> int:
        running = peak = 0
        entered: asyncio.Queue[str] = asyncio.Queue()

        async def handler(conn: aio.Connection) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            try:
                first = str(await conn.recv(timeout=WAIT))
                entered.put_nowait(first)
                async for message in conn:
                    if message == "bye":
                        return
                    await conn.send(f"{first}:{message}", timeout=WAIT)
            finally:
                running -= 1

        async with await aio.serve(pipe_name, handler, max_connections=2):
            clients = []
            for n in range(3):
                client = await aio.connect(pipe_name, timeout=WAIT)  # the OS queues the third
                clients.append(client)
                await client.send(f"c{n}", timeout=WAIT)
            try:
                async with asyncio.timeout(WAIT):
                    assert {await entered.get(), await entered.get()} == {"c0", "c1"}
                # A round trip through a running handler: the loop has had every chance
                # to start the third one, and has not.
                await clients[0].send("ping", timeout=WAIT)
                assert await clients[0].recv(timeout=WAIT) == "c0:ping"
                assert entered.empty()
                assert (running, peak) == (2, 2)

                await clients[0].send("bye", timeout=WAIT)  # frees a slot
                async with asyncio.timeout(WAIT):
                    assert await entered.get() == "c2"
                await clients[2].send("ping", timeout=WAIT)
                assert await clients[2].recv(timeout=WAIT) == "c2:ping"
            finally:
                for client in clients:
                    await client.aclose()
        return peak

    assert run(main()) == 2


def test_serve_forever_ends_with_the_server(pipe_name: str) -> None:
    async def handler(conn: aio.Connection) -> None:
        async for message in conn:
            await conn.send(message, timeout=WAIT)

    async def main() -> None:
        server = await aio.serve(pipe_name, handler)
        forever = asyncio.create_task(server.serve_forever())
        async with await aio.connect(pipe_name, timeout=WAIT) as client:
            await client.send("x", timeout=WAIT)
            assert await client.recv(timeout=WAIT) == "x"
        await loop_turn()
        assert not forever.done()
        await server.aclose(timeout=WAIT)
        async with asyncio.timeout(WAIT):
            await forever  # returns once the server is closed

        # Cancelling serve_forever closes the server.
        server = await aio.serve(pipe_name, handler)
        forever = asyncio.create_task(server.serve_forever())
        await loop_turn()
        forever.cancel()
        with pytest.raises(asyncio.CancelledError):
            await forever
        assert server.listener.closed
        with pytest.raises(PipeNotFoundError):
            await aio.connect(pipe_name, timeout=5)

    run(main())


def test_serve_rejects_max_connections_below_one(pipe_name: str) -> None:
    async def handler(conn: aio.Connection) -> None:
        pass

    async def main() -> None:
        with pytest.raises(ValueError, match="max_connections"):
            await aio.serve(pipe_name, handler, max_connections=0)

    run(main())


def test_client_that_leaves_before_it_is_accepted(pipe_name: str) -> None:
    async def main() -> list[bytes | str]:
        delivered: list[bytes | str] = []
        first_in, release, both_delivered = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def handler(conn: aio.Connection) -> None:
            if not first_in.is_set():
                first_in.set()
                await release.wait()
                return
            delivered.extend([message async for message in conn])
            if len(delivered) >= 2:
                both_delivered.set()

        async with await aio.serve(pipe_name, handler, max_connections=1):
            busy = await aio.connect(pipe_name, timeout=WAIT)
            async with asyncio.timeout(WAIT):
                await first_in.wait()
            async with await aio.connect(pipe_name, timeout=WAIT) as early:
                await early.send("sent before accept", timeout=WAIT)
            release.set()  # only now is the early (and gone) client accepted
            async with await aio.connect(pipe_name, timeout=1, wait_for_listener=True) as c:
                await c.send("later", timeout=WAIT)
            await busy.aclose()
            async with asyncio.timeout(WAIT):
                await both_delivered.wait()
        return delivered

    assert run(main()) == ["sent before accept", "later"]


# -- memory ----------------------------------------------------------------------------


@pytest.mark.slow
def test_64_mib_message_bounded_memory_in_async_receiver(pipe_name: str) -> None:
    size = 64 * MiB
    with npipes.listen(pipe_name) as listener:
        proc = start(aiopeers.aio_receive_big, pipe_name)
        data = bytes(range(256)) * (size // 256)
        digest = hashlib.sha256(data).hexdigest()
        with listener.accept(timeout=WAIT) as conn:
            conn.send(data, timeout=120)
            del data
            report = json.loads(conn.recv(timeout=120))
    assert finish(proc) == 0
    assert report["type"] == "bytes"
    assert report["size"] == size
    assert report["sha256"] == digest
    assert report["peak_bytes"] <= size + 64 * MiB, report["peak_bytes"] / MiB


# -- the same as the sync API --------------------------------------------------------------


def test_address_and_peer_info_match_the_sync_api(pipe_name: str) -> None:
    # What the sync API says, for a client and a listener of this same user.
    with (
        npipes.listen(pipe_name) as sync_listener,
        npipes.connect(pipe_name, timeout=WAIT) as sync_client,
        sync_listener.accept(timeout=WAIT) as sync_server_side,
    ):
        sync_address = sync_listener.address
        sync_client_view, sync_server_view = sync_client.peer, sync_server_side.peer

    async def main() -> tuple[dict[str, Any], npipes.PeerInfo, int]:
        async with await aio.listen(pipe_name) as listener:
            assert listener.address == sync_address
            assert listener.name == pipe_name
            if sys.platform != "win32":
                assert os.path.exists(listener.address)  # noqa: ASYNC240 - a quick local stat
            proc = start(aiopeers.aio_report_peer, pipe_name)
            async with await listener.accept(timeout=WAIT) as conn:
                assert conn.address == sync_address
                assert conn.name == pipe_name
                report = json.loads(await conn.recv(timeout=WAIT))
                mine = conn.peer
        if sys.platform != "win32":
            assert not os.path.lexists(sync_address)  # noqa: ASYNC240 - a quick local stat
        assert await finished(proc) == 0
        return report, mine, proc.pid

    report, mine, their_pid = run(main())
    assert isinstance(mine, npipes.PeerInfo)
    assert report["pid"] == their_pid == mine.pid
    pid, uid, gid, sid = report["peer"]
    assert pid == os.getpid()
    # Apart from the pids, each side sees what the sync API sees from the same side.
    assert (mine.uid, mine.gid, mine.sid) == (
        sync_server_view.uid,
        sync_server_view.gid,
        sync_server_view.sid,
    )
    assert (uid, gid, sid) == (sync_client_view.uid, sync_client_view.gid, sync_client_view.sid)
    if sys.platform == "win32":
        assert mine.sid is not None
        assert sid is not None
    else:
        assert (mine.uid, mine.gid) == (os.getuid(), os.getgid())
        assert sid is None


def test_errors_match_the_sync_api(pipe_name: str) -> None:
    ready, stop = CTX.Queue(), CTX.Event()

    async def main() -> None:
        began = time.monotonic()
        with pytest.raises(PipeNotFoundError) as not_found:
            await aio.connect(pipe_name, timeout=WAIT)
        assert time.monotonic() - began < 2
        assert isinstance(not_found.value, FileNotFoundError)
        assert not_found.value.name == pipe_name

        with pytest.raises(PipeTimeoutError):
            await aio.connect(pipe_name, timeout=0.2, wait_for_listener=True)

        async with await aio.listen(pipe_name):
            with pytest.raises(PipeInUseError) as in_use:
                await aio.listen(pipe_name)
            assert isinstance(in_use.value, FileExistsError)
            assert in_use.value.name == pipe_name
            with pytest.raises(PipeInUseError):
                npipes.listen(pipe_name)
        with npipes.listen(pipe_name), pytest.raises(PipeInUseError):
            await aio.listen(pipe_name)

        other = f"{pipe_name}-other"
        proc = start(peers.hold_listener, other, ready, stop)
        try:
            await asyncio.to_thread(ready.get, True, WAIT)
            with pytest.raises(PipeInUseError):
                await aio.listen(other)
            async with await aio.connect(other, timeout=5):
                pass  # the first listener still owns it
        finally:
            stop.set()
        assert await finished(proc) == 0

        for bad in ["", "../escape", "a" * 300]:
            with pytest.raises(InvalidPipeNameError):
                await aio.listen(bad)
            with pytest.raises(InvalidPipeNameError):
                await aio.connect(bad, timeout=1)
        with pytest.raises(ValueError, match="max_message_size"):
            await aio.connect(pipe_name, max_message_size=-1)

    run(main())


def test_connect_waits_for_a_listener_that_comes_later(pipe_name: str) -> None:
    async def main() -> None:
        connecting = asyncio.create_task(
            aio.connect(pipe_name, timeout=WAIT, wait_for_listener=True)
        )
        await loop_turn()
        assert not connecting.done()
        proc = start(peers.serve_once, pipe_name, "late but here")
        async with await connecting as conn:
            assert await conn.recv(timeout=WAIT) == "late but here"
            assert conn.peer.pid == proc.pid
        assert await finished(proc) == 0

    run(main())


def test_oversize_and_checksum_errors_match_the_sync_api(pipe_name: str) -> None:
    limit = 100

    async def main() -> None:
        async with await aio.listen(pipe_name, max_message_size=limit) as listener:
            proc = start(peers.oversize_peer, pipe_name, limit)
            async with await listener.accept(timeout=WAIT) as conn:
                with pytest.raises(MessageTooLargeError) as info:
                    await conn.send(b"x" * (limit + 1), timeout=WAIT)
                assert (info.value.size, info.value.limit) == (limit + 1, limit)
                assert not conn.closed
                await conn.send(b"x" * limit, timeout=WAIT)
                # The peer's first message is the one that fit: nothing else went out.
                assert await conn.recv(timeout=WAIT) == f"bytes:{limit}"
                with pytest.raises(MessageTooLargeError) as info:
                    await conn.recv(timeout=WAIT)
                assert (info.value.size, info.value.limit) == (limit + 1, limit)
                with pytest.raises(ConnectionClosedError):
                    await conn.recv(timeout=WAIT)
        assert await finished(proc) == 0

        # A CRC-requiring side drops a message without one and stays usable.
        async with await aio.listen(pipe_name, crc=True) as listener:
            proc = start(peers.echo, pipe_name, False)  # echoes without CRC
            async with await listener.accept(timeout=WAIT) as conn:
                await conn.send("plain", timeout=WAIT)
                with pytest.raises(ChecksumError):
                    await conn.recv(timeout=WAIT)
                assert not conn.closed
                await conn.send("allowed", timeout=WAIT)
                assert await conn.recv(timeout=WAIT, crc=False) == "allowed"
        assert await finished(proc) == 0

    run(main())


# -- docs/asyncio.md ------------------------------------------------------------------------


def _python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.M | re.S)


def test_docs_example_runs(pipe_name: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(_python_blocks()[0], encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        env=dict(os.environ, NPIPES_EXAMPLE_PIPE=pipe_name),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "client 0 got: echo: hello from 0",
        "client 1 got: echo: hello from 1",
        "client 2 got: echo: hello from 2",
        "server handled 3 clients",
    ]


def test_docs_code_blocks_are_valid_python() -> None:
    blocks = _python_blocks()
    assert len(blocks) >= 3
    for block in blocks:
        compile(block, str(DOC), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


# -- uvloop ----------------------------------------------------------------------------------


@pytest.mark.posix
def test_uvloop_round_trip_server_and_cancellation(pipe_name: str) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        async with await aio.listen(pipe_name, crc=True) as listener:
            proc = start(peers.echo, pipe_name, True)  # a sync peer in another process
            async with await listener.accept(timeout=WAIT) as conn:
                assert conn.peer.pid == proc.pid
                await exchange_messages(conn)
                task = asyncio.create_task(conn.recv())
                await loop_turn()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                await conn.send("after cancel", timeout=WAIT)
                assert await conn.recv(timeout=WAIT) == "after cancel"
        assert await finished(proc) == 0

        async def handler(conn: aio.Connection) -> None:
            async for message in conn:
                await conn.send(message, timeout=WAIT)

        async with (
            await aio.serve(f"{pipe_name}-srv", handler) as server,
            await aio.connect(f"{pipe_name}-srv", timeout=WAIT) as client,
        ):
            await client.send(b"via uvloop", timeout=WAIT)
            assert await client.recv(timeout=WAIT) == b"via uvloop"
            assert server.active == 1

    uvloop.run(main())
