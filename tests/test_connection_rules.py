"""The connection core's rules, through the real sync and asyncio front ends on real pipes.

An exception that tears a frame closes the connection; one that touched
nothing leaves it usable; timeouts of any size; lock waits bounded by the
call's timeout; options checked at the call; both front ends with the same
features.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator

import pytest

import npipes
import npipes.aio
from npipes._protocol import READ_AHEAD


class Interrupt(Exception):
    """What the test's signal handler raises in the middle of a call."""


@contextlib.contextmanager
def pair(name: str, **options: object) -> Iterator[tuple[npipes.Connection, npipes.Connection]]:
    with npipes.listen(name, **options) as listener:  # type: ignore[arg-type]
        client = npipes.connect(name, timeout=10, **options)  # type: ignore[arg-type]
        server = listener.accept(timeout=10)
        try:
            yield client, server
        finally:
            client.close()
            server.close()


@contextlib.contextmanager
def alarm_after(seconds: float) -> Iterator[None]:
    def raise_interrupt(signum: int, frame: object) -> None:
        raise Interrupt

    old = signal.signal(signal.SIGALRM, raise_interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


posix_signals = pytest.mark.skipif(
    sys.platform == "win32", reason="SIGALRM (setitimer) is POSIX only"
)


# -- interruption and timeouts --------------------------------------------------------


@posix_signals
def test_send_interrupted_mid_frame_closes_the_connection(pipe_name: str) -> None:
    with pair(pipe_name, max_message_size=None) as (client, _server):
        with pytest.raises(Interrupt), alarm_after(0.3):
            client.send(b"x" * (64 << 20))  # the peer does not read: blocks mid-frame
        assert client.closed
        with pytest.raises(npipes.ConnectionClosedError, match="interrupted"):
            client.send(b"next")


@posix_signals
def test_recv_interrupted_before_any_byte_leaves_it_usable(pipe_name: str) -> None:
    with pair(pipe_name) as (client, server):
        with pytest.raises(Interrupt), alarm_after(0.2):
            server.recv()
        assert not server.closed
        client.send(b"after")
        assert server.recv(timeout=10) == b"after"


@posix_signals
def test_recv_into_interrupted_mid_frame_never_reports_unwritten_data(pipe_name: str) -> None:
    with npipes.listen(pipe_name) as listener:
        raw = npipes.connect(pipe_name, framing="raw", timeout=10)
        with listener.accept(timeout=10) as server, raw:
            frame = npipes._frame.encode_frame(b"A" * 1000)
            raw.send(frame[:500])
            first = bytearray(2000)
            with pytest.raises(Interrupt), alarm_after(0.3):
                server.recv_into(first)
            with contextlib.suppress(npipes.ConnectionClosedError):
                raw.send(frame[500:])  # the rest of it, if the connection were still open
            second = bytearray(2000)
            with pytest.raises(npipes.ConnectionClosedError):
                server.recv_into(second, timeout=5)
            assert server.closed


def test_recv_timeout_touching_nothing_leaves_it_usable(pipe_name: str) -> None:
    with pair(pipe_name) as (client, server):
        with pytest.raises(npipes.PipeTimeoutError) as info:
            server.recv(timeout=0.05)
        assert not info.value.partial
        client.send("still here")
        assert server.recv(timeout=10) == "still here"


@pytest.mark.parametrize("timeout", [30 * 86400.0, float("inf"), 1e300])
def test_timeouts_of_any_size(pipe_name: str, timeout: float) -> None:
    with pair(pipe_name) as (client, server):
        timer = threading.Timer(0.2, client.send, args=(b"late",))
        timer.start()
        try:
            assert server.recv(timeout=timeout) == b"late"
            server.send(b"back", timeout=timeout)
            assert client.recv(timeout=timeout) == b"back"
        finally:
            timer.join()


def test_recv_timeout_covers_waiting_for_another_threads_recv(pipe_name: str) -> None:
    with pair(pipe_name) as (client, server):
        blocked = threading.Thread(target=lambda: server.recv(timeout=30), daemon=True)
        blocked.start()
        time.sleep(0.1)  # let it take the receive lock
        start = time.monotonic()
        with pytest.raises(npipes.PipeTimeoutError, match="another thread"):
            server.recv(timeout=0.5)
        assert time.monotonic() - start < 5
        client.send(b"for the blocked one")
        blocked.join(10)
        assert not blocked.is_alive()


def test_close_from_another_thread_during_timed_recv(pipe_name: str) -> None:
    for _ in range(30):
        with pair(pipe_name) as (_client, server):
            errors: list[BaseException] = []

            def receive(
                conn: npipes.Connection = server, errors: list[BaseException] = errors
            ) -> None:
                try:
                    conn.recv(timeout=10)
                except BaseException as exc:  # noqa: BLE001 - recorded and checked below
                    errors.append(exc)

            thread = threading.Thread(target=receive)
            thread.start()
            time.sleep(0.01)
            server.close()
            thread.join(10)
            assert len(errors) == 1
            assert isinstance(errors[0], npipes.ConnectionClosedError), repr(errors[0])


# -- options and misuse fail at the call ---------------------------------------------


def test_bad_options_fail_at_once_before_waiting(pipe_name: str) -> None:
    start = time.monotonic()
    with pytest.raises(TypeError, match="crc"):
        npipes.connect(pipe_name, crc="yes", wait_for_listener=True, timeout=30)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unexpected option"):
        npipes.connect(pipe_name, backlog=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="no checksum"):
        npipes.listen(pipe_name, crc=True, framing="lines")
    with pytest.raises(ValueError, match="backlog"):
        npipes.listen(pipe_name, backlog=-1)
    with pytest.raises(TypeError, match="timeout"):
        npipes.connect(pipe_name, timeout="5", wait_for_listener=True)  # type: ignore[arg-type]
    assert time.monotonic() - start < 2


def test_send_crc_argument_checked(pipe_name: str) -> None:
    with pair(pipe_name) as (client, _server):
        with pytest.raises(TypeError, match="crc must be"):
            client.send(b"x", crc="yes")  # type: ignore[arg-type]
        assert not client.closed


# -- authkey: limits before authentication, iteration skips failures ----------------------


def test_authkey_listener_refuses_a_huge_header_before_reading_it(pipe_name: str) -> None:
    with npipes.listen(pipe_name, authkey=b"key") as listener:
        raw = npipes.connect(pipe_name, framing="raw", timeout=10)
        with raw:
            header = b"NP\x01\x00\x00\x00\x00\x00" + (1 << 30).to_bytes(8, "little")
            accepted: list[BaseException] = []

            def attacker() -> None:
                with contextlib.suppress(npipes.NpipesError):
                    raw.recv(timeout=10)  # the challenge
                    raw.send(header + b"\0" * 100)

            thread = threading.Thread(target=attacker)
            thread.start()
            start = time.monotonic()
            try:
                listener.accept(timeout=10)
            except npipes.NpipesError as exc:
                accepted.append(exc)
            thread.join(10)
            assert accepted
            assert isinstance(accepted[0], npipes.MessageTooLargeError)
            assert time.monotonic() - start < 5


def test_listener_iteration_skips_clients_that_fail_the_handshake(pipe_name: str) -> None:
    with npipes.listen(pipe_name, authkey=b"right") as listener:
        results: list[object] = []

        def clients() -> None:
            with contextlib.suppress(npipes.NpipesError):
                npipes.connect(pipe_name, authkey=b"wrong", timeout=10).close()
            with npipes.connect(pipe_name, authkey=b"right", timeout=10) as good:
                good.send(b"hello")
                results.append(good.recv(timeout=10))

        thread = threading.Thread(target=clients)
        thread.start()
        for conn in listener:
            with conn:
                assert conn.recv(timeout=10) == b"hello"
                conn.send(b"welcome")
            break
        thread.join(10)
        assert results == [b"welcome"]


# -- asyncio: the same features and rules ------------------------------------------------


async def _aio_pair(
    name: str, **options: object
) -> tuple[npipes.aio.Listener, npipes.aio.Connection, npipes.aio.Connection]:
    listener = await npipes.aio.listen(name, **options)  # type: ignore[arg-type]
    accepting = asyncio.ensure_future(listener.accept(timeout=10))
    client = await npipes.aio.connect(name, timeout=10, **options)  # type: ignore[arg-type]
    return listener, client, await accepting


def test_aio_has_recv_into_send_many_recv_many_abort(pipe_name: str) -> None:
    async def main() -> None:
        listener, client, server = await _aio_pair(pipe_name)
        try:
            assert await client.send_many([b"a", "b", b"c" * 100_000]) == 3
            buf = bytearray(10)
            assert await server.recv_into(buf, timeout=10) == 1
            assert buf[:1] == b"a"
            got = await server.recv_many(10, timeout=10)
            while len(got) < 2:
                got += await server.recv_many(10, timeout=10)
            assert got == ["b", b"c" * 100_000]
            await client.send(b"0123456789abc")
            with pytest.raises(npipes.BufferTooSmallError):
                await server.recv_into(bytearray(4), timeout=10)
            assert await server.recv(timeout=10) == b"0123456789abc"
            client.abort()
            assert client.closed
            with pytest.raises(npipes.ConnectionClosedError):
                await server.recv(timeout=10)
        finally:
            await server.aclose()
            await listener.aclose()

    asyncio.run(main())


def test_aio_concurrent_recvs_each_get_one_message(pipe_name: str) -> None:
    async def main() -> None:
        listener, client, server = await _aio_pair(pipe_name)
        try:
            first = asyncio.ensure_future(server.recv(timeout=10))
            second = asyncio.ensure_future(server.recv(timeout=10))
            await asyncio.sleep(0.05)
            await client.send(b"1")
            await client.send(b"2")
            assert sorted([await first, await second]) == [b"1", b"2"]  # type: ignore[type-var]
        finally:
            await client.aclose()
            await server.aclose()
            await listener.aclose()

    asyncio.run(main())


def test_aio_send_copies_a_mutable_buffer(pipe_name: str) -> None:
    async def main() -> None:
        listener, client, server = await _aio_pair(pipe_name, max_message_size=None)
        try:
            data = bytearray(b"A" * (16 << 20))
            server._transport.pause_reading()  # the peer is not reading yet
            with pytest.raises(npipes.PipeTimeoutError):
                await client.send(data, timeout=0.2)
            data[:] = b"B" * len(data)  # reused after the call, as callers do
            server._transport.resume_reading()
            got = await server.recv(timeout=30)
            assert got == b"A" * (16 << 20)
        finally:
            await client.aclose()
            await server.aclose()
            await listener.aclose()

    asyncio.run(main())


def test_aio_read_ahead_is_bounded_in_bytes(pipe_name: str) -> None:
    message = b"m" * (1 << 20)

    async def main() -> None:
        listener, client, server = await _aio_pair(pipe_name, max_message_size=None)
        try:
            sent = 0
            with contextlib.suppress(npipes.PipeTimeoutError):
                while sent < 200:
                    await client.send(message, timeout=0.5)
                    sent += 1
            await asyncio.sleep(0.2)
            queued = server._core._ready_bytes
            assert queued <= READ_AHEAD + len(message)
            for _ in range(sent):
                assert await server.recv(timeout=30) == message
        finally:
            client.abort()
            await server.aclose()
            await listener.aclose()

    asyncio.run(main())


def test_aio_recv_timeout_and_cancel_consume_nothing(pipe_name: str) -> None:
    async def main() -> None:
        listener, client, server = await _aio_pair(pipe_name)
        try:
            with pytest.raises(npipes.PipeTimeoutError):
                await server.recv(timeout=0.05)
            task = asyncio.ensure_future(server.recv_into(bytearray(10)))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await client.send(b"whole")
            assert await server.recv(timeout=10) == b"whole"
        finally:
            await client.aclose()
            await server.aclose()
            await listener.aclose()

    asyncio.run(main())


@pytest.mark.posix  # half-close (write_eof) is a socket feature; Windows pipes have none
def test_aio_handler_can_reply_to_a_half_closed_peer(pipe_name: str) -> None:
    async def main() -> None:
        listener, client, server = await _aio_pair(pipe_name)
        try:
            await client.send(b"question")
            client._transport.write_eof()  # half-close: no more from the client
            assert await server.recv(timeout=10) == b"question"
            await server.send(b"answer", timeout=10)
            assert await client.recv(timeout=10) == b"answer"
        finally:
            await client.aclose()
            await server.aclose()
            await listener.aclose()

    asyncio.run(main())


def test_close_racing_accept_is_always_connection_closed(pipe_name: str) -> None:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: the race shows
    try:
        _close_racing_accept(pipe_name)
    finally:
        sys.setswitchinterval(old)


def _close_racing_accept(pipe_name: str) -> None:
    for i in range(300):
        listener = npipes.listen(f"{pipe_name}-{i}")
        errors: list[BaseException] = []

        def accept(
            listener: npipes.Listener = listener, errors: list[BaseException] = errors
        ) -> None:
            try:
                listener.accept(timeout=10)
            except BaseException as exc:  # noqa: BLE001 - recorded and checked below
                errors.append(exc)

        thread = threading.Thread(target=accept)
        thread.start()
        time.sleep(i % 7 * 1e-5)
        listener.close()
        thread.join(10)
        assert len(errors) == 1
        assert isinstance(errors[0], npipes.ConnectionClosedError), repr(errors[0])
