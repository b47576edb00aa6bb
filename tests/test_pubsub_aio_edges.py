"""asyncio publish/subscribe at its edges: refused framings, listeners that are no
publisher, close() with a subscriber that stopped reading, accept failures."""

from __future__ import annotations

import asyncio

import pytest

import npipes
import npipes.aio

WAIT = 30.0


def test_aio_refused_framing_leaves_no_endpoint(pipe_name: str) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="keeps binary messages whole"):
            await npipes.aio.publish(pipe_name, framing="lines")
        with pytest.raises(ValueError, match="keeps binary messages whole"):
            await npipes.aio.subscribe(pipe_name, framing="lines")
        listener = await npipes.aio.listen(pipe_name)  # the refused publish removed its endpoint
        await listener.aclose()

    asyncio.run(main())


def test_aio_subscribe_to_a_listener_that_is_no_publisher(pipe_name: str) -> None:
    async def main() -> None:
        listener = await npipes.aio.listen(pipe_name)
        async with listener:
            accepted: list[npipes.aio.Connection] = []

            async def serve(reply: bytes | None) -> None:
                conn = await listener.accept(timeout=WAIT)
                accepted.append(conn)
                if reply is not None:
                    await conn.send(reply)

            task = asyncio.ensure_future(serve(b"hello"))
            with pytest.raises(npipes.ProtocolError, match="not an npipes publisher"):
                await npipes.aio.subscribe(pipe_name, timeout=WAIT)
            await task
            task = asyncio.ensure_future(serve(None))
            with pytest.raises(npipes.PipeTimeoutError, match="no publisher confirmed"):
                await npipes.aio.subscribe(pipe_name, timeout=0.5)
            await task
            with pytest.raises(npipes.PipeNotFoundError):
                await npipes.aio.subscribe(pipe_name + "-nobody", timeout=WAIT)
            for conn in accepted:
                conn.abort()

    asyncio.run(main())


def test_aio_close_aborts_a_subscriber_that_stopped_reading(pipe_name: str) -> None:
    """aclose(timeout) gives queued messages their time, then aborts a subscriber that
    takes nothing, so a stopped reader cannot hold the publisher's close up."""

    async def main() -> None:
        pub = await npipes.aio.publish(pipe_name, max_queue=4 << 20)
        assert "0 subscribers" in repr(pub)
        assert pub.address
        sub = await npipes.aio.subscribe(pipe_name, timeout=WAIT)
        for _ in range(200):
            if pub.subscribers:
                break
            await asyncio.sleep(0.01)
        assert pub.subscribers == 1
        for _ in range(40):  # more than the OS buffers: the writer is stuck in flight
            await pub.send(b"x" * 65536)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await pub.aclose(timeout=0.5)
        assert loop.time() - started < WAIT
        assert pub.closed
        assert "closed" in repr(pub)
        await pub.aclose()  # idempotent
        with pytest.raises(npipes.ConnectionClosedError):
            await pub.send(b"after close")
        got = 0
        while True:
            try:
                await sub.recv(timeout=WAIT)
            except npipes.ConnectionClosedError:
                break
            got += 1
        assert got < 40  # the rest was dropped when the publisher gave up on it
        sub.abort()

    asyncio.run(main())


def test_aio_publisher_with_authkey_refuses_a_wrong_key_and_goes_on(pipe_name: str) -> None:
    key = b"members only"

    async def main() -> None:
        async with await npipes.aio.publish(pipe_name, authkey=key) as pub:
            with pytest.raises(npipes.AuthenticationError):
                await npipes.aio.subscribe(pipe_name, timeout=WAIT, authkey=b"wrong")
            sub = await npipes.aio.subscribe(pipe_name, timeout=WAIT, authkey=key)
            async with sub:
                for _ in range(200):
                    if pub.subscribers:
                        break
                    await asyncio.sleep(0.01)
                assert pub.subscribers == 1
                await pub.send("for members")
                assert await sub.recv(timeout=WAIT) == "for members"

    asyncio.run(main())
