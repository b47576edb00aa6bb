"""Review of issue 12, reconnecting clients: close() during a reconnect waiting for a listener."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import npipes
import npipes.aio

WAIT = 60.0
ENDED = 10.0  # close() must end the reconnect wait well within this


def _until(check: object, what: str) -> None:
    end = time.monotonic() + WAIT
    while not check():  # type: ignore[operator]
        assert time.monotonic() < end, what
        time.sleep(0.01)


def test_close_ends_a_reconnect_wait_with_wait_for_listener(pipe_name: str) -> None:
    """connect(reconnect=True, wait_for_listener=True) (the docs' sample): the reconnect
    waited inside the backend's connect (wait_for_listener) with the call's deadline, so a
    close() from another thread did not end a recv() without timeout: it hung for ever."""
    listener = npipes.listen(pipe_name)
    conn = npipes.connect(pipe_name, timeout=WAIT, reconnect=True, wait_for_listener=True)
    listener.accept(timeout=WAIT).close()
    listener.close()  # the listener is gone and never comes back
    outcome: list[BaseException] = []

    def receive() -> None:
        try:
            conn.recv()  # no timeout: reconnects, waiting for a listener
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome.append(exc)

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    _until(conn._reconnect_lock.locked, "the reader never started reconnecting")
    time.sleep(0.5)  # let it get into the connect attempt
    conn.close()
    reader.join(ENDED)
    assert not reader.is_alive(), "close() did not end the reconnect wait"
    assert len(outcome) == 1
    assert type(outcome[0]) is npipes.ConnectionClosedError
    assert conn.reconnects == 0


def test_aio_close_ends_a_reconnect_wait_with_wait_for_listener(pipe_name: str) -> None:
    """The asyncio twin: aclose() from another task ends a recv() reconnecting with
    wait_for_listener=True."""

    async def main() -> None:
        listener = await npipes.aio.listen(pipe_name)
        conn = await npipes.aio.connect(
            pipe_name, timeout=WAIT, reconnect=True, wait_for_listener=True
        )
        await (await listener.accept(timeout=WAIT)).aclose()
        await listener.aclose()
        reader = asyncio.ensure_future(conn.recv())
        end = time.monotonic() + WAIT
        while not conn._reconnect_lock.locked():
            assert time.monotonic() < end, "the reader never started reconnecting"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        await conn.aclose()
        done, _ = await asyncio.wait([reader], timeout=ENDED)
        if not done:
            reader.cancel()
        assert done, "aclose() did not end the reconnect wait"
        assert type(reader.exception()) is npipes.ConnectionClosedError
        assert conn.reconnects == 0

    asyncio.run(main())


BIG = b"m" * (16 << 20)  # far beyond the socket buffers: most of it waits in the transport


async def _send_as_the_peer_dies(
    listener: npipes.Listener, pipe_name: str, call: str, *, reconnect: bool
) -> tuple[npipes.aio.Connection, asyncio.Future[object]]:
    """Start ``conn.<call>(BIG)`` to a peer that never reads, wait until the
    message waits in the transport's buffer, then kill the peer. The peer is a
    sync connection: an asyncio one would read the message into its own buffer
    (it reads ahead up to its size limit) and the transport's would empty."""
    conn = await npipes.aio.connect(
        pipe_name, timeout=WAIT, reconnect=reconnect, max_message_size=None
    )
    first = await asyncio.to_thread(listener.accept, timeout=WAIT)  # never reads
    if call == "send":
        sending = asyncio.ensure_future(conn.send(BIG, timeout=WAIT))
    else:
        sending = asyncio.ensure_future(conn.send_many([b"small", BIG], timeout=WAIT))
    try:
        end = time.monotonic() + WAIT
        while conn._transport.get_write_buffer_size() == 0:
            assert time.monotonic() < end, "the message never queued in the transport"
            await asyncio.sleep(0.01)
    except BaseException:
        sending.cancel()
        await conn.aclose()
        raise
    finally:
        first.close()  # the peer dies with the message unread
    return conn, sending


@pytest.mark.parametrize("call", ["send", "send_many"])
def test_aio_send_buffered_when_the_peer_died_is_sent_again(pipe_name: str, call: str) -> None:
    """At-least-once for asyncio: a send whose message never left this process is sent again."""

    async def main(listener: npipes.Listener) -> None:
        conn, sending = await _send_as_the_peer_dies(listener, pipe_name, call, reconnect=True)

        def second_peer() -> list[bytes | str]:
            with listener.accept(timeout=WAIT) as second:
                return [second.recv(timeout=WAIT) for _ in range(2 if call == "send_many" else 1)]

        receiving = asyncio.ensure_future(asyncio.to_thread(second_peer))
        try:
            await asyncio.wait_for(sending, WAIT)  # returned: sent again, or silently dropped
            assert conn.reconnects == 1, "send returned, its message lost with the transport"
            expected = [b"small", BIG] if call == "send_many" else [BIG]
            assert await asyncio.wait_for(receiving, WAIT) == expected
        finally:
            await conn.aclose()
            await asyncio.gather(receiving, return_exceptions=True)

    with npipes.listen(pipe_name, max_message_size=None) as listener:
        asyncio.run(main(listener))


@pytest.mark.parametrize("call", ["send", "send_many"])
def test_aio_send_buffered_when_the_peer_died_raises_without_reconnect(
    pipe_name: str, call: str
) -> None:
    """Without reconnect=True the same send raises ConnectionClosedError, as the sync
    send does (its OS write fails): it never returns as if its message went out."""

    async def main(listener: npipes.Listener) -> None:
        conn, sending = await _send_as_the_peer_dies(listener, pipe_name, call, reconnect=False)
        try:
            with pytest.raises(npipes.ConnectionClosedError, match="peer closed"):
                await asyncio.wait_for(sending, WAIT)
            with pytest.raises(npipes.ConnectionClosedError):
                await conn.send(b"after", timeout=WAIT)  # sending is over
        finally:
            await conn.aclose()

    with npipes.listen(pipe_name, max_message_size=None) as listener:
        asyncio.run(main(listener))
