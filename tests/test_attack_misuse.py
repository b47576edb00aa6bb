"""Attack: a send with an impossible timeout must fail before anything is written
(issue 10 §3b). Otherwise the caller sees an error for a message that went out,
retries, and the peer gets it twice."""

from __future__ import annotations

import asyncio
import math
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
