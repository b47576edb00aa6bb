"""asyncio send waiting for the transport's buffer when the connection is lost
(review of bf9b8d4): with another task's frame behind its own, whether its message
went out is unknown (it returns; with reconnect=True it is sent again), and a
connection a protocol error broke never reconnects, whichever call meets it first.
Real sockets, no mocks."""

from __future__ import annotations

import asyncio
import time

import pytest

import npipes
import npipes.aio

WAIT = 30.0
SEND_TIMEOUT = (
    5.0  # bounds the send in the garbage test (a resend would wait on a peer that never reads)
)


async def _until_queued(conn: npipes.aio.Connection) -> None:
    end = time.monotonic() + WAIT
    while conn._transport.get_write_buffer_size() == 0:
        assert time.monotonic() < end, "the message never queued in the transport"
        await asyncio.sleep(0.01)


@pytest.mark.posix  # the selector transport (uvloop behaves the same); not run under Wine
def test_aio_send_whose_message_the_peer_received_does_not_raise(pipe_name: str) -> None:
    """Two tasks send on one connection (a pattern docs/asyncio.md supports: "at most
    about one message beyond the mark per task sending"). Task A's 1 MiB frame goes
    out whole and the peer *receives* it, while task B's 16 MiB frame, written after
    it, keeps the transport above its low-water mark. Then the peer goes away.

    "Lost while still write-paused" proves only that the buffer's tail (B's frame)
    never left: A's send returns (no error for a message the peer has), B's raises."""
    first = b"a" * (1 << 20)
    second = b"b" * (16 << 20)

    async def main(listener: npipes.Listener) -> None:
        conn = await npipes.aio.connect(pipe_name, timeout=WAIT, max_message_size=None)
        peer = await asyncio.to_thread(listener.accept, timeout=WAIT)
        task_a = asyncio.ensure_future(conn.send(first, timeout=WAIT))
        await asyncio.sleep(0)  # A writes its frame first
        task_b = asyncio.ensure_future(conn.send(second, timeout=WAIT))
        try:
            await _until_queued(conn)
            try:
                got = await asyncio.to_thread(peer.recv, timeout=WAIT)
                assert got == first  # the peer has A's message, whole
            finally:
                peer.close()  # then goes away, B's message unread
            await asyncio.wait_for(task_a, WAIT)  # must return: its message was delivered
            with pytest.raises(npipes.ConnectionClosedError):
                await asyncio.wait_for(task_b, WAIT)  # B's never left: raising is right
        finally:
            task_a.cancel()
            task_b.cancel()
            await asyncio.gather(task_a, task_b, return_exceptions=True)
            await conn.aclose(flush_timeout=0.1)

    with npipes.listen(pipe_name, max_message_size=None) as listener:
        asyncio.run(main(listener))


def test_aio_send_waiting_when_the_peer_sent_garbage_does_not_reconnect(pipe_name: str) -> None:
    """reconnect=True, a send waiting for the buffer to drain, and the peer sends bytes
    that are not an npipes frame. The protocol breaks the core and aborts the transport
    (lost while write-paused): the send raises ConnectionClosedError without
    reconnecting, and the next recv reports the ProtocolError (docs/reliability.md:
    protocol errors never reconnect; the rule is _reconnect.may_reconnect's, from the
    core's state, not from which call met the error first)."""
    big = b"m" * (16 << 20)

    async def main(listener: npipes.Listener) -> None:
        conn = await npipes.aio.connect(
            pipe_name, timeout=WAIT, reconnect=True, max_message_size=None
        )
        peer = await asyncio.to_thread(listener.accept, timeout=WAIT)  # never reads
        sending = asyncio.ensure_future(conn.send(big, timeout=SEND_TIMEOUT))
        try:
            await _until_queued(conn)
            await asyncio.to_thread(peer.send, b"this is not an npipes frame header", timeout=WAIT)
            [outcome] = await asyncio.gather(
                asyncio.wait_for(sending, WAIT), return_exceptions=True
            )
            assert conn.reconnects == 0, f"a protocol error reconnected (the send: {outcome!r})"
            # Its message never left (the transport was aborted): it must not look sent.
            assert isinstance(outcome, npipes.ConnectionClosedError), outcome
            with pytest.raises((npipes.ProtocolError, npipes.ConnectionClosedError)):
                await conn.recv(timeout=WAIT)
        finally:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            await conn.aclose(flush_timeout=0.1)
            peer.close()

    with npipes.listen(pipe_name, framing="raw", max_message_size=None) as listener:
        asyncio.run(main(listener))


@pytest.mark.posix  # the selector transport's pause/resume marks (the proactor resumes later)
def test_aio_reconnecting_sends_of_two_tasks_arrive_after_the_peer_died(pipe_name: str) -> None:
    """reconnect=True, the same two tasks: the peer receives A's message and dies with
    B's unread. Whether A's went out is unknown to A (B's frame is behind it), so
    both are sent again (at-least-once): the new peer gets both, A's possibly twice
    in all, B's whole; neither send raises."""
    first = b"a" * (1 << 20)
    second = b"b" * (16 << 20)

    async def main(listener: npipes.Listener) -> None:
        conn = await npipes.aio.connect(
            pipe_name, timeout=WAIT, reconnect=True, max_message_size=None
        )
        peer = await asyncio.to_thread(listener.accept, timeout=WAIT)
        task_a = asyncio.ensure_future(conn.send(first, timeout=WAIT))
        await asyncio.sleep(0)  # A writes its frame first
        task_b = asyncio.ensure_future(conn.send(second, timeout=WAIT))

        def new_peer() -> list[bytes | str]:
            with listener.accept(timeout=WAIT) as again:
                return [again.recv(timeout=WAIT) for _ in range(2)]

        try:
            await _until_queued(conn)
            try:
                assert await asyncio.to_thread(peer.recv, timeout=WAIT) == first
            finally:
                peer.close()
            receiving = asyncio.ensure_future(asyncio.to_thread(new_peer))
            await asyncio.wait_for(asyncio.gather(task_a, task_b), WAIT)
            assert conn.reconnects == 1
            assert sorted(await asyncio.wait_for(receiving, WAIT)) == [first, second]
        finally:
            task_a.cancel()
            task_b.cancel()
            await asyncio.gather(task_a, task_b, return_exceptions=True)
            await conn.aclose(flush_timeout=0.1)

    with npipes.listen(pipe_name, max_message_size=None) as listener:
        asyncio.run(main(listener))


def test_aio_send_after_the_peer_sent_garbage_does_not_reconnect(pipe_name: str) -> None:
    """reconnect=True: garbage from the peer breaks the connection as it arrives (the
    protocol decodes on arrival). A send made after that, before any recv, raises
    ConnectionClosedError instead of reconnecting, and recv reports the ProtocolError."""

    async def main(listener: npipes.Listener) -> None:
        conn = await npipes.aio.connect(pipe_name, timeout=WAIT, reconnect=True)
        with await asyncio.to_thread(listener.accept, timeout=WAIT) as peer:
            await asyncio.to_thread(peer.send, b"this is not an npipes frame header", timeout=WAIT)
            end = time.monotonic() + WAIT
            while not conn._protocol.lost:  # the protocol broke the core and aborted
                assert time.monotonic() < end, "the garbage never broke the connection"
                await asyncio.sleep(0.01)
            with pytest.raises(npipes.ConnectionClosedError):
                await conn.send(b"after", timeout=WAIT)
            assert conn.reconnects == 0
            with pytest.raises(npipes.ProtocolError):
                await conn.recv(timeout=WAIT)
        await conn.aclose()

    with npipes.listen(pipe_name, framing="raw") as listener:
        asyncio.run(main(listener))
