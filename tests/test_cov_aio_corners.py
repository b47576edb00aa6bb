"""asyncio publish/subscribe and the asyncio Unix listener at their corners.

Pub/sub: a publisher whose listener was closed under it stops accepting and goes on
sending; one whose accepts fail goes on accepting once they work again; a subscriber
whose handshake ends after ``aclose()`` began is closed, never registered; a cancelled
``aclose()`` still closes every subscriber. Unix listener: a client whose transport
set-up is cancelled is closed, one kept for the next ``accept`` is closed by ``close()``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import selectors
import sys

import pytest

import npipes
import npipes.aio
from npipes._auth import WELCOME, connect_side

if sys.platform != "win32":
    from npipes._backend.unix_aio import AioListener

WAIT = 10.0
KEY = b"corner key"


async def _drain_until_closed(conn: npipes.aio.Connection) -> int:
    """Receive until the connection ends; the number of messages received."""
    got = 0
    while True:
        try:
            await conn.recv(timeout=WAIT)
        except npipes.ConnectionClosedError:
            return got
        got += 1


# -- publisher: accept loop -------------------------------------------------------------


def test_aio_publisher_whose_listener_was_closed_stops_accepting_and_keeps_sending(
    pipe_name: str,
) -> None:
    """``pub.listener.aclose()`` ends the accept loop quietly (no error, no retry);
    the subscribers already there still get every message, and ``aclose()`` works."""

    async def main() -> None:
        pub = await npipes.aio.publish(pipe_name)
        sub = await npipes.aio.subscribe(pipe_name, timeout=WAIT)
        assert pub.subscribers == 1  # SUBSCRIBED is queued when it is registered
        await pub.listener.aclose()
        await asyncio.wait_for(pub._accepting, WAIT)  # ended, without an exception
        assert not pub.closed
        # No one gets in. POSIX: the socket file is gone. Windows: the pipe name lives
        # while the subscriber's instance is open, and no instance waits: busy.
        with pytest.raises((npipes.PipeNotFoundError, npipes.PipeBusyError)):
            await npipes.aio.subscribe(pipe_name, timeout=1.0)
        await pub.send("still here")
        assert await sub.recv(timeout=WAIT) == "still here"
        await pub.aclose(timeout=WAIT)
        assert await _drain_until_closed(sub) == 0
        assert pub.subscribers == 0
        await sub.aclose()

    asyncio.run(main())


class _SetOnRecord(logging.Handler):
    def __init__(self, event: asyncio.Event, text: str) -> None:
        super().__init__()
        self.event = event
        self.text = text

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


@pytest.mark.posix
def test_aio_publisher_keeps_accepting_after_accepts_failed(pipe_name: str) -> None:
    """An accept that fails (here ENOTSOCK: /dev/null put on the listening socket's
    descriptor) is logged and retried after a pause; once the socket is back, a
    subscriber gets in and receives. A poll() loop: an epoll one would keep a stale
    registration of the swapped descriptor."""

    async def main() -> None:
        failed = asyncio.Event()
        handler = _SetOnRecord(failed, "accept failed")
        logger = logging.getLogger("npipes.server")
        logger.addHandler(handler)
        pub = await npipes.aio.publish(pipe_name)
        fd = pub.listener._raw._raw.listening_socket.fileno()
        backup = os.dup(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        try:
            os.dup2(null, fd)
            try:
                await asyncio.wait_for(failed.wait(), WAIT)
            finally:
                os.dup2(backup, fd)
            assert not pub._accepting.done()  # still accepting
            sub = await npipes.aio.subscribe(pipe_name, timeout=WAIT)
            assert pub.subscribers == 1
            await pub.send(b"after the failures")
            assert await sub.recv(timeout=WAIT) == b"after the failures"
            await sub.aclose()
        finally:
            os.close(backup)
            os.close(null)
            logger.removeHandler(handler)
            await pub.aclose(timeout=WAIT)

    def poll_loop() -> asyncio.AbstractEventLoop:
        return asyncio.SelectorEventLoop(selectors.PollSelector())

    with asyncio.Runner(loop_factory=poll_loop) as runner:
        runner.run(main())


# -- publisher: closing ---------------------------------------------------------------


def test_aio_subscriber_authenticated_after_close_began_is_closed_not_registered(
    pipe_name: str,
) -> None:
    """A client's authkey handshake that completes after ``aclose()`` began: the
    publisher closes it instead of registering it, so it never sees SUBSCRIBED.

    The client runs the handshake by hand (a plain connection and ``connect_side``),
    holding its last message back until ``aclose()`` has started."""

    async def main() -> None:
        pub = await npipes.aio.publish(pipe_name, authkey=KEY)
        client = await npipes.aio.connect(pipe_name, timeout=WAIT)  # no key: we answer
        exchange = connect_side(KEY)
        step = next(exchange)
        closing: asyncio.Future[None] | None = None
        try:
            while True:
                if step is None:
                    message = await client.recv(timeout=WAIT)
                    assert isinstance(message, bytes)
                    step = exchange.send(message)
                    continue
                if step == WELCOME:  # the publisher's handshake ends when this arrives
                    closing = asyncio.ensure_future(pub.aclose(timeout=WAIT))
                    await asyncio.sleep(0)  # let aclose() take its first step
                    assert pub.closed
                await client.send(step, timeout=WAIT)
                step = exchange.send(None)
        except StopIteration:
            pass
        assert closing is not None
        with pytest.raises(npipes.ConnectionClosedError):
            await client.recv(timeout=WAIT)  # not SUBSCRIBED: closed
        await asyncio.wait_for(closing, WAIT)
        assert pub.subscribers == 0
        assert not pub._tasks
        client.abort()

    asyncio.run(main())


def test_aio_cancelled_close_still_closes_the_subscribers(pipe_name: str) -> None:
    """``aclose()`` cancelled while it waits for a subscriber that stopped reading:
    the cancellation propagates, the subscriber's writer is cancelled and its
    connection aborted, and the publisher stays closed (a second ``aclose()``
    returns at once)."""

    async def main() -> None:
        pub = await npipes.aio.publish(pipe_name, max_queue=4 << 20)
        sub = await npipes.aio.subscribe(pipe_name, timeout=WAIT)
        assert pub.subscribers == 1
        for _ in range(40):  # more than the OS buffers: the writer is stuck in drain
            await pub.send(b"x" * 65536)
        writers = list(pub._tasks)
        assert len(writers) == 1
        closing = asyncio.ensure_future(pub.aclose(timeout=WAIT))
        await asyncio.sleep(0)  # let aclose() take its first step
        assert pub.closed
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        done, _ = await asyncio.wait(writers, timeout=WAIT)
        assert done == set(writers)
        assert writers[0].cancelled()
        assert not pub._tasks
        assert await _drain_until_closed(sub) < 40
        await asyncio.wait_for(pub.aclose(), WAIT)  # the first call's end was recorded
        with pytest.raises(npipes.ConnectionClosedError):
            await pub.send(b"after close")
        sub.abort()

    asyncio.run(main())


# -- the asyncio Unix listener ------------------------------------------------------------


class _Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.lost = asyncio.Event()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()


def _backend(listener: npipes.aio.Listener) -> AioListener:
    raw = listener._raw
    assert isinstance(raw, AioListener)
    return raw


@pytest.mark.posix
def test_aio_unix_accept_whose_transport_setup_was_cancelled(pipe_name: str) -> None:
    """The transport set-up of an accepted client cancelled (as at a loop's shutdown):
    accept raises CancelledError, keeps nothing for later, the client is closed, and
    the listener goes on serving. The backend's accept is called directly, with a
    protocol factory that cancels the set-up task it runs in."""

    async def main() -> None:
        async with await npipes.aio.listen(pipe_name) as listener:
            raw = _backend(listener)
            protocols: list[_Recorder] = []

            def cancelling_factory() -> _Recorder:
                task = asyncio.current_task()
                assert task is not None
                task.cancel()  # the set-up ends at its next await
                protocols.append(_Recorder())
                return protocols[-1]

            client = await npipes.aio.connect(pipe_name, timeout=WAIT)
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(raw.accept(cancelling_factory), WAIT)
            assert not raw._pending
            await asyncio.wait_for(protocols[0].lost.wait(), WAIT)
            with pytest.raises(npipes.ConnectionClosedError):
                await client.recv(timeout=WAIT)
            client.abort()

            other = await npipes.aio.connect(pipe_name, timeout=WAIT)
            server = await listener.accept(timeout=WAIT)
            await other.send("ping", timeout=WAIT)
            assert await server.recv(timeout=WAIT) == "ping"
            await other.aclose()
            await server.aclose()

    asyncio.run(main())


@pytest.mark.posix
def test_aio_unix_close_closes_a_client_kept_for_the_next_accept(pipe_name: str) -> None:
    """An accept cancelled while its client's transport is set up keeps the client for
    the next accept; closing the listener instead closes that client once its
    transport is ready. The backend's accept is called directly, with a protocol
    factory that cancels the accept at that exact point (a race from outside)."""

    async def main() -> None:
        listener = await npipes.aio.listen(pipe_name)
        raw = _backend(listener)
        protocols: list[_Recorder] = []
        accepting: asyncio.Task[object] | None = None

        def factory() -> _Recorder:
            assert accepting is not None
            accepting.cancel()  # the accept is waiting for this set-up to finish
            protocols.append(_Recorder())
            return protocols[-1]

        client = await npipes.aio.connect(pipe_name, timeout=WAIT)
        accepting = asyncio.ensure_future(raw.accept(factory))
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(accepting, WAIT)
        assert len(raw._pending) == 1  # kept: a cancelled accept loses no client
        await listener.aclose()
        assert not raw._pending
        await asyncio.wait_for(protocols[0].lost.wait(), WAIT)
        with pytest.raises(npipes.ConnectionClosedError):
            await client.recv(timeout=WAIT)
        client.abort()

    asyncio.run(main())


@pytest.mark.posix
@pytest.mark.parametrize("kept", [False, True])
def test_aio_unix_accept_closes_a_client_whose_transport_setup_failed(
    pipe_name: str, kept: bool
) -> None:
    """A transport set-up that fails with OSError (the client left meanwhile; on
    CPython's loop only a protocol factory can raise it, on others the loop too)
    drops that client: its socket is closed at once, not left open until garbage
    collection (its peer would wait for an end of stream that never came).
    ``kept``: the set-up finished for a later accept (the first was cancelled)."""

    async def main() -> None:
        async with await npipes.aio.listen(pipe_name) as listener:
            raw = _backend(listener)
            accepting: asyncio.Task[object] | None = None

            def failing_factory() -> _Recorder:
                if kept:
                    assert accepting is not None
                    accepting.cancel()  # the set-up goes on, kept for the next accept
                raise ConnectionResetError("the transport set-up failed")

            client = await npipes.aio.connect(pipe_name, timeout=WAIT)
            accepting = asyncio.ensure_future(raw.accept(failing_factory))
            if kept:
                with pytest.raises(asyncio.CancelledError):
                    await asyncio.wait_for(accepting, WAIT)
                assert len(raw._pending) == 1
                accepting = asyncio.ensure_future(raw.accept(_Recorder))
            # The failed client is dropped and the accept waits for the next one; the
            # dropped client sees its end of stream now, not at garbage collection.
            with pytest.raises(npipes.ConnectionClosedError):
                await client.recv(timeout=WAIT)
            assert not accepting.done()
            accepting.cancel()
            await asyncio.gather(accepting, return_exceptions=True)
            client.abort()

    asyncio.run(main())
