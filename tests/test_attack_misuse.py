"""Attack: a send with an impossible timeout must fail before anything is written
(issue 10 §3b). Otherwise the caller sees an error for a message that went out,
retries, and the peer gets it twice."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import npipes
from npipes import PipeTimeoutError, aio

BAD_TIMEOUTS = [-1.0, math.nan, "1"]
IDS = ["negative", "nan", "str"]


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=IDS)
@pytest.mark.parametrize("call", ["send", "send_many"])
def test_sync_send_with_a_bad_timeout_sends_nothing(
    pipe_name: str, timeout: Any, call: str
) -> None:
    with (
        npipes.listen(pipe_name) as listener,
        npipes.connect(pipe_name, timeout=30) as client,
        listener.accept(timeout=30) as server,
    ):
        bad: Callable[[], object] = (
            (lambda: client.send(b"once", timeout=timeout))
            if call == "send"
            else (lambda: client.send_many([b"once"], timeout=timeout))
        )
        with pytest.raises((ValueError, TypeError)):
            bad()
        with pytest.raises(PipeTimeoutError):
            server.recv(timeout=0.5)
        client.send(b"next", timeout=30)
        assert server.recv(timeout=30) == b"next"


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=IDS)
@pytest.mark.parametrize("call", ["send", "send_many", "recv", "recv_into"])
def test_aio_call_with_a_bad_timeout_does_nothing(pipe_name: str, timeout: Any, call: str) -> None:
    async def main() -> None:
        async with (
            await aio.listen(pipe_name) as listener,
            await aio.connect(pipe_name, timeout=30) as client,
            await listener.accept(timeout=30) as server,
        ):
            calls: dict[str, Callable[[], Awaitable[object]]] = {
                "send": lambda: client.send(b"once", timeout=timeout),
                "send_many": lambda: client.send_many([b"once"], timeout=timeout),
                "recv": lambda: server.recv(timeout=timeout),
                "recv_into": lambda: server.recv_into(bytearray(8), timeout=timeout),
            }
            with pytest.raises((ValueError, TypeError)):
                await calls[call]()
            with pytest.raises(PipeTimeoutError):
                await server.recv(timeout=0.5)
            await client.send(b"next", timeout=30)
            assert await server.recv(timeout=30) == b"next"

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine ... was never awaited" is a leak too
        asyncio.run(main())


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=IDS)
def test_sync_server_close_with_a_bad_timeout_changes_nothing(pipe_name: str, timeout: Any) -> None:
    """Before: close(nan) closed the listener, then raised, and a later close()
    returned at once, leaving handlers and their connections running."""
    started = threading.Event()
    ended = threading.Event()

    def handler(conn: npipes.Connection) -> None:
        started.set()
        with contextlib.suppress(npipes.NpipesError):
            conn.recv()  # blocks until the server closes the connection
        ended.set()

    server = npipes.serve(pipe_name, handler)
    try:
        with npipes.connect(pipe_name, timeout=30):
            assert started.wait(30)
            with pytest.raises((ValueError, TypeError)):
                server.close(timeout=timeout)
            assert not server.listener.closed
            server.close(timeout=0.1)
            assert ended.wait(30)
            assert server.listener.closed
    finally:
        server.close()


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=IDS)
def test_aio_server_aclose_with_a_bad_timeout_changes_nothing(pipe_name: str, timeout: Any) -> None:
    async def main() -> None:
        started = asyncio.Event()

        async def handler(conn: aio.Connection) -> None:
            started.set()
            await conn.recv()

        server = await aio.serve(pipe_name, handler)
        try:
            async with await aio.connect(pipe_name, timeout=30):
                await asyncio.wait_for(started.wait(), 30)
                with pytest.raises((ValueError, TypeError)):
                    await server.aclose(timeout=timeout)
                assert not server.listener.closed
        finally:
            await server.aclose(timeout=0.1)
        assert server.listener.closed

    asyncio.run(main())


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=IDS)
def test_aio_aclose_with_a_bad_flush_timeout_changes_nothing(pipe_name: str, timeout: Any) -> None:
    """Before: aclose(flush_timeout=-1) aborted at once (dropping what was buffered),
    nan was taken as "no wait", and only a str raised."""

    async def main() -> None:
        async with (
            await aio.listen(pipe_name) as listener,
            await aio.connect(pipe_name, timeout=30) as client,
            await listener.accept(timeout=30) as server,
        ):
            with pytest.raises((ValueError, TypeError)):
                await client.aclose(flush_timeout=timeout)
            assert not client.closed
            await client.send(b"still open", timeout=30)
            assert await server.recv(timeout=30) == b"still open"

    asyncio.run(main())
