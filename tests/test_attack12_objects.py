"""Attacks on recv_json/recv_pyobj (issue 12 §4) by a hostile peer process."""

from __future__ import annotations

import asyncio

import pytest

import attack12_peers
import npipes
import npipes.aio
from helpers import finish, start
from npipes import ProtocolError

WAIT = 30.0
DEPTH = 200_000
"""Deep enough that json.loads raises RecursionError (not a ValueError)."""


def test_deeply_nested_json_is_a_typed_error_for_that_message_only(pipe_name: str) -> None:
    with npipes.listen(pipe_name) as listener:
        proc = start(attack12_peers.send_deep_json, pipe_name, DEPTH)
        with listener.accept(timeout=WAIT) as conn:
            with pytest.raises(ProtocolError, match="not JSON"):
                conn.recv_json(timeout=WAIT)
            assert conn.recv_json(timeout=WAIT) == {}
            assert conn.recv_json(timeout=WAIT) == {"after": True}
            conn.send("done")
        assert finish(proc) == 0


def test_deeply_nested_json_is_a_typed_error_in_asyncio(pipe_name: str) -> None:
    async def main() -> None:
        async with await npipes.aio.listen(pipe_name) as listener:
            proc = start(attack12_peers.send_deep_json, pipe_name, DEPTH)
            async with await listener.accept(timeout=WAIT) as conn:
                with pytest.raises(ProtocolError, match="not JSON"):
                    await conn.recv_json(timeout=WAIT)
                assert await conn.recv_json(timeout=WAIT) == {}
                assert await conn.recv_json(timeout=WAIT) == {"after": True}
                await conn.send("done")
            assert await asyncio.to_thread(finish, proc) == 0

    asyncio.run(main())
