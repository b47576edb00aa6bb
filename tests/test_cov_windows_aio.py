"""The asyncio named-pipe listener: a client the OS connected is never dropped or leaked.

A client connects before anyone accepts; an ``accept()`` cancelled while it takes that
client keeps it for the next ``accept()``, and a listener closed instead closes the client
(its receive ends), never leaving it hanging. Accepting on a closed listener says so.
"""

from __future__ import annotations

import asyncio

import pytest

import npipes
import npipes.aio

pytestmark = pytest.mark.windows
WAIT = 30.0


async def _cancelled_accept(listener: npipes.aio.Listener) -> npipes.aio.Connection | None:
    """Cancel an accept while it takes the waiting client; its result if it won the race."""
    task = asyncio.ensure_future(listener.accept(timeout=WAIT))
    await asyncio.sleep(0)  # it starts taking the client that is already there
    task.cancel()
    try:
        return await task
    except asyncio.CancelledError:
        return None


def test_a_cancelled_accept_keeps_the_client_for_the_next(pipe_name: str) -> None:
    async def main() -> None:
        async with await npipes.aio.listen(pipe_name) as listener:
            client = await npipes.aio.connect(pipe_name, timeout=WAIT)
            await client.send("hello", timeout=WAIT)
            server = await _cancelled_accept(listener) or await listener.accept(timeout=WAIT)
            assert await server.recv(timeout=WAIT) == "hello"
            await server.send("back", timeout=WAIT)
            assert await client.recv(timeout=WAIT) == "back"
            await server.aclose()
            await client.aclose()

    asyncio.run(main())


def test_a_listener_closed_after_a_cancelled_accept_closes_the_client(pipe_name: str) -> None:
    async def main() -> None:
        listener = await npipes.aio.listen(pipe_name)
        client = await npipes.aio.connect(pipe_name, timeout=WAIT)
        won = await _cancelled_accept(listener)
        await listener.aclose()
        if won is not None:  # the accept won the race: closing its connection must end the client
            await won.aclose()
        with pytest.raises(npipes.ConnectionClosedError):
            await client.recv(timeout=WAIT)
        await client.aclose()
        with pytest.raises(npipes.ConnectionClosedError):
            await listener.accept(timeout=WAIT)

    asyncio.run(main())
