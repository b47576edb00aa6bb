"""Attack: a slowloris client (a byte now and then, never a whole message) must not
hold a server slot past ``idle_timeout`` (issue 10 §5: silent clients cannot hold
every slot). ``idle_timeout`` is a first-*message* deadline, not a first-byte one."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import pytest

import npipes
from npipes import aio
from npipes._names import resolve

WAIT = 30.0
IDLE = 1.0


def _dribble(path: str, stop: threading.Event, closed: threading.Event) -> None:
    """Send one byte of an npipes header every 0.2 s until told to stop or cut off."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        header = b"NP\x01\x00\x00\x00\x00\x00" + (1000).to_bytes(8, "little") + bytes(1000)
        for i in range(300):
            if stop.is_set():
                return
            try:
                sock.sendall(header[i % len(header) : i % len(header) + 1])
            except OSError:
                closed.set()
                return
            # The server closing us shows up as EOF on our side.
            sock.settimeout(0.2)
            try:
                if sock.recv(1) == b"":
                    closed.set()
                    return
            except TimeoutError:
                pass
            except OSError:
                # A server that closes with our bytes still unread resets the
                # connection (ECONNRESET): that too is being cut off.
                closed.set()
                return


def _start_dribbler(name: str) -> tuple[threading.Thread, threading.Event, threading.Event]:
    stop, closed = threading.Event(), threading.Event()
    thread = threading.Thread(target=_dribble, args=(resolve(name).path, stop, closed))
    thread.start()
    return thread, stop, closed


@pytest.mark.posix
def test_the_dribbler_counts_a_reset_as_being_cut_off(tmp_path: Path) -> None:
    """A close with unread bytes is a reset on AF_UNIX, not an EOF: the flake CI saw."""
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen()
        stop, closed = threading.Event(), threading.Event()
        failures: list[BaseException] = []

        def run() -> None:
            try:
                _dribble(path, stop, closed)
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        conn, _ = server.accept()
        time.sleep(0.3)  # at least one byte arrives, and stays unread
        conn.close()
        thread.join(WAIT)
        stop.set()
    assert failures == []
    assert closed.is_set()


@pytest.mark.posix  # the slow client is a raw Unix socket
def test_sync_slowloris_client_loses_its_slot_after_idle_timeout(pipe_name: str) -> None:
    def handler(conn: npipes.Connection) -> None:
        for message in conn:  # a plain echo handler: no timeout of its own
            conn.send(message)

    with npipes.serve(pipe_name, handler, max_connections=1, idle_timeout=IDLE):
        thread, stop, closed = _start_dribbler(pipe_name)
        try:
            time.sleep(IDLE / 2)  # let the dribbler take the only slot first
            with npipes.connect(pipe_name, timeout=WAIT) as client:
                client.send(b"hello", timeout=WAIT)
                began = time.monotonic()
                assert client.recv(timeout=WAIT) == b"hello"
                assert time.monotonic() - began < WAIT / 2
            assert closed.wait(WAIT)
        finally:
            stop.set()
            thread.join()


@pytest.mark.posix  # the slow client is a raw Unix socket
def test_aio_slowloris_client_loses_its_slot_after_idle_timeout(pipe_name: str) -> None:
    async def handler(conn: aio.Connection) -> None:
        async for message in conn:
            await conn.send(message)

    async def main() -> None:
        async with await aio.serve(pipe_name, handler, max_connections=1, idle_timeout=IDLE):
            thread, stop, closed = _start_dribbler(pipe_name)
            try:
                await asyncio.sleep(IDLE / 2)
                async with await aio.connect(pipe_name, timeout=WAIT) as client:
                    await client.send(b"hello", timeout=WAIT)
                    began = time.monotonic()
                    assert await client.recv(timeout=WAIT) == b"hello"
                    assert time.monotonic() - began < WAIT / 2
                assert await asyncio.to_thread(closed.wait, WAIT)
            finally:
                stop.set()
                await asyncio.to_thread(thread.join)

    asyncio.run(main())


@pytest.mark.posix
@pytest.mark.xfail(
    strict=True,
    reason="src/npipes/connection.py Listener._accept_next runs each client's authkey"
    " handshake in the iteration itself: every silent client stalls `for conn in listener`"
    " for HANDSHAKE_TIMEOUT (5 s); a fix needs concurrent handshakes (design change)",
)
def test_listener_iteration_is_not_stalled_by_silent_clients(pipe_name: str) -> None:
    key = b"attack-slots-key"
    with npipes.listen(pipe_name, authkey=key) as listener:
        silent = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
        try:
            for sock in silent:
                sock.connect(resolve(pipe_name).path)
            began = time.monotonic()

            def client() -> None:
                with npipes.connect(pipe_name, authkey=key, timeout=WAIT) as conn:
                    conn.send(b"hi", timeout=WAIT)

            thread = threading.Thread(target=client)
            thread.start()
            for conn in listener:
                with conn:
                    assert conn.recv(timeout=WAIT) == b"hi"
                break
            waited = time.monotonic() - began
            thread.join()
        finally:
            for sock in silent:
                sock.close()
    assert waited < 4.0, f"the good client waited {waited:.1f} s behind 2 silent ones"
