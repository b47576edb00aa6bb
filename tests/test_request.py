"""``Connection.request`` (sync and asyncio) against a reply server in another process.

Each reply derives from its request (``reconnect_peers.reply``), so a caller
that got anyone else's reply is caught.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import Any

import pytest

import npipes
import npipes.aio
import reconnect_peers
from helpers import CTX, finish, start
from reconnect_peers import reply

WAIT = 60.0


def _event(events: Any, kind: str, timeout: float = WAIT) -> tuple[Any, ...]:
    """The next event of ``kind`` from a peer's queue (others are skipped)."""
    while True:
        try:
            event: tuple[Any, ...] = events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no {kind!r} event from the peer in {timeout} s") from None
        if event[0] == kind:
            return event


@pytest.fixture
def server(pipe_name: str) -> Any:
    """A reply server in another process, serving one client until it closes."""
    events = CTX.Queue()
    proc = start(reconnect_peers.reply_server, pipe_name, events)
    _event(events, "ready")
    yield events
    _event(events, "done")  # drains the queue: a full queue pipe would block the peer's exit
    assert finish(proc) == 0


def test_request_from_8_threads_each_gets_its_own_reply(pipe_name: str, server: Any) -> None:
    with npipes.connect(pipe_name, timeout=WAIT) as conn:
        errors: list[BaseException] = []
        counts = [0] * 8

        def worker(thread: int) -> None:
            try:
                for seq in range(50):
                    message: bytes | str = f"t{thread}-{seq}"
                    if seq % 2:
                        message = f"t{thread}-{seq}".encode() * (seq + 1)
                    assert conn.request(message, timeout=WAIT) == reply(message)
                    counts[thread] += 1
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT * 2)
        assert not errors, errors
        assert counts == [50] * 8


def test_late_reply_is_not_handed_to_the_next_caller(pipe_name: str, server: Any) -> None:
    with npipes.connect(pipe_name, timeout=WAIT) as conn:
        with pytest.raises(npipes.PipeTimeoutError):
            conn.request(b"slow 1", timeout=0.5)
        with pytest.raises(npipes.PipeTimeoutError):
            conn.request("slow 2", timeout=0.2)
        # Both late replies arrive before this one's; neither is returned for it.
        assert conn.request(b"next", timeout=WAIT) == b"re:next"
        assert conn.request("then", timeout=WAIT) == "re:then"
        assert conn.reconnects == 0
        assert not conn.closed


def test_stale_error_reply_is_dropped_and_own_error_reply_raises(
    pipe_name: str, server: Any
) -> None:
    with npipes.connect(pipe_name, timeout=WAIT) as conn:
        with pytest.raises(npipes.RemoteError) as info:
            conn.request(b"fail now", timeout=WAIT)
        assert info.value.remote_type == "ValueError"
        assert conn.request(b"after", timeout=WAIT) == b"re:after"  # still usable
        # The late error reply to a request that timed out is skipped quietly.
        with pytest.raises(npipes.PipeTimeoutError):
            conn.request(b"slow, then fail", timeout=0.5)
        assert conn.request(b"own", timeout=WAIT) == b"re:own"


def test_timeout_waiting_for_the_turn_sends_nothing(pipe_name: str, server: Any) -> None:
    """A request that times out before its turn sent nothing: no reply is skipped for it."""
    with npipes.connect(pipe_name, timeout=WAIT) as conn:
        got: list[bytes | str] = []
        slow = threading.Thread(target=lambda: got.append(conn.request(b"slow a", timeout=WAIT)))
        slow.start()
        _event(server, "got")  # the slow request is out; its caller holds the turn
        with pytest.raises(npipes.PipeTimeoutError, match="waiting for another thread"):
            conn.request(b"never sent", timeout=0.3)
        slow.join(WAIT)
        assert got == [b"re:slow a"]
        assert conn.request(b"b", timeout=WAIT) == b"re:b"
        assert conn.request(b"c", timeout=WAIT) == b"re:c"


def test_request_crc(pipe_name: str) -> None:
    """crc=True sends the request with a CRC-32 and requires one on the reply."""
    events = CTX.Queue()
    proc = start(reconnect_peers.reply_server, pipe_name, events)
    _event(events, "ready")
    with npipes.connect(pipe_name, timeout=WAIT) as conn:
        # The server replies without a CRC: the reply is refused, and used up.
        with pytest.raises(npipes.ChecksumError):
            conn.request(b"x", timeout=WAIT, crc=True)
        assert conn.request(b"y", timeout=WAIT) == b"re:y"
    _event(events, "done")
    assert finish(proc) == 0
    # A server that sends CRCs (and requires them): the round trip passes both checks.
    proc = start(reconnect_peers.reply_server, pipe_name, events, 1, None, False, True, None, True)
    _event(events, "ready")
    with npipes.connect(pipe_name, timeout=WAIT) as conn:
        assert conn.request(b"z", timeout=WAIT, crc=True) == b"re:z"
        assert conn.request("text", timeout=WAIT, crc=True) == "re:text"
    _event(events, "done")
    assert finish(proc) == 0


def test_request_type_error_sends_nothing(pipe_name: str, server: Any) -> None:
    with npipes.connect(pipe_name, timeout=WAIT) as conn:
        with pytest.raises(TypeError):
            conn.request(12, timeout=WAIT)  # type: ignore[arg-type]
        assert conn.request(b"ok", timeout=WAIT) == b"re:ok"


def test_aio_request_from_many_tasks(pipe_name: str, server: Any) -> None:
    async def main() -> None:
        async with await npipes.aio.connect(pipe_name, timeout=WAIT) as conn:

            async def task(number: int) -> None:
                for seq in range(20):
                    message = f"task{number}-{seq}".encode() * (1 + seq % 3)
                    assert await conn.request(message, timeout=WAIT) == reply(message)

            async with asyncio.TaskGroup() as group:
                for number in range(32):
                    group.create_task(task(number))

    asyncio.run(main())


def test_aio_cancelled_and_timed_out_requests_leave_no_stale_reply(
    pipe_name: str, server: Any
) -> None:
    async def main() -> None:
        async with await npipes.aio.connect(pipe_name, timeout=WAIT) as conn:
            with pytest.raises(npipes.PipeTimeoutError):
                await conn.request(b"slow x", timeout=0.5)
            pending = asyncio.create_task(conn.request("slow y"))
            # Cancel once the request is out (the server saw it).
            await asyncio.get_running_loop().run_in_executor(None, _event, server, "got")
            await asyncio.get_running_loop().run_in_executor(None, _event, server, "got")
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
            with pytest.raises(npipes.RemoteError):
                await conn.request(b"fail z", timeout=WAIT)
            assert await conn.request("next", timeout=WAIT) == "re:next"
            assert not conn.closed

    asyncio.run(main())


@pytest.mark.posix
def test_ctrl_c_waiting_for_the_reply_leaves_no_stale_reply(pipe_name: str, server: Any) -> None:
    """Ctrl+C while the reply is awaited: the connection stays usable, and the late
    reply is skipped by the next request."""
    import signal

    me = threading.get_ident()

    def interrupt() -> None:
        _event(server, "got")  # the request is out
        # ... and its caller waits for the reply (holds the receive lock): a Ctrl+C
        # still inside send() would close the connection (the documented send rule).
        deadline = time.monotonic() + WAIT
        while not conn._recv_lock.locked() and time.monotonic() < deadline:
            time.sleep(0.001)
        signal.pthread_kill(me, signal.SIGINT)

    with npipes.connect(pipe_name, timeout=WAIT) as conn:
        thread = threading.Thread(target=interrupt)
        thread.start()
        with pytest.raises(KeyboardInterrupt):
            conn.request(b"slow ctrl-c", timeout=WAIT)
        thread.join(WAIT)
        assert not conn.closed
        assert conn.request(b"next", timeout=WAIT) == b"re:next"


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_request_against_serve_respond_and_its_restart(pipe_name: str, kind: str) -> None:
    """``npipes.serve(respond=...)`` (sync and asyncio servers): 8 threads each get their
    own reply, an error reply raises RemoteError, and a reconnecting client carries on
    across a restart of the server."""
    import respond_peers

    def run_server() -> tuple[Any, Any]:
        ready, stop = CTX.Event(), CTX.Event()
        proc = start(respond_peers.serve, pipe_name, kind, ready, stop, None, {})
        assert ready.wait(WAIT)
        return proc, stop

    proc, stop = run_server()
    with npipes.connect(pipe_name, timeout=WAIT, reconnect=True) as conn:
        errors: list[BaseException] = []

        def worker(thread: int) -> None:
            try:
                for seq in range(20):
                    word = f"t{thread}-{seq}"
                    assert conn.request(f"upper:{word}", timeout=WAIT) == word.upper()
                    assert conn.request(word.encode(), timeout=WAIT) == word.encode()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT * 2)
        assert not errors, errors
        with pytest.raises(npipes.RemoteError) as info:
            conn.request("raise:boom", timeout=WAIT)
        assert info.value.remote_type == "KeyError"
        assert conn.request("echo:still usable", timeout=WAIT) == "still usable"
        stop.set()
        assert finish(proc) == 0
        proc, stop = run_server()
        assert conn.request("upper:again", timeout=WAIT) == "AGAIN"
        assert conn.reconnects == 1
    stop.set()
    assert finish(proc) == 0
