"""POSIX backends under stress: full backlogs, fork, cancellation, timeouts,
races with close, descriptor exhaustion, and errors that name their cause (issue 10)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import npipes
import npipes.aio
import npipes.fifo
from npipes import (
    ConnectionClosedError,
    PipeBusyError,
    PipeInUseError,
    PipeNotFoundError,
    PipeTimeoutError,
)
from npipes._backend import ListenOptions, connect, listen
from npipes._deadline import Deadline
from npipes._names import resolve

pytestmark = pytest.mark.posix
WAIT = 30.0
PEERS = str(Path(__file__).with_name("posix_peers.py"))


def _fill_backlog(path: str) -> list[socket.socket]:
    """Connect raw clients until the listener's backlog is full (EAGAIN)."""
    held = []
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(path)
        except BlockingIOError:
            sock.close()
            return held
        held.append(sock)
        assert len(held) < 1000


@pytest.fixture
def tiny_backlog(pipe_name: str) -> Iterator[tuple[str, list[socket.socket]]]:
    listener = listen(resolve(pipe_name), ListenOptions(backlog=1))
    held = _fill_backlog(listener.address)
    yield pipe_name, held
    for sock in held:
        sock.close()
    listener.close()


# -- aio connect to a full backlog ---------------------------------------------------


def test_aio_connect_to_a_full_backlog_is_busy_not_a_phantom(
    tiny_backlog: tuple[str, list[socket.socket]],
) -> None:
    name, _ = tiny_backlog

    async def send_into_nothing() -> None:
        conn = await npipes.aio.connect(name, timeout=0.5)
        await conn.send(b"into nothing")  # what the old code did: "success"
        await conn.aclose()

    async def main() -> None:
        with pytest.raises(PipeBusyError):
            await send_into_nothing()

    asyncio.run(main())


def test_aio_connect_retries_until_the_backlog_has_room(pipe_name: str) -> None:
    async def main() -> None:
        listener = await npipes.aio.listen(pipe_name, backlog=1)
        async with listener:
            held = _fill_backlog(listener.address)
            client_task = asyncio.create_task(npipes.aio.connect(pipe_name, timeout=WAIT))
            await asyncio.sleep(0.2)  # the client is retrying now (if not, nothing is lost)
            assert not client_task.done()
            accepted = [await listener.accept(timeout=WAIT) for _ in held]  # room again
            client = await client_task
            async with client, await listener.accept(timeout=WAIT) as conn:
                await client.send("made it")
                assert await conn.recv(timeout=WAIT) == "made it"
            for conn in accepted:
                await conn.aclose()
            for sock in held:
                sock.close()

    asyncio.run(main())


# -- fork -------------------------------------------------------------------------------


def _in_child(action: object) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            action()  # type: ignore[operator]
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _assert_idle_timeout(call: object) -> None:
    """``call()`` times out after ~0.5 s without burning CPU (no wake-up left pending)."""
    cpu = time.process_time()
    with pytest.raises(PipeTimeoutError):
        call()  # type: ignore[operator]
    assert time.process_time() - cpu < 0.25


def test_forked_child_closing_leaves_parent_endpoint_and_connections(pipe_name: str) -> None:
    with npipes.listen(pipe_name) as listener:
        client = npipes.connect(pipe_name, timeout=WAIT)
        conn = listener.accept(timeout=WAIT)

        def child() -> None:
            conn.close()
            client.close()
            listener.close()

        assert _in_child(child) == 0
        # The child's close did not poke the parent's accept (it would spin on it).
        _assert_idle_timeout(lambda: listener.accept(timeout=0.5))
        # The parent's connection still works both ways.
        client.send("after fork")
        assert conn.recv(timeout=WAIT) == "after fork"
        conn.send("back")
        assert client.recv(timeout=WAIT) == "back"
        client.close()
        conn.close()
        # The parent still owns the name: the socket file and the lock are there.
        assert os.path.exists(listener.address)
        with pytest.raises(PipeInUseError):
            npipes.listen(pipe_name)
        with npipes.connect(pipe_name, timeout=WAIT) as again, listener.accept(timeout=WAIT):
            again.send("still listening")


def test_forked_child_closing_a_fifo_reader_keeps_the_fifo(pipe_name: str) -> None:
    with npipes.fifo.open_reader(pipe_name) as reader:
        assert _in_child(reader.close) == 0
        assert os.path.exists(npipes.fifo.path(pipe_name))
        _assert_idle_timeout(lambda: reader.recv(timeout=0.5))
        with npipes.fifo.open_writer(pipe_name, timeout=WAIT) as writer:
            writer.send("after fork")
            assert reader.recv(timeout=WAIT) == "after fork"


# -- aio accept cancellation ----------------------------------------------------------------


def test_cancelling_aio_accept_never_loses_a_client(pipe_name: str) -> None:
    """Cancel accept at every point of its first steps; every client is still accepted."""

    async def main() -> None:
        async with await npipes.aio.listen(pipe_name) as listener:
            for steps in range(12):
                client = npipes.connect(pipe_name, timeout=WAIT)  # queued in the backlog
                task = asyncio.create_task(listener.accept())
                for _ in range(steps):
                    await asyncio.sleep(0)
                task.cancel()
                try:
                    conn = await task
                except asyncio.CancelledError:
                    conn = await listener.accept(timeout=5)
                async with conn:
                    client.send(f"client {steps}")
                    assert await conn.recv(timeout=WAIT) == f"client {steps}"
                client.close()

    asyncio.run(main())


# -- send timeouts --------------------------------------------------------------------------


def test_unix_send_timeout_is_a_pipe_timeout_with_partial(pipe_name: str) -> None:
    listener = listen(resolve(pipe_name), ListenOptions())
    try:
        client = connect(resolve(pipe_name), Deadline(WAIT), wait_for_listener=False)
        server = listener.accept(Deadline(WAIT))
        try:
            with pytest.raises(PipeTimeoutError) as info:
                client.send([bytes(64 << 20)], Deadline(0.3))  # nobody reads
            assert info.value.partial is True
            with pytest.raises(PipeTimeoutError) as info:
                client.send([b"a", b"b"], Deadline(0.1))  # nothing fits any more
            assert info.value.partial is False
        finally:
            client.close()
            server.close()
    finally:
        listener.close()


def test_fifo_send_timeout_is_a_pipe_timeout_with_partial(pipe_name: str) -> None:
    from npipes._backend.fifo import open_fifo

    address = resolve(pipe_name, suffix=".fifo")
    reader = open_fifo(address, write=False, deadline=Deadline(WAIT), create=True)
    writer = open_fifo(address, write=True, deadline=Deadline(WAIT), create=False)
    try:
        with pytest.raises(PipeTimeoutError) as info:
            writer.send([bytes(8 << 20)], Deadline(0.3))
        assert info.value.partial is True
    finally:
        writer.close()
        reader.close()


# -- close from another thread during a timed recv ------------------------------------------


@pytest.mark.parametrize("kind", ["unix", "fifo"])
def test_close_during_timed_recv_is_connection_closed(pipe_name: str, kind: str) -> None:
    """Race close() against recv_into(deadline) many times: only ConnectionClosedError."""
    from npipes._backend.fifo import open_fifo

    listener = listen(resolve(pipe_name), ListenOptions()) if kind == "unix" else None
    try:
        for _ in range(300):
            if listener is not None:
                stream = connect(resolve(pipe_name), Deadline(WAIT), wait_for_listener=False)
                other = listener.accept(Deadline(WAIT))
            else:
                address = resolve(pipe_name, suffix=".fifo")
                stream = open_fifo(address, write=False, deadline=Deadline(WAIT), create=True)
                other = None
            outcome: list[BaseException | int] = []
            started = threading.Event()

            def reader(
                stream: object = stream,
                outcome: list[object] = outcome,
                started: threading.Event = started,
            ) -> None:
                started.set()
                try:
                    outcome.append(stream.recv_into(memoryview(bytearray(10)), Deadline(10)))  # type: ignore[attr-defined]
                except BaseException as exc:  # noqa: BLE001 - checked below
                    outcome.append(exc)

            thread = threading.Thread(target=reader)
            thread.start()
            started.wait()
            stream.close()
            thread.join(WAIT)
            assert len(outcome) == 1
            assert isinstance(outcome[0], ConnectionClosedError), outcome
            if other is not None:
                other.close()
    finally:
        if listener is not None:
            listener.close()


# -- errors that name their cause -------------------------------------------------------------


def test_listen_in_a_missing_directory_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    with pytest.raises(PipeNotFoundError) as info:
        npipes.listen(str(missing / "s.sock"))
    message = str(info.value)
    assert "nobody listens" not in message
    assert "directory" in message
    assert str(missing) in message


def test_listening_twice_in_one_process_says_this_process(pipe_name: str) -> None:
    with npipes.listen(pipe_name):
        with pytest.raises(PipeInUseError) as info:
            npipes.listen(pipe_name)
        assert "another process" not in str(info.value)
        assert "this process" in str(info.value)


# -- descriptor exhaustion ---------------------------------------------------------------------


def _run_peer(*args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, PEERS, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout.splitlines()[-1])
    return result


def test_listen_failing_part_way_leaks_nothing(pipe_name: str) -> None:
    result = _run_peer("listen_emfile", pipe_name)
    assert result["failures"], "no step of listen ran out of descriptors"
    assert result["leaks"] == []
    assert result["works"] is True


@pytest.mark.parametrize("flavour", ["sync", "aio"])
def test_accept_out_of_descriptors_waits_without_spinning(pipe_name: str, flavour: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, PEERS, "accept_emfile", pipe_name, flavour],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        with npipes.connect(pipe_name, timeout=WAIT) as client:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            client.send("hello")
            out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    result = json.loads(out.splitlines()[-1])
    assert result.get("message") == "hello", (result, err)
    assert result["freed_first"] is True
    # It waited about a second for descriptors; a spinning loop would use that much CPU.
    assert result["cpu"] < 0.5 * result["wall"], result


# -- very long timeouts ------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [30 * 86400.0, float("inf")], ids=["30-days", "inf"])
def test_very_long_timeouts_wait_and_wake(pipe_name: str, timeout: float) -> None:
    """poll() takes an int of ms: a 30-day or infinite deadline must not overflow it."""
    from npipes._backend.fifo import open_fifo

    listener = listen(resolve(pipe_name), ListenOptions())
    fifo = open_fifo(
        resolve(pipe_name, suffix=".fifo"), write=False, deadline=Deadline(WAIT), create=True
    )
    try:
        stream = connect(resolve(pipe_name), Deadline(timeout), wait_for_listener=True)
        server = listener.accept(Deadline(timeout))
        outcomes: list[BaseException] = []

        def wait(call: object) -> None:
            try:
                call()  # type: ignore[operator]
            except BaseException as exc:  # noqa: BLE001 - checked below
                outcomes.append(exc)

        buffer = memoryview(bytearray(10))
        calls = [
            lambda: stream.recv_into(buffer, Deadline(timeout)),
            lambda: fifo.recv_into(buffer, Deadline(timeout)),
            lambda: listener.accept(Deadline(timeout)),
        ]
        threads = [threading.Thread(target=wait, args=(call,)) for call in calls]
        for thread in threads:
            thread.start()
        time.sleep(0.3)  # let them block (if one is late, it sees the close at once)
        server.send([b"x" * 5], Deadline(timeout))
        threads[0].join(WAIT)
        fifo.close()
        listener.close()
        for thread in threads:
            thread.join(WAIT)
        assert [type(exc) for exc in outcomes] == [ConnectionClosedError] * 2, outcomes
        stream.close()
        server.close()
    finally:
        fifo.close()
        listener.close()
