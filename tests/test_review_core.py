"""Review of the connection core and its drivers: defects found by reading them, each
shown on real sockets (no mocks) and fixed."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
import weakref
from collections.abc import Iterator

import pytest

import npipes
import npipes.aio
from npipes._auth import connect_side
from npipes._frame import FrameDecoder, encode_frame
from npipes._protocol import READ_AHEAD

WAIT = 30.0


async def _aio_pair(
    name: str, **options: object
) -> tuple[npipes.aio.Listener, npipes.aio.Connection, npipes.aio.Connection]:
    listener = await npipes.aio.listen(name, **options)  # type: ignore[arg-type]
    accepting = asyncio.ensure_future(listener.accept(timeout=WAIT))
    client = await npipes.aio.connect(name, timeout=WAIT, **options)  # type: ignore[arg-type]
    return listener, client, await accepting


def _handshake_then_send(name: str, key: bytes, first: bytes) -> None:
    """A client that runs the authkey handshake by hand and sends its last handshake
    message and its first message in one write (as a fast client's bytes may arrive)."""
    with npipes.connect(name, framing="raw", timeout=WAIT) as raw:
        decoder = FrameDecoder()
        steps = connect_side(key)
        step = next(steps)
        while True:
            if step is None:
                frame = decoder.next_frame()
                while frame is None:
                    decoder.feed_data(raw.recv(timeout=WAIT))  # type: ignore[arg-type]
                    frame = decoder.next_frame()
                step = steps.send(frame.message)  # type: ignore[arg-type]
                continue
            out = encode_frame(step)
            try:
                step = steps.send(None)
            except StopIteration:
                raw.send(out + encode_frame(first))  # WELCOME and the first message together
                break
            raw.send(out)
        raw.recv(timeout=WAIT)  # wait for the server's reply before closing


# -- aio: the handshake's size cap must not outlive the handshake ----------------------------


def test_aio_first_message_after_the_handshake_is_not_held_to_the_handshake_cap(
    pipe_name: str,
) -> None:
    first = b"f" * 1000  # above the 256-byte pre-authentication cap; the peer is authenticated

    async def main() -> None:
        async with await npipes.aio.listen(pipe_name, authkey=b"key") as listener:
            loop = asyncio.get_running_loop()
            client = loop.run_in_executor(None, _handshake_then_send, pipe_name, b"key", first)
            try:
                conn = await listener.accept(timeout=WAIT)
                async with conn:
                    assert await conn.recv(timeout=WAIT) == first
                    await conn.send(b"ok", timeout=WAIT)
            finally:
                await client

    asyncio.run(main())


# -- aio: reading resumes after a message is dropped for a missing CRC -----------------------


def test_aio_reading_resumes_after_a_crc_required_error(pipe_name: str) -> None:
    big = b"b" * (READ_AHEAD + 1000)  # fills the read-ahead budget: reading pauses

    async def main() -> None:
        listener, client, server = await _aio_pair(pipe_name)
        try:
            await client.send(big, timeout=WAIT)  # no CRC
            with pytest.raises(npipes.ChecksumError):
                await server.recv(timeout=WAIT, crc=True)  # dropped: the queue is empty now
            await client.send(b"next", timeout=WAIT, crc=True)
            assert await server.recv(timeout=10, crc=True) == b"next"
        finally:
            client.abort()
            await server.aclose()
            await listener.aclose()

    asyncio.run(main())


def test_aio_recv_into_resumes_reading_after_a_crc_required_error(pipe_name: str) -> None:
    big = b"b" * (READ_AHEAD + 1000)

    async def main() -> None:
        listener, client, server = await _aio_pair(pipe_name)
        try:
            await client.send(big, timeout=WAIT)
            buffer = bytearray(len(big))
            with pytest.raises(npipes.ChecksumError):
                await server.recv_into(buffer, timeout=WAIT, crc=True)
            await client.send(b"next", timeout=WAIT, crc=True)
            assert await server.recv_into(buffer, timeout=10, crc=True) == 4
            assert buffer[:4] == b"next"
        finally:
            client.abort()
            await server.aclose()
            await listener.aclose()

    asyncio.run(main())


# -- aio: aclose() ends the calls waiting on the connection at once --------------------------


def test_aio_aclose_ends_a_pending_recv_while_it_flushes(pipe_name: str) -> None:
    async def main() -> None:
        listener, client, server = await _aio_pair(pipe_name, max_message_size=None)
        try:
            server._transport.pause_reading()  # the peer stops reading: the flush will wait
            with contextlib.suppress(npipes.PipeTimeoutError):
                await client.send(b"x" * (32 << 20), timeout=0.5)
            receiving = asyncio.ensure_future(client.recv())
            await asyncio.sleep(0)  # the recv is waiting
            closing = asyncio.ensure_future(client.aclose(flush_timeout=60))
            with pytest.raises(npipes.ConnectionClosedError):
                await asyncio.wait_for(receiving, 10)
            assert not closing.done()  # still flushing, as asked
            client.abort()
            await closing
        finally:
            client.abort()
            await server.aclose()
            await listener.aclose()

    asyncio.run(main())


# -- servers: a handler may close its own server ------------------------------------------


def test_sync_server_close_from_a_handler(pipe_name: str) -> None:
    errors: list[BaseException] = []
    closed = threading.Event()
    server: npipes.server.Server | None = None

    def handler(conn: npipes.Connection) -> None:
        assert conn.recv(timeout=WAIT) == b"stop"
        assert server is not None
        try:
            server.close()
        except BaseException as exc:
            errors.append(exc)
            raise
        finally:
            closed.set()

    server = npipes.serve(pipe_name, handler)
    try:
        with npipes.connect(pipe_name, timeout=WAIT) as client:
            client.send(b"stop")
            assert closed.wait(WAIT)
        assert errors == []
        assert server.listener.closed
    finally:
        server.close()


def test_aio_server_aclose_from_a_handler(pipe_name: str) -> None:
    outcome: list[str] = []

    async def main() -> None:
        server: npipes.aio.Server | None = None
        done = asyncio.Event()

        async def handler(conn: npipes.aio.Connection) -> None:
            assert await conn.recv(timeout=WAIT) == b"stop"
            assert server is not None
            try:
                await server.aclose()
                outcome.append("closed")
            except asyncio.CancelledError:
                outcome.append("cancelled")
                raise
            finally:
                done.set()

        server = await npipes.aio.serve(pipe_name, handler)
        try:
            client = await npipes.aio.connect(pipe_name, timeout=WAIT)
            await client.send(b"stop")
            start = time.monotonic()
            await asyncio.wait_for(done.wait(), WAIT)
            elapsed = time.monotonic() - start
            client.abort()
        finally:
            await server.aclose()
        assert outcome == ["closed"]
        assert elapsed < 4.0  # not held up by the 5 s grace period waiting for itself

    asyncio.run(main())


# -- accept loops keep no finished connection alive while waiting for the next client -------


def _wait_until_collected(ref: weakref.ref[object], seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        gc.collect()
        if ref() is None:
            return True
        time.sleep(0.02)
    return False


def test_listener_iteration_keeps_no_finished_connection_alive(pipe_name: str) -> None:
    refs: list[weakref.ref[object]] = []
    handled = threading.Event()

    with npipes.listen(pipe_name) as listener:

        def serve() -> None:
            for conn in listener:
                with conn:
                    conn.recv(timeout=WAIT)
                refs.append(weakref.ref(conn))
                del conn
                handled.set()

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with npipes.connect(pipe_name, timeout=WAIT) as client:
                client.send(b"x" * 100_000)
                assert handled.wait(WAIT)
            assert _wait_until_collected(refs[0])  # while the loop waits for the next client
        finally:
            listener.close()
            thread.join(WAIT)


def test_aio_server_keeps_no_finished_connection_alive(pipe_name: str) -> None:
    async def main() -> None:
        refs: list[weakref.ref[object]] = []
        handled = asyncio.Event()

        async def handler(conn: npipes.aio.Connection) -> None:
            await conn.recv(timeout=WAIT)
            refs.append(weakref.ref(conn))
            handled.set()

        async with await npipes.aio.serve(pipe_name, handler) as server:
            client = await npipes.aio.connect(pipe_name, timeout=WAIT)
            await client.send(b"x" * 100_000)
            await asyncio.wait_for(handled.wait(), WAIT)
            await client.aclose()
            collected = False
            for _ in range(500):  # up to ~10 s: the handler's task ends, then its connection
                gc.collect()
                collected = not server.active and refs[0]() is None
                if collected:
                    break
                await asyncio.sleep(0.02)
            assert collected  # while the accept loop waits for the next client

    asyncio.run(main())


# -- aio read-ahead: bounded whatever the messages' size ----------------------------------


@pytest.mark.parametrize("kind", ["empty", "bad-crc"])
def test_aio_read_ahead_is_bounded_for_empty_messages_and_errors(pipe_name: str, kind: str) -> None:
    count = 100_000
    # An empty message is a 16-byte frame; a bad CRC costs 20 bytes and gives an error.
    frame = encode_frame(b"", crc=kind == "bad-crc")
    if kind == "bad-crc":
        frame = frame[:-1] + bytes([frame[-1] ^ 0xFF])

    async def main() -> None:
        listener, client, server = await _aio_pair(pipe_name)
        raw = client._transport
        try:
            raw.write(frame * count)  # straight to the transport: any frames a peer may send
            for _ in range(500):  # up to ~10 s for the reader to stop reading
                if server._protocol._read_paused or len(server._core._ready) >= count:
                    break
                await asyncio.sleep(0.02)
            queued = len(server._core._ready)
            assert queued < count // 4, f"{queued} decoded items queued, unread"
            # Nothing is lost: every message (or error) is still delivered, in order.
            got = 0
            while got < count:
                if kind == "empty":
                    got += len(await server.recv_many(count, timeout=WAIT))
                else:
                    with pytest.raises(npipes.ChecksumError):
                        await server.recv(timeout=WAIT)
                    got += 1
        finally:
            client.abort()
            await server.aclose()
            await listener.aclose()

    asyncio.run(main())


# -- a send that finds the peer gone ends sending, not the messages it sent before ----------


@contextlib.contextmanager
def _pair(name: str) -> Iterator[tuple[npipes.Connection, npipes.Connection]]:
    with npipes.listen(name) as listener:
        client = npipes.connect(name, timeout=WAIT)
        server = listener.accept(timeout=WAIT)
        try:
            yield client, server
        finally:
            client.close()
            server.close()


def test_send_to_a_departed_peer_keeps_what_it_sent_before(pipe_name: str) -> None:
    with _pair(pipe_name) as (client, server):
        server.send(b"last words")
        server.send("and more")
        server.close()
        with pytest.raises(npipes.ConnectionClosedError):
            client.send(b"too late", timeout=WAIT)
        assert client.recv(timeout=WAIT) == b"last words"
        assert client.recv(timeout=WAIT) == "and more"
        with pytest.raises(npipes.ConnectionClosedError):
            client.recv(timeout=WAIT)
        assert client.closed
        with pytest.raises(npipes.ConnectionClosedError):
            client.send(b"still too late", timeout=WAIT)


# -- a lock wait of any length (threading.TIMEOUT_MAX is ~49.7 days on Windows) ---------------


def test_recv_behind_another_recv_with_a_timeout_of_100_days(pipe_name: str) -> None:
    with _pair(pipe_name) as (client, server):
        got: list[object] = []
        first = threading.Thread(target=lambda: got.append(server.recv(timeout=WAIT)))
        first.start()
        second = threading.Thread(
            target=lambda: got.append(server.recv(timeout=100 * 86400.0)),
        )
        second.start()
        client.send(b"1")
        client.send(b"2")
        first.join(WAIT)
        second.join(WAIT)
        assert sorted(got) == [b"1", b"2"]  # type: ignore[type-var]


# -- options: a wrong type is a TypeError that says what is accepted, at the call ------------


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"backlog": "5"}, TypeError, "backlog must be an int"),
        ({"backlog": -1}, ValueError, "backlog must be an int >= 0"),
        ({"allowed_users": 5}, TypeError, "allowed_users must be a sequence of str"),
    ],
)
def test_listen_option_types(
    pipe_name: str, options: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        npipes.listen(pipe_name, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"max_connections": "5"}, TypeError, "max_connections must be an int"),
        ({"max_connections": 2.5}, TypeError, "max_connections must be an int"),
        ({"max_connections": True}, TypeError, "max_connections must be an int"),
        ({"max_connections": 0}, ValueError, "max_connections must be at least 1"),
        ({"handshake_timeout": "5"}, TypeError, "handshake_timeout must be None or a number"),
        ({"idle_timeout": [1]}, TypeError, "idle_timeout must be None or a number"),
        ({"idle_timeout": 0}, ValueError, "idle_timeout must be None or a number"),
    ],
)
def test_serve_option_types(
    pipe_name: str, options: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        npipes.serve(pipe_name, lambda conn: None, **options)  # type: ignore[arg-type]

    async def main() -> None:
        with pytest.raises(error, match=match):
            await npipes.aio.serve(pipe_name, _noop, **options)  # type: ignore[arg-type]

    asyncio.run(main())
    with npipes.listen(pipe_name):
        pass  # nothing was left listening


async def _noop(conn: npipes.aio.Connection) -> None:
    pass


# -- a second close() waits for the first one, instead of returning while handlers run ------


def test_sync_server_second_close_waits_for_the_first(pipe_name: str) -> None:
    entered = threading.Event()

    def handler(conn: npipes.Connection) -> None:
        entered.set()
        with contextlib.suppress(npipes.ConnectionClosedError):
            conn.recv()  # until close() closes it

    server = npipes.serve(pipe_name, handler)
    try:
        with npipes.connect(pipe_name, timeout=WAIT):
            assert entered.wait(WAIT)
            first = threading.Thread(target=server.close, kwargs={"timeout": 1.0})
            first.start()
            while not server.listener.closed:
                time.sleep(0.01)  # the first close() is under way
            server.close()
            assert server.active == 0
            first.join(WAIT)
    finally:
        server.close()
