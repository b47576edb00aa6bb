"""Issue 13: the asyncio front end's fast paths keep every rule of the slow ones.

``recv``/``recv_many``/``recv_into`` take a message that is already here without an
await, ``send``/``send_many`` skip the drain wait while the transport's buffer is below
its high-water mark, reads with little room in the core's buffer go through a scratch
buffer, and frames up to 256 KiB go out as one write. Each test checks one of those
paths on real sockets (a peer process where the bytes' arrival pattern matters): taken
when it should be, and the same results, errors, cancellation and timeout behaviour.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import pytest

import aiopeers
import npipes
import npipes.aio as aio
from helpers import CTX, finish, start
from npipes import BufferTooSmallError, ChecksumError, ConnectionClosedError, PipeTimeoutError
from npipes._frame import encode_frame

WAIT = 30.0
KiB = 1024
T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(100):
            return await main

    return asyncio.run(bounded())


def without_await(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end in one step; fail if it would suspend (the fast path)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        value: T = stop.value
        return value
    coro.close()
    raise AssertionError("the call suspended: the fast path was not taken")


@contextlib.asynccontextmanager
async def pair(name: str, **options: Any) -> AsyncIterator[tuple[aio.Connection, aio.Connection]]:
    listener = await aio.listen(name, **options)
    accepting = asyncio.ensure_future(listener.accept(timeout=WAIT))
    client = await aio.connect(name, timeout=WAIT, **options)
    server = await accepting
    try:
        yield client, server
    finally:
        client.abort()
        server.abort()
        await listener.aclose()


async def queued(conn: aio.Connection, count: int) -> None:
    """Wait until ``count`` messages are decoded and waiting (bounded)."""
    async with asyncio.timeout(WAIT):
        while len(conn._core._ready) < count:
            conn._core.decode_available()
            await asyncio.sleep(0.005)


async def until(predicate: Callable[[], bool]) -> None:
    """Wait until ``predicate()`` (bounded)."""
    async with asyncio.timeout(WAIT):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


def test_recv_takes_a_queued_message_without_awaiting(pipe_name: str) -> None:
    async def main() -> None:
        async with pair(pipe_name) as (client, server):
            await client.send_many([b"a", "b", b"c" * 100, b"d", b"e", b"f"])
            await queued(server, 6)
            assert without_await(server.recv()) == b"a"
            assert without_await(server.recv(timeout=WAIT)) == "b"
            # An expired-on-arrival timeout still returns what is already here.
            assert without_await(server.recv(timeout=0)) == b"c" * 100
            assert without_await(server.recv_many(2)) == [b"d", b"e"]
            buffer = bytearray(8)
            assert without_await(server.recv_into(buffer, timeout=0)) == 1
            assert buffer[:1] == b"f"
            # Nothing left: the call waits, and its timeout consumes nothing.
            with pytest.raises(PipeTimeoutError):
                await server.recv(timeout=0.05)
            await client.send(b"g")
            assert await server.recv(timeout=WAIT) == b"g"

    run(main())


def test_recv_with_a_bad_timeout_fails_before_taking_a_message(pipe_name: str) -> None:
    async def main() -> None:
        async with pair(pipe_name) as (client, server):
            await client.send(b"kept")
            await queued(server, 1)
            with pytest.raises(ValueError, match="timeout"):
                await server.recv(timeout=-1)
            with pytest.raises(TypeError):
                await server.recv_into(bytearray(8), timeout="1")  # type: ignore[arg-type]
            assert without_await(server.recv()) == b"kept"

    run(main())


def test_queued_errors_come_from_the_fast_path_in_stream_order(pipe_name: str) -> None:
    good = encode_frame(b"good", crc=True)
    bad = bytearray(encode_frame(b"bad", crc=True))
    bad[-1] ^= 0xFF

    async def main() -> None:
        async with pair(pipe_name, crc=True) as (client, server):
            client._transport.write(good + bytes(bad) + good)  # any bytes a peer may send
            await queued(server, 3)
            assert without_await(server.recv()) == b"good"
            with pytest.raises(ChecksumError):
                without_await(server.recv())
            assert without_await(server.recv()) == b"good"  # the connection stays usable

    run(main())


def test_recv_into_fast_path_too_small_consumes_nothing(pipe_name: str) -> None:
    async def main() -> None:
        async with pair(pipe_name) as (client, server):
            await client.send(b"x" * 100)
            await queued(server, 1)
            with pytest.raises(BufferTooSmallError):
                without_await(server.recv_into(bytearray(10)))
            buffer = bytearray(200)
            assert without_await(server.recv_into(buffer)) == 100
            assert buffer[:100] == b"x" * 100

    run(main())


def test_cancelled_recv_at_its_await_consumes_nothing(pipe_name: str) -> None:
    async def main() -> None:
        async with pair(pipe_name) as (client, server):
            for call in (
                lambda: server.recv(),
                lambda: server.recv(timeout=WAIT),
                lambda: server.recv_many(10),
                lambda: server.recv_into(bytearray(64)),
            ):
                task = asyncio.ensure_future(call())
                await asyncio.sleep(0.01)  # it found nothing and waits
                assert not task.done()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            await client.send_many([b"1", b"2"])
            assert await server.recv(timeout=WAIT) == b"1"
            assert await server.recv(timeout=WAIT) == b"2"

    run(main())


def test_send_returns_without_awaiting_below_the_high_water_mark(pipe_name: str) -> None:
    async def main() -> None:
        async with pair(pipe_name) as (client, server):
            assert without_await(client.send(b"one")) is None
            assert without_await(client.send("two", timeout=WAIT)) is None
            assert without_await(client.send_many([b"3", bytearray(b"4")])) == 2
            assert await server.recv_many(4, timeout=WAIT) in (
                [b"one", "two", b"3", b"4"],
                [b"one"],
            )

    run(main())


async def _send_until_it_fails(conn: aio.Connection) -> None:
    for _ in range(1000):  # the first sends after the peer left may still be buffered
        await conn.send(b"x")
        await asyncio.sleep(0.001)


def test_send_still_checks_everything_on_the_fast_path(pipe_name: str) -> None:
    async def main() -> None:
        async with pair(pipe_name, max_message_size=100) as (client, server):
            with pytest.raises(TypeError):
                await client.send(12)  # type: ignore[arg-type]
            with pytest.raises(npipes.MessageTooLargeError):
                await client.send(b"x" * 101)
            with pytest.raises(TypeError):  # checked before anything is written
                await client.send_many([b"ok", 12])  # type: ignore[list-item]
            with pytest.raises(ValueError, match="timeout"):
                await client.send(b"x", timeout=-1)
            await client.send(b"last")
            assert await server.recv(timeout=WAIT) == b"last"  # nothing before it went out
            server.abort()
            with pytest.raises(ConnectionClosedError):
                await _send_until_it_fails(client)

    run(main())


def test_send_waits_when_the_peer_stops_reading_and_a_cancel_keeps_frames_whole(
    pipe_name: str,
) -> None:
    go = CTX.Event()
    results = CTX.Queue()

    async def main() -> None:
        listener = await aio.listen(pipe_name, crc=True)
        peer = start(aiopeers.late_reader, pipe_name, go, results)
        try:
            conn = await listener.accept(timeout=WAIT)
            seq = 0
            while not conn._protocol._write_paused:  # sends return at once until then
                assert seq < 10_000, "the transport never paused writing"
                sending = conn.send(aiopeers.numbered(seq, 64 * KiB))
                seq += 1  # queued whole, whether the call returns or waits for the drain
                try:
                    sending.send(None)
                except StopIteration:
                    continue
                assert conn._protocol._write_paused  # only the send that crossed the mark waits
                sending.close()
            # Above the high-water mark: send waits; a cancel or a timeout leaves it queued.
            task = asyncio.ensure_future(conn.send(aiopeers.numbered(seq, 100)))
            seq += 1
            await asyncio.sleep(0.05)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            with pytest.raises(PipeTimeoutError):
                await conn.send(aiopeers.numbered(seq, 100), timeout=0.05)
            seq += 1
            go.set()
            await conn.send("end", timeout=WAIT)
            result = await asyncio.to_thread(results.get, timeout=WAIT)
            assert result == {"seqs": list(range(seq)), "bad": [], "ending": "end"}
            await conn.aclose()
        finally:
            go.set()
            assert await asyncio.to_thread(finish, peer) == 0
            await listener.aclose()

    run(main())


SIZES = [0, 64, 16 * KiB - 1, 64 * KiB - 16, 64 * KiB, 64 * KiB + 16, 256 * KiB - 16, 256 * KiB]
SIZES += [256 * KiB + 1, 1024 * KiB, 7, 64 * KiB + 3, 100]


def test_messages_of_every_size_through_small_tail_reads(pipe_name: str) -> None:
    """A sync peer sends a burst whose frames end in small tails (the scratch reads);
    every message arrives whole and in order, through every receive call."""
    sizes = SIZES * 4

    async def main() -> None:
        listener = await aio.listen(pipe_name, crc=True)
        peer = start(aiopeers.send_numbered, pipe_name, sizes)
        try:
            conn = await listener.accept(timeout=WAIT)
            buffer = bytearray(2 * 1024 * KiB)
            seq = 0
            while seq < len(sizes):
                mode = seq % 3
                if mode == 0:
                    got = [await conn.recv(timeout=WAIT)]
                elif mode == 1:
                    got = await conn.recv_many(5, timeout=WAIT)
                else:
                    size = await conn.recv_into(buffer, timeout=WAIT)
                    got = [bytes(buffer[:size])]
                for message in got:
                    assert message == aiopeers.numbered(seq, sizes[seq]), seq
                    seq += 1
            await conn.aclose()
        finally:
            assert await asyncio.to_thread(finish, peer) == 0
            await listener.aclose()

    run(main())


def test_frames_of_every_size_sent_whole_to_a_sync_peer(pipe_name: str) -> None:
    """Frames up to the join limit go out as one write, larger ones in parts: a sync
    echo peer sends every one back intact (str as str, any bytes-like as bytes)."""
    messages: list[Any] = [bytes([n % 251]) * n for n in SIZES]
    messages += [bytearray(b"b" * 70 * KiB), memoryview(b"m" * 300 * KiB), "é" * (80 * KiB)]

    async def main() -> None:
        peer = start(aiopeers.sync_echo_server, pipe_name, True)
        try:
            conn = await aio.connect(pipe_name, timeout=WAIT, wait_for_listener=True, crc=True)

            async def send_all() -> None:  # while receiving: the echoes must not back up
                for message in messages:
                    await conn.send(message)
                assert await conn.send_many(messages) == len(messages)

            sender = asyncio.ensure_future(send_all())
            for message in messages * 2:
                expected = message if isinstance(message, str) else bytes(message)
                assert await conn.recv(timeout=WAIT) == expected
            await sender
            await conn.aclose()
        finally:
            assert await asyncio.to_thread(finish, peer) == 0

    run(main())


def test_many_small_messages_with_cancellations_in_between(pipe_name: str) -> None:
    count = 20_000

    async def main() -> None:
        async with pair(pipe_name) as (client, server):

            async def produce() -> None:
                for start_at in range(0, count, 100):
                    await client.send_many([str(n) for n in range(start_at, start_at + 50)])
                    for n in range(start_at + 50, start_at + 100):
                        await client.send(str(n).encode())

            producer = asyncio.ensure_future(produce())
            expected = 0
            while expected < count:
                if expected % 997 == 0:  # a call cancelled at its await, now and then
                    task = asyncio.ensure_future(server.recv_many(10))
                    await asyncio.sleep(0)
                    if not task.done():
                        task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        for message in await task:
                            assert int(message) == expected
                            expected += 1
                    continue
                for message in await server.recv_many(64, timeout=WAIT):
                    assert int(message) == expected
                    expected += 1
            await producer

    run(main())


def test_read_ahead_stays_bounded_after_a_waiting_call_took_its_message(pipe_name: str) -> None:
    """A read that wakes a waiting call is decoded by that call, lazily; a burst behind it
    is still held to the read-ahead budget once nobody receives, and nothing is lost."""
    count = 100_000
    frames = b"".join(encode_frame(str(n).encode()) for n in range(count))

    async def main() -> None:
        async with pair(pipe_name) as (client, server):
            waiting = asyncio.ensure_future(server.recv(timeout=WAIT))
            await asyncio.sleep(0.01)
            assert not waiting.done()
            client._transport.write(frames)  # about 1.7 MB at once
            assert await waiting == b"0"
            await until(lambda: server._protocol._read_paused)  # the budget is used up
            assert len(server._core._ready) < count // 4
            assert len(server._core._decoder._buf) <= 1024 * KiB  # undecoded bytes bounded
            expected = 1
            while expected < count:
                for message in await server.recv_many(1000, timeout=WAIT):
                    assert message == str(expected).encode()
                    expected += 1

    run(main())


async def _large_frames_both_ways(name: str, tag: int) -> None:
    """Two connections in one loop receive large frames at once (the shared scratch reads)."""
    sizes = [64 * KiB - 16, 64 * KiB, 64 * KiB + 7, 200 * KiB, 100] * 20

    async def one(suffix: str, fill: int) -> None:
        async with pair(f"{name}-{suffix}") as (client, server):
            messages = [bytes([(fill + n) % 256]) * size for n, size in enumerate(sizes)]
            sender = asyncio.ensure_future(client.send_many(messages))
            for expected in messages:
                assert await server.recv(timeout=WAIT) == expected
            assert await sender == len(messages)

    await asyncio.gather(one("a", tag), one("b", tag + 100))


def test_connections_sharing_a_scratch_buffer_get_their_own_bytes(pipe_name: str) -> None:
    run(_large_frames_both_ways(pipe_name, 1))


def test_loops_in_two_threads_get_their_own_bytes(pipe_name: str) -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        done = [
            pool.submit(run, _large_frames_both_ways(f"{pipe_name}-{tag}", tag)) for tag in (1, 2)
        ]
        for future in done:
            future.result(timeout=WAIT * 3)  # raises what the thread raised
