"""Servers that one bad client cannot stop (issue 10 §5), sync and asyncio.

A client that never answers the authkey challenge, or never sends anything,
must not block other clients, hold a slot for good, or keep ``close()``
waiting; a finished connection's buffers are freed; a handler can reply to a
client that half-closed after sending; ``aclose()`` lets the caller's
cancellation through.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import threading
import time
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

import npipes
import server_peers
from helpers import CTX, finish, start
from npipes import ConnectionClosedError, aio
from npipes._frame import FrameDecoder, encode_frame

WAIT = 30.0
KEY = b"server-attack-key"
T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(100):
            return await main

    return asyncio.run(bounded())


def echo(conn: npipes.Connection) -> None:
    for message in conn:
        conn.send(message, timeout=WAIT)


async def aio_echo(conn: aio.Connection) -> None:
    async for message in conn:
        await conn.send(message, timeout=WAIT)


def quiet_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The server's records; none may be an error or carry a traceback."""
    records = [r for r in caplog.records if r.name == "npipes.server"]
    for record in records:
        assert record.levelno < logging.WARNING, record.getMessage()
        assert record.exc_info is None, record.getMessage()
    return records


# -- the handshake runs in the connection's worker, with a deadline ---------------------


def test_sync_a_client_silent_in_the_handshake_blocks_nobody(pipe_name: str) -> None:
    connected, release = CTX.Event(), CTX.Event()
    server = npipes.serve(pipe_name, echo, authkey=KEY)
    silent = start(server_peers.silent_client, pipe_name, connected, release)
    try:
        assert connected.wait(WAIT)
        with npipes.connect(pipe_name, timeout=10, authkey=KEY) as client:
            client.send("hello", timeout=WAIT)
            assert client.recv(timeout=WAIT) == "hello"
        began = time.monotonic()
        server.close()  # the silent client is still in its handshake
        assert time.monotonic() - began < 3
    finally:
        server.close()
        release.set()
        assert finish(silent) == 0


def test_sync_handshake_timeout_closes_a_silent_client(
    pipe_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.DEBUG, logger="npipes.server"),
        npipes.serve(pipe_name, echo, authkey=KEY, handshake_timeout=0.5),
        npipes.connect(pipe_name, timeout=WAIT) as silent,  # no key: never answers
    ):
        assert isinstance(silent.recv(timeout=WAIT), bytes)  # the challenge
        began = time.monotonic()
        with pytest.raises(ConnectionClosedError):
            silent.recv(timeout=WAIT)
        assert time.monotonic() - began < WAIT / 2
        with npipes.connect(pipe_name, timeout=WAIT, authkey=KEY) as client:
            client.send(b"x", timeout=WAIT)
            assert client.recv(timeout=WAIT) == b"x"
    assert quiet_records(caplog)


def test_aio_a_client_silent_in_the_handshake_blocks_nobody(pipe_name: str) -> None:
    connected, release = CTX.Event(), CTX.Event()

    async def main() -> None:
        server = await aio.serve(pipe_name, aio_echo, authkey=KEY)
        silent = start(server_peers.silent_client, pipe_name, connected, release)
        try:
            assert await asyncio.to_thread(connected.wait, WAIT)
            async with await aio.connect(pipe_name, timeout=10, authkey=KEY) as client:
                await client.send("hello", timeout=WAIT)
                assert await client.recv(timeout=WAIT) == "hello"
            began = time.monotonic()
            await server.aclose()  # the silent client is still in its handshake
            assert time.monotonic() - began < 3
        finally:
            await server.aclose()
            release.set()
            assert await asyncio.to_thread(finish, silent) == 0

    run(main())


def test_aio_handshake_timeout_closes_a_silent_client(
    pipe_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with (
            await aio.serve(pipe_name, aio_echo, authkey=KEY, handshake_timeout=0.5),
            await aio.connect(pipe_name, timeout=WAIT) as silent,  # no key: never answers
        ):
            assert isinstance(await silent.recv(timeout=WAIT), bytes)  # the challenge
            began = time.monotonic()
            with pytest.raises(ConnectionClosedError):
                await silent.recv(timeout=WAIT)
            assert time.monotonic() - began < WAIT / 2
            async with await aio.connect(pipe_name, timeout=WAIT, authkey=KEY) as client:
                await client.send(b"x", timeout=WAIT)
                assert await client.recv(timeout=WAIT) == b"x"

    with caplog.at_level(logging.DEBUG, logger="npipes.server"):
        run(main())
    assert quiet_records(caplog)


# -- idle_timeout: a client that sends nothing loses its slot ----------------------------


def test_sync_idle_timeout_frees_the_slot_of_a_silent_client(
    pipe_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    firsts: list[bytes | str] = []

    def handler(conn: npipes.Connection) -> None:
        first = conn.recv(timeout=WAIT)
        firsts.append(first)
        conn.send(f"got:{first!r}", timeout=WAIT)

    with (
        caplog.at_level(logging.DEBUG, logger="npipes.server"),
        npipes.serve(pipe_name, handler, max_connections=1, idle_timeout=0.5) as server,
    ):
        with npipes.connect(pipe_name, timeout=WAIT) as silent:
            began = time.monotonic()
            with pytest.raises(ConnectionClosedError):
                silent.recv(timeout=WAIT)
            assert time.monotonic() - began < WAIT / 2
        with npipes.connect(pipe_name, timeout=WAIT) as client:
            client.send(b"", timeout=WAIT)  # an empty first message still counts, and arrives
            assert client.recv(timeout=WAIT) == "got:b''"
        assert not server.listener.closed
    assert firsts == [b""]
    assert any("idle_timeout" in r.getMessage() for r in quiet_records(caplog))


def test_aio_idle_timeout_frees_the_slot_of_a_silent_client(
    pipe_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    firsts: list[bytes | str] = []

    async def handler(conn: aio.Connection) -> None:
        first = await conn.recv(timeout=WAIT)
        firsts.append(first)
        await conn.send(f"got:{first!r}", timeout=WAIT)

    async def main() -> None:
        async with await aio.serve(pipe_name, handler, max_connections=1, idle_timeout=0.5):
            async with await aio.connect(pipe_name, timeout=WAIT) as silent:
                began = time.monotonic()
                with pytest.raises(ConnectionClosedError):
                    await silent.recv(timeout=WAIT)
                assert time.monotonic() - began < WAIT / 2
            async with await aio.connect(pipe_name, timeout=WAIT) as client:
                await client.send("", timeout=WAIT)  # an empty first message still counts
                assert await client.recv(timeout=WAIT) == "got:''"

    with caplog.at_level(logging.DEBUG, logger="npipes.server"):
        run(main())
    assert firsts == [""]
    assert any("idle_timeout" in r.getMessage() for r in quiet_records(caplog))


# -- the sync server frees a finished connection ------------------------------------------


def test_sync_server_keeps_no_finished_connection_alive(pipe_name: str) -> None:
    refs: list[weakref.ref[npipes.Connection]] = []
    returned = threading.Event()

    def handler(conn: npipes.Connection) -> None:
        refs.append(weakref.ref(conn))
        echo(conn)
        returned.set()

    with npipes.serve(pipe_name, handler) as server:
        with npipes.connect(pipe_name, timeout=WAIT) as client:
            client.send(b"x" * 1_000_000, timeout=WAIT)
            assert len(client.recv(timeout=WAIT)) == 1_000_000
        assert returned.wait(WAIT)
        deadline = time.monotonic() + 10
        while refs[0]() is not None or server.active:  # the worker thread is ending
            assert time.monotonic() < deadline, "the finished connection is still referenced"
            gc.collect()
            time.sleep(0.01)  # polls a condition; orders nothing by itself


# -- a client that half-closes after sending still gets its reply --------------------------


def half_closing_client(address: str) -> list[bytes | str]:
    """Send one request, shut down the sending side, read the replies until EOF."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(WAIT)
        sock.connect(address)
        sock.sendall(encode_frame(b"request"))
        sock.shutdown(socket.SHUT_WR)
        data = bytearray()
        while chunk := sock.recv(65536):
            data += chunk
    decoder = FrameDecoder()
    decoder.feed_data(data)
    return [frame.message for frame in decoder]


@pytest.mark.posix
def test_sync_handler_replies_to_a_half_closed_client(pipe_name: str) -> None:
    def handler(conn: npipes.Connection) -> None:
        request = conn.recv(timeout=WAIT)
        conn.send(b"re:" + bytes(request), timeout=WAIT)  # the client has sent EOF by now

    with npipes.serve(pipe_name, handler) as server:
        assert half_closing_client(server.address) == [b"re:request"]


@pytest.mark.posix
def test_aio_handler_replies_to_a_half_closed_client(pipe_name: str) -> None:
    async def handler(conn: aio.Connection) -> None:
        request = await conn.recv(timeout=WAIT)
        with pytest.raises(ConnectionClosedError):
            await conn.recv(timeout=WAIT)  # the client's EOF
        await conn.send(b"re:" + bytes(request), timeout=WAIT)

    async def main() -> None:
        async with await aio.serve(pipe_name, handler) as server:
            replies = await asyncio.to_thread(half_closing_client, server.address)
        assert replies == [b"re:request"]

    run(main())


# -- aclose() and the caller's cancellation -----------------------------------------------


def test_aio_aclose_lets_the_callers_cancellation_through(pipe_name: str) -> None:
    async def main() -> None:
        entered = asyncio.Event()
        ended: list[str] = []

        async def handler(conn: aio.Connection) -> None:
            entered.set()
            try:
                await asyncio.Event().wait()  # only cancellation ends this
            except asyncio.CancelledError:
                ended.append("cancelled")
                raise

        server = await aio.serve(pipe_name, handler)
        async with await aio.connect(pipe_name, timeout=WAIT):
            async with asyncio.timeout(WAIT):
                await entered.wait()
            closing = asyncio.create_task(server.aclose(timeout=WAIT))
            await asyncio.sleep(0)  # aclose runs to its first wait
            closing.cancel()
            done, _ = await asyncio.wait({closing}, timeout=WAIT / 3)
            assert closing in done, "aclose() swallowed its caller's cancellation"
            assert closing.cancelled()
            assert server.listener.closed
            deadline = time.monotonic() + WAIT
            while server.active:  # the handlers were cancelled, not left running
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            assert ended == ["cancelled"]
        await server.aclose()  # idempotent

    run(main())


@pytest.mark.parametrize("option", ["handshake_timeout", "idle_timeout"])
@pytest.mark.parametrize("value", [0, -1.0])
def test_serve_rejects_a_timeout_that_is_not_positive(
    pipe_name: str, option: str, value: float
) -> None:
    with pytest.raises(ValueError, match=option):
        npipes.serve(pipe_name, echo, **{option: value})

    async def main() -> None:
        with pytest.raises(ValueError, match=option):
            await aio.serve(pipe_name, aio_echo, **{option: value})

    run(main())
    with pytest.raises(npipes.PipeNotFoundError):
        npipes.connect(pipe_name, timeout=5)  # nothing was left listening
