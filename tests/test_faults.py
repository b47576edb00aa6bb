"""Fault injection with real processes (issue 11 §2): peers killed at chosen points of a
frame or of the authkey handshake, a listener closed during accept, a reader that stops
reading, both sides sending large messages at once, a plain send to a peer that died.

Each test checks a written guarantee (docs/reliability.md): the receiver gets every
whole message sent before the fault, then a typed npipes error within seconds (never a
hang, never a torn or spliced message); the listener keeps serving; nothing leaks.

Peers are ``fault_peers.py`` run as processes and killed with ``Popen.kill``
(SIGKILL on POSIX, TerminateProcess on Windows) once they print ``ready``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

import npipes
import npipes.aio as aio
from fault_peers import exchange_concurrently, exchange_with_a_thread, message, pattern
from npipes import (
    AuthenticationError,
    ConnectionClosedError,
    IncompleteMessageError,
    PipeTimeoutError,
)

PEERS = str(Path(__file__).with_name("fault_peers.py"))
WAIT = 30.0
PROMPT = 10.0
"""Seconds a fault may take to surface as an error (it takes well under one)."""
IS_WINDOWS = sys.platform == "win32"
BIG = 8 * 1024 * 1024


class Peer:
    """A ``fault_peers.py`` command in its own process; its stdout lines are read in a thread."""

    def __init__(self, *args: str, stdin: int = subprocess.DEVNULL) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, PEERS, *args],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.strip())
        self._lines.put("")  # end of output

    def line(self, timeout: float = WAIT) -> str:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the peer said nothing within {timeout} s") from None

    def expect(self, word: str) -> None:
        said = self.line()
        assert said == word, f"peer said {said!r}, not {word!r}: {self.stderr()}"

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def kill(self) -> float:
        """Kill the peer and wait until it is gone; returns the time it was killed."""
        self.proc.kill()
        self.proc.wait(WAIT)
        return time.monotonic()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT)
        self._reader.join(WAIT)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def open_fds() -> int | None:
    """Descriptors (Linux) or handles (Windows) this process holds; None where unknown."""
    if sys.platform.startswith("linux"):
        return len(os.listdir("/proc/self/fd"))
    if IS_WINDOWS:
        import ctypes
        from ctypes import wintypes

        kernel32 = ctypes.WinDLL("kernel32")
        count = wintypes.DWORD()
        kernel32.GetProcessHandleCount(kernel32.GetCurrentProcess(), ctypes.byref(count))
        return count.value
    return None


def assert_no_leak(before: int | None, *, rounds: int = 1) -> None:
    """No descriptor left behind (Windows: fewer handles than rounds, for lazy allocations)."""
    after = open_fds()
    if before is None or after is None:
        return
    if IS_WINDOWS:
        assert after - before < max(rounds, 2), (before, after)
    else:
        assert after <= before, (before, after)


def in_thread(call: Callable[[], Any]) -> Callable[[], Any]:
    """Run ``call`` in a thread; return a function that waits (WAIT) and returns or raises."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            outcome.append((False, exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def wait() -> Any:
        thread.join(WAIT)
        assert outcome, f"the call did not end within {WAIT} s"
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    return wait


def check_serving(name: str, listener: npipes.Listener, **options: Any) -> None:
    """The listener still takes a new client and gets its message."""
    connecting = in_thread(lambda: npipes.connect(name, timeout=WAIT, **options))
    with listener.accept(timeout=WAIT) as conn, connecting() as client:
        client.send(b"after the fault", timeout=WAIT)
        assert conn.recv(timeout=WAIT) == b"after the fault"


async def check_serving_aio(name: str, listener: aio.Listener, **options: Any) -> None:
    connecting = asyncio.create_task(aio.connect(name, timeout=WAIT, **options))
    async with await listener.accept(timeout=WAIT) as conn, await connecting as client:
        await client.send(b"after the fault", timeout=WAIT)
        assert await conn.recv(timeout=WAIT) == b"after the fault"


# -- 1. peers killed mid-frame ---------------------------------------------------------------

CUTS = [
    ("npipes", False, "header"),
    ("npipes", False, "payload"),
    ("npipes", True, "header"),
    ("npipes", True, "payload"),
    ("npipes", True, "crc"),
    ("multiprocessing", False, "header"),
    ("multiprocessing", False, "payload"),
]
CUT_IDS = [f"{f}-{'crc' if c else 'nocrc'}-mid-{w}" for f, c, w in CUTS]


def _skip_unsupported(framing: str, flavour: str) -> None:
    if IS_WINDOWS and framing == "multiprocessing":
        pytest.skip(
            "Windows: a multiprocessing message is one pipe message, which a write cannot cut"
            " (and npipes.aio refuses that framing there)"
        )


@pytest.mark.parametrize("flavour", ["sync", "aio"])
@pytest.mark.parametrize(("framing", "crc", "where"), CUTS, ids=CUT_IDS)
def test_peer_killed_mid_frame(
    pipe_name: str, flavour: str, framing: str, crc: bool, where: str
) -> None:
    """3 whole messages, then part of a 4th: a recv pending at the kill raises
    IncompleteMessageError within seconds; the listener keeps serving."""
    _skip_unsupported(framing, flavour)
    fds = open_fds()
    options: dict[str, Any] = {"framing": framing, "crc": crc}
    args = ("cut", pipe_name, framing, "crc" if crc else "-", where, "3")
    if flavour == "sync":
        with npipes.listen(pipe_name, **options) as listener:
            with Peer(*args) as peer, listener.accept(timeout=WAIT) as conn:
                peer.expect("ready")
                for i in range(3):
                    assert conn.recv(timeout=WAIT) == message(i)
                pending = in_thread(lambda: conn.recv(timeout=WAIT))
                killed = peer.kill()
                with pytest.raises(IncompleteMessageError):
                    pending()
                assert time.monotonic() - killed < PROMPT
                assert conn.closed
                with pytest.raises(ConnectionClosedError):
                    conn.recv(timeout=WAIT)
            check_serving(pipe_name, listener, **options)
    else:

        async def main() -> None:
            async with await aio.listen(pipe_name, **options) as listener:
                with Peer(*args) as peer:
                    async with await listener.accept(timeout=WAIT) as conn:
                        await asyncio.to_thread(peer.expect, "ready")
                        for i in range(3):
                            assert await conn.recv(timeout=WAIT) == message(i)
                        pending = asyncio.create_task(conn.recv(timeout=WAIT))
                        killed = await asyncio.to_thread(peer.kill)
                        with pytest.raises(IncompleteMessageError):
                            await pending
                        assert time.monotonic() - killed < PROMPT
                        assert conn.closed
                await check_serving_aio(pipe_name, listener, **options)

        asyncio.run(main())
    assert_no_leak(fds)


@pytest.mark.parametrize("flavour", ["sync", "aio"])
@pytest.mark.parametrize("framing", ["npipes", "multiprocessing"])
def test_peer_killed_during_a_large_send(pipe_name: str, flavour: str, framing: str) -> None:
    """A peer killed while its 8 MiB send waits for us to read: the two messages before it
    arrive whole, then a ConnectionClosedError; never a short message in its place."""
    if flavour == "aio" and IS_WINDOWS and framing == "multiprocessing":
        pytest.skip("npipes.aio refuses the multiprocessing framing on Windows")
    fds = open_fds()
    args = ("big", pipe_name, framing, str(BIG))
    if flavour == "sync":
        with npipes.listen(pipe_name, framing=framing) as listener:
            with Peer(*args) as peer, listener.accept(timeout=WAIT) as conn:
                peer.expect("sending")
                peer.kill()
                assert conn.recv(timeout=WAIT) == message(0)
                assert conn.recv(timeout=WAIT) == message(1)
                with pytest.raises(ConnectionClosedError):  # not a short message
                    conn.recv(timeout=WAIT)
            check_serving(pipe_name, listener, framing=framing)
    else:

        async def main() -> None:
            async with await aio.listen(pipe_name, framing=framing) as listener:
                with Peer(*args) as peer:
                    async with await listener.accept(timeout=WAIT) as conn:
                        await asyncio.to_thread(peer.expect, "sending")
                        await asyncio.to_thread(peer.kill)
                        assert await conn.recv(timeout=WAIT) == message(0)
                        assert await conn.recv(timeout=WAIT) == message(1)
                        try:
                            last = await conn.recv(timeout=WAIT)
                        except ConnectionClosedError:
                            pass  # the kill tore it: an error, never a short message
                        else:
                            # asyncio reads ahead while the peer writes: all 8 MiB may have
                            # arrived before the kill. Then it is whole, and the end follows.
                            assert last == bytes(BIG)
                            with pytest.raises(ConnectionClosedError):
                                await conn.recv(timeout=WAIT)
                await check_serving_aio(pipe_name, listener, framing=framing)

        asyncio.run(main())
    assert_no_leak(fds)


@pytest.mark.slow
@pytest.mark.parametrize("framing", ["npipes", "multiprocessing"])
def test_peer_killed_while_its_large_message_is_being_read(pipe_name: str, framing: str) -> None:
    """The peer dies while a recv is reading its 128 MiB message: the recv returns the
    whole message (it was all out in time) or raises ConnectionClosedError; never a
    shorter message (on Windows the multiprocessing framing is one pipe message each)."""
    size = 128 * 1024 * 1024
    with (
        npipes.listen(pipe_name, framing=framing) as listener,
        Peer("big", pipe_name, framing, str(size)) as peer,
        listener.accept(timeout=WAIT) as conn,
    ):
        peer.expect("sending")
        assert conn.recv(timeout=WAIT) == message(0)
        assert conn.recv(timeout=WAIT) == message(1)
        pending = in_thread(lambda: conn.recv(timeout=WAIT))
        time.sleep(0.3)  # picks the kill point (part of the message read); syncs nothing
        peer.kill()
        try:
            got = pending()
        except ConnectionClosedError:
            assert conn.closed
        else:
            assert len(got) == size
            assert got.count(0) == size


@pytest.mark.parametrize("framing", ["raw", "multiprocessing"])
def test_core_end_inside_a_pipe_message_is_incomplete(framing: str) -> None:
    """The sans-I/O rule behind the test above, on every OS: on a message pipe, the end
    of the stream after part of a pipe message is IncompleteMessageError, not a message."""
    from npipes._framings import get_codec
    from npipes._protocol import ConnectionCore

    core = ConnectionCore(
        get_codec(framing),
        crc=False,
        max_message_size=None,
        message_mode=True,
        name="t",
        address=r"\\.\pipe\t",
    )

    def read(data: bytes, end: bool) -> None:
        buffer = core.get_buffer()
        buffer[: len(data)] = data
        core.buffer_updated(len(data), message_end=end)

    read(b"whole", True)
    assert core.next_message() == b"whole"
    read(b"part", False)
    read(b" of it", False)
    assert core.next_message() is None
    core.buffer_updated(0)  # the end of the stream
    with pytest.raises(IncompleteMessageError, match="10 bytes"):
        core.next_message()
    assert core.closed


# -- 1. peers killed mid-handshake -------------------------------------------------------------

HANDSHAKE_ERRORS = (ConnectionClosedError, AuthenticationError)


@pytest.mark.parametrize("flavour", ["sync", "aio"])
@pytest.mark.parametrize("step", ["connected", "mid-response", "welcomed", "mid-challenge"])
def test_client_killed_mid_handshake(pipe_name: str, flavour: str, step: str) -> None:
    """The accepting side's handshake ends with a typed error within seconds of the
    client's death (not at its deadline); the listener then serves the next client."""
    fds = open_fds()
    if flavour == "sync":
        with npipes.listen(pipe_name, authkey=b"key") as listener:
            with Peer("hs_client", pipe_name, step) as peer:
                accepting = in_thread(lambda: listener.accept(timeout=WAIT))
                peer.expect("ready")
                killed = peer.kill()
                with pytest.raises(HANDSHAKE_ERRORS):
                    accepting().close()
                assert time.monotonic() - killed < PROMPT
            check_serving(pipe_name, listener, authkey=b"key")
    else:

        async def main() -> None:
            async with await aio.listen(pipe_name, authkey=b"key") as listener:
                with Peer("hs_client", pipe_name, step) as peer:
                    accepting = asyncio.create_task(listener.accept(timeout=WAIT))
                    await asyncio.to_thread(peer.expect, "ready")
                    killed = await asyncio.to_thread(peer.kill)
                    with pytest.raises(HANDSHAKE_ERRORS):
                        await (await accepting).aclose()
                    assert time.monotonic() - killed < PROMPT
                await check_serving_aio(pipe_name, listener, authkey=b"key")

        asyncio.run(main())
    assert_no_leak(fds)


@pytest.mark.parametrize("flavour", ["sync", "aio"])
def test_server_serves_on_after_clients_killed_mid_frame_and_mid_handshake(
    pipe_name: str, flavour: str
) -> None:
    """``serve`` with an authkey: one client killed mid-handshake, one killed mid-frame
    after authenticating; both handlers' errors stay theirs, the next client is served."""
    key = b"key"
    torn: queue.Queue[str] = queue.Queue()

    def echo(conn: npipes.Connection) -> None:
        try:
            for received in conn:
                conn.send(received, timeout=WAIT)
        except IncompleteMessageError as exc:
            torn.put(type(exc).__name__)

    async def aio_echo(conn: aio.Connection) -> None:
        try:
            async for received in conn:
                await conn.send(received, timeout=WAIT)
        except IncompleteMessageError as exc:
            torn.put(type(exc).__name__)

    def faults_then_a_client() -> None:
        with Peer("hs_client", pipe_name, "mid-response") as peer:
            peer.expect("ready")
            peer.kill()
        with Peer("hs_client", pipe_name, "authenticated-mid-frame") as peer:
            peer.expect("ready")
            peer.kill()
        assert torn.get(timeout=WAIT) == "IncompleteMessageError"  # its handler saw it
        for i in range(3):
            with npipes.connect(pipe_name, authkey=key, timeout=WAIT) as client:
                client.send(f"next {i}", timeout=WAIT)
                assert client.recv(timeout=WAIT) == f"next {i}"

    if flavour == "sync":
        with npipes.serve(pipe_name, echo, authkey=key):
            faults_then_a_client()
    else:

        async def main() -> None:
            async with await aio.serve(pipe_name, aio_echo, authkey=key):
                await asyncio.to_thread(faults_then_a_client)

        asyncio.run(main())


@pytest.mark.parametrize("flavour", ["sync", "aio"])
@pytest.mark.parametrize("step", ["mid-challenge", "before-verdict", "mid-verdict"])
def test_listener_killed_mid_handshake(pipe_name: str, flavour: str, step: str) -> None:
    """The connecting side's handshake ends with a typed error within seconds of the
    listener's death, and leaves nothing open."""
    fds = open_fds()
    with Peer("hs_listener", pipe_name, step) as peer:
        peer.expect("listening")
        if flavour == "sync":
            connecting = in_thread(lambda: npipes.connect(pipe_name, authkey=b"key", timeout=WAIT))
            peer.expect("ready")
            killed = peer.kill()
            with pytest.raises(HANDSHAKE_ERRORS):
                connecting().close()
        else:

            async def main() -> float:
                connecting = asyncio.create_task(
                    aio.connect(pipe_name, authkey=b"key", timeout=WAIT)
                )
                await asyncio.to_thread(peer.expect, "ready")
                killed = await asyncio.to_thread(peer.kill)
                with pytest.raises(HANDSHAKE_ERRORS):
                    await (await connecting).aclose()
                return killed

            killed = asyncio.run(main())
        assert time.monotonic() - killed < PROMPT
    assert_no_leak(fds)


# -- 2. the socket file deleted or replaced under a live listener (POSIX) -----------------------


@pytest.mark.posix
def test_socket_file_deleted_under_a_live_listener(pipe_name: str) -> None:
    """The name stays claimed by its lock: clients get PipeNotFoundError, a second
    ``listen`` PipeInUseError; connections already made keep working; ``close()`` ends
    a pending accept and frees the name."""
    fds = open_fds()
    listener = npipes.listen(pipe_name)
    try:
        client = npipes.connect(pipe_name, timeout=WAIT)
        conn = listener.accept(timeout=WAIT)
        pending = in_thread(lambda: listener.accept(timeout=WAIT))
        os.unlink(listener.address)
        with pytest.raises(npipes.PipeNotFoundError):
            npipes.connect(pipe_name, timeout=WAIT)
        with pytest.raises(npipes.PipeInUseError):
            npipes.listen(pipe_name)
        client.send("still connected", timeout=WAIT)
        assert conn.recv(timeout=WAIT) == "still connected"
        closed_at = time.monotonic()
        listener.close()
        with pytest.raises(ConnectionClosedError):
            pending()
        assert time.monotonic() - closed_at < PROMPT
        conn.send("and back", timeout=WAIT)
        assert client.recv(timeout=WAIT) == "and back"
        client.close()
        conn.close()
    finally:
        listener.close()
    with npipes.listen(pipe_name) as again:
        check_serving(pipe_name, again)
    assert_no_leak(fds)


@pytest.mark.posix
def test_socket_file_replaced_by_another_program(pipe_name: str) -> None:
    """Another program binds the path under a live listener: clients reach it; the old
    listener's close ends its pending accept and leaves the new socket file alone."""
    import socket

    fds = open_fds()
    listener = npipes.listen(pipe_name)
    path = listener.address
    pending = in_thread(lambda: listener.accept(timeout=WAIT))
    os.unlink(path)
    other = socket.socket(socket.AF_UNIX)
    try:
        other.bind(path)
        other.listen()
        inode = os.stat(path).st_ino
        with npipes.connect(pipe_name, timeout=WAIT) as client:
            taken, _ = other.accept()
            client.send(b"to the new one", timeout=WAIT)
            with taken:
                assert b"to the new one" in taken.recv(100)
        closed_at = time.monotonic()
        listener.close()
        with pytest.raises(ConnectionClosedError):
            pending()
        assert time.monotonic() - closed_at < PROMPT
        assert os.stat(path).st_ino == inode  # not unlinked by the old listener
        with npipes.connect(pipe_name, timeout=WAIT):
            other.accept()[0].close()
    finally:
        listener.close()
        other.close()
        os.unlink(path)
    assert_no_leak(fds)


@pytest.mark.posix
def test_endpoint_replaced_by_another_npipes_listener(pipe_name: str) -> None:
    """Socket and lock file both removed (a cleanup script), a new listener takes the
    name: closing the old one removes neither of the new one's files, which keeps serving."""
    fds = open_fds()
    old = npipes.listen(pipe_name)
    try:
        os.unlink(old.address)
        os.unlink(old.address + ".lock")
        with npipes.listen(pipe_name) as new:
            files = {p: os.stat(p).st_ino for p in (new.address, new.address + ".lock")}
            old.close()
            assert {p: os.stat(p).st_ino for p in files} == files
            with pytest.raises(npipes.PipeInUseError):
                npipes.listen(pipe_name)  # the new listener's lock still holds
            check_serving(pipe_name, new)
    finally:
        old.close()
    assert not os.path.exists(old.address)
    assert_no_leak(fds)


# -- 3. a listener closed while accept waits -----------------------------------------------------


@pytest.mark.parametrize("flavour", ["sync", "aio"])
def test_listener_closed_during_accept_ends_it_and_leaks_nothing(
    pipe_name: str, flavour: str
) -> None:
    """close() from another thread (aclose() from another task) ends a waiting accept with
    ConnectionClosedError within seconds; five rounds leave no descriptor or handle."""
    fds = open_fds()
    rounds = 5
    for i in range(rounds):
        name = f"{pipe_name}-{i}"
        if flavour == "sync":
            listener = npipes.listen(name)
            pending = in_thread(listener.accept)  # no timeout: only close() ends it
            closed_at = time.monotonic()
            listener.close()
            with pytest.raises(ConnectionClosedError):
                pending()
        else:

            async def main(name: str = name) -> float:
                listener = await aio.listen(name)
                pending = asyncio.create_task(listener.accept())
                for _ in range(5):
                    await asyncio.sleep(0)  # the accept is waiting on the loop now
                closed_at = time.monotonic()
                await listener.aclose()
                with pytest.raises(ConnectionClosedError):
                    await pending
                return closed_at

            closed_at = asyncio.run(main())
        assert time.monotonic() - closed_at < PROMPT
    assert_no_leak(fds, rounds=rounds)


# -- 4. a reader that stops reading ------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["sync", "aio"])
def test_send_to_a_peer_that_stops_reading_times_out(pipe_name: str, flavour: str) -> None:
    """An 8 MiB send to a peer that reads nothing raises PipeTimeoutError at its timeout."""
    with Peer("read_nothing", pipe_name) as peer:
        if flavour == "sync":
            with npipes.listen(pipe_name) as listener, listener.accept(timeout=WAIT) as conn:
                assert conn.recv(timeout=WAIT) == "hello"
                peer.expect("ready")
                started = time.monotonic()
                with pytest.raises(PipeTimeoutError) as info:
                    conn.send(bytes(BIG), timeout=2)
                assert 1.9 < time.monotonic() - started < 2 + PROMPT
                assert conn.closed == info.value.partial  # a torn frame closes it
        else:

            async def main() -> None:
                async with await aio.listen(pipe_name) as listener:
                    conn = await listener.accept(timeout=WAIT)
                    assert await conn.recv(timeout=WAIT) == "hello"
                    await asyncio.to_thread(peer.expect, "ready")
                    started = time.monotonic()
                    with pytest.raises(PipeTimeoutError):
                        await conn.send(bytes(BIG), timeout=2)
                    assert 1.9 < time.monotonic() - started < 2 + PROMPT
                    assert not conn.closed  # the message stays queued in the transport
                    await conn.aclose(flush_timeout=0.5)

            asyncio.run(main())


@pytest.mark.parametrize("flavour", ["sync", "aio"])
def test_server_keeps_serving_while_one_client_stops_reading(pipe_name: str, flavour: str) -> None:
    """One client's handler blocks sending 8 MiB to a client that reads nothing; other
    clients are served meanwhile; the stuck handler ends with its send timeout."""
    stuck: queue.Queue[float] = queue.Queue()

    def reply(message: bytes | str) -> bytes | str:
        return bytes(BIG) if message == "hello" else message

    def handler(conn: npipes.Connection) -> None:
        try:
            for message in conn:
                conn.send(reply(message), timeout=5)
        except PipeTimeoutError:
            stuck.put(time.monotonic())

    async def aio_handler(conn: aio.Connection) -> None:
        try:
            async for message in conn:
                await conn.send(reply(message), timeout=5)
        except PipeTimeoutError:
            stuck.put(time.monotonic())
            await conn.aclose(flush_timeout=0)

    def ping_others() -> float:
        for i in range(5):
            with npipes.connect(pipe_name, timeout=WAIT) as client:
                client.send(f"ping {i}", timeout=WAIT)
                assert client.recv(timeout=WAIT) == f"ping {i}"
        return time.monotonic()

    with Peer("read_nothing", pipe_name) as peer:
        if flavour == "sync":
            with npipes.serve(pipe_name, handler):
                peer.expect("ready")
                served = ping_others()
                assert stuck.get(timeout=WAIT) > served
        else:

            async def main() -> None:
                async with await aio.serve(pipe_name, aio_handler):
                    await asyncio.to_thread(peer.expect, "ready")
                    served = await asyncio.to_thread(ping_others)
                    assert await asyncio.to_thread(stuck.get, timeout=WAIT) > served

            asyncio.run(main())


# -- 5. both sides send large messages at once ----------------------------------------------------


def test_both_sides_sending_large_messages_naively_time_out(pipe_name: str) -> None:
    """Both sides only send 8 MiB (with a timeout) and neither reads: both calls end in a
    typed error (a timeout, or the connection the other side's timeout closed), no hang."""
    with (
        npipes.listen(pipe_name) as listener,
        Peer("exchange", pipe_name, "naive", str(BIG)) as peer,
        listener.accept(timeout=WAIT) as conn,
    ):
        started = time.monotonic()
        with pytest.raises((PipeTimeoutError, ConnectionClosedError)) as info:
            conn.send(pattern(0, BIG), timeout=3)
        assert time.monotonic() - started < 3 + PROMPT
        report = json.loads(peer.line())
    assert report.get("error") in ("PipeTimeoutError", "ConnectionClosedError"), report
    assert report["seconds"] < 3 + PROMPT
    assert "PipeTimeoutError" in (type(info.value).__name__, report["error"])


@pytest.mark.parametrize("how", ["thread", "aio"])
def test_both_sides_sending_large_messages_with_the_recipe(pipe_name: str, how: str) -> None:
    """The deadlock-free way (receive in another thread, or in a concurrent task) moves
    8 MiB each way at once, content verified on both sides."""
    ours, theirs = pattern(0, BIG), pattern(1, BIG)
    with Peer("exchange", pipe_name, how, str(BIG)) as peer:
        if how == "thread":
            with npipes.listen(pipe_name) as listener, listener.accept(timeout=WAIT) as conn:
                got = exchange_with_a_thread(conn, ours)
        else:

            async def main() -> bytes | str:
                async with (
                    await aio.listen(pipe_name) as listener,
                    await listener.accept(timeout=WAIT) as conn,
                ):
                    return await exchange_concurrently(conn, ours)

            got = asyncio.run(main())
        report = json.loads(peer.line())
    assert isinstance(got, bytes)
    assert hashlib.sha256(got).digest() == hashlib.sha256(theirs).digest()
    assert report["sha256"] == hashlib.sha256(ours).hexdigest()


# -- 6. EMFILE during an asyncio accept (POSIX) ---------------------------------------------


@pytest.mark.posix
def test_aio_accept_out_of_descriptors_keeps_the_loop_serving(pipe_name: str) -> None:
    with Peer("aio_emfile", pipe_name, stdin=subprocess.PIPE) as peer:
        peer.expect("ready")
        with npipes.connect(pipe_name, timeout=WAIT) as client:
            client.send("queued", timeout=WAIT)
            assert peer.proc.stdin is not None
            peer.proc.stdin.write("go\n")
            peer.proc.stdin.flush()
            said = peer.line(timeout=60)
            try:
                report = json.loads(said)
            except ValueError:
                raise AssertionError(f"{said!r}: {peer.stderr()}") from None
    assert report["pending_during_pings"] is True, report
    assert report["message"] == "queued", report
    assert report["cpu"] < 0.5 * report["wall"], report  # it backed off, it did not spin
    assert report["closed_after"] < 2, report


# -- 7. fork with open asyncio objects (POSIX) ----------------------------------------------------


@pytest.mark.posix
@pytest.mark.parametrize("child", ["exits", "closes"])
def test_forked_child_leaves_the_parents_asyncio_objects_working(
    pipe_name: str, child: str
) -> None:
    """A child forked while an accept and a recv wait on the loop exits without closing
    anything, or closes (aborts) the inherited listener and connections: that closes
    only the child's descriptors (the parent's close still ends a connection while the
    child lives); the parent's pending recv and accept complete, its connections work."""
    import warnings

    async def main() -> str:
        async with await aio.listen(pipe_name) as listener:
            client = await aio.connect(pipe_name, timeout=WAIT)
            conn = await listener.accept(timeout=WAIT)
            other_client = await aio.connect(pipe_name, timeout=WAIT)
            other_conn = await listener.accept(timeout=WAIT)
            receiving = asyncio.create_task(conn.recv(timeout=WAIT))
            accepting = asyncio.create_task(listener.accept(timeout=WAIT))
            for _ in range(5):
                await asyncio.sleep(0)  # both wait on the loop's selector now
            closed_r, closed_w = os.pipe()  # the child says it closed everything
            done_r, done_w = os.pipe()  # the parent lets it exit
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
                pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                code = 1
                try:
                    os.close(done_w)
                    if child == "closes":
                        for each in (conn, client, other_client):
                            each.abort()
                        closing = listener.aclose()
                        with contextlib.suppress(StopIteration):
                            closing.send(None)  # it completes without waiting
                        os.write(closed_w, b"x")
                        os.read(done_r, 1)
                    code = 0
                finally:
                    os._exit(code)
            os.close(closed_w)
            os.close(done_r)
            try:
                if child == "closes":
                    assert await asyncio.to_thread(os.read, closed_r, 1) == b"x"
                    # The child, still alive, holds no copy: the parent's close ends it.
                    await other_client.aclose()
                    with pytest.raises(ConnectionClosedError):
                        await other_conn.recv(timeout=10)
            finally:
                os.close(done_w)
                os.close(closed_r)
            await other_conn.aclose()
            await other_client.aclose()
            _, status = await asyncio.to_thread(os.waitpid, pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            await client.send("after fork", timeout=WAIT)
            assert await asyncio.wait_for(receiving, 10) == "after fork"
            await conn.send("back", timeout=WAIT)
            assert await client.recv(timeout=10) == "back"
            async with (
                await aio.connect(pipe_name, timeout=WAIT) as again,
                await asyncio.wait_for(accepting, 10) as third,
            ):
                await again.send("still listening", timeout=WAIT)
                assert await third.recv(timeout=10) == "still listening"
            await client.aclose()
            await conn.aclose()
            return listener.address

    address = asyncio.run(main())
    assert not os.path.exists(address)  # the parent's close removed its socket file


# -- 8. accept timing out as a client connects; a send to a dead peer; aclose cancelled ----------


def test_accept_timing_out_as_a_client_connects_keeps_the_client(pipe_name: str) -> None:
    """Accepts with tiny timeouts race clients connecting: an accept that timed out lost
    no client; the next accept returns it (and no other)."""
    with npipes.listen(pipe_name) as listener:
        for i in range(40):

            def connect_and_send(i: int = i) -> npipes.Connection:
                client = npipes.connect(pipe_name, timeout=WAIT)
                client.send(f"client {i}", timeout=WAIT)
                return client

            connecting = in_thread(connect_and_send)
            try:
                conn = listener.accept(timeout=(i % 8) * 0.0005)
            except PipeTimeoutError:
                conn = listener.accept(timeout=WAIT)
            with conn, connecting():
                assert conn.recv(timeout=WAIT) == f"client {i}"


def _send_after_death(conn: npipes.Connection) -> None:
    conn.send("after its death", timeout=WAIT)


@pytest.mark.parametrize("death", ["killed", "exits"])
def test_plain_send_to_a_peer_that_died_before_reading(pipe_name: str, death: str) -> None:
    """A send that returned before the peer died unread is lost without an error on
    this side (not a guarantee of delivery); the next send raises ConnectionClosedError,
    and so does recv (a clean end: the peer sent nothing)."""
    with npipes.listen(pipe_name) as listener:
        with (
            Peer("die_unread", pipe_name, stdin=subprocess.PIPE) as peer,
            listener.accept(timeout=WAIT) as conn,
        ):
            peer.expect("ready")
            conn.send("never read", timeout=WAIT)  # returns: the frame is in the pipe
            if death == "killed":
                peer.kill()
            else:
                assert peer.proc.stdin is not None
                peer.proc.stdin.close()
                assert peer.proc.wait(WAIT) == 0
            with pytest.raises(ConnectionClosedError):
                _send_after_death(conn)
            with pytest.raises(ConnectionClosedError) as info:
                conn.recv(timeout=WAIT)
            assert type(info.value) is ConnectionClosedError
        check_serving(pipe_name, listener)


def test_aio_aclose_cancelled_aborts_and_lets_the_cancel_through(pipe_name: str) -> None:
    """aclose() flushing to a peer that reads nothing, cancelled: the cancellation goes
    through at once, the connection is closed (aborted), nothing leaks."""
    fds = open_fds()
    with Peer("read_nothing", pipe_name) as peer:

        async def main() -> None:
            async with await aio.listen(pipe_name) as listener:
                conn = await listener.accept(timeout=WAIT)
                assert await conn.recv(timeout=WAIT) == "hello"
                await asyncio.to_thread(peer.expect, "ready")
                with pytest.raises(PipeTimeoutError):
                    await conn.send(bytes(BIG), timeout=1)  # stays queued
                closing = asyncio.create_task(conn.aclose(flush_timeout=WAIT))
                for _ in range(5):
                    await asyncio.sleep(0)
                assert not closing.done()
                cancelled_at = time.monotonic()
                closing.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await closing
                assert time.monotonic() - cancelled_at < PROMPT
                assert conn.closed
                with pytest.raises(ConnectionClosedError):
                    await conn.send("more", timeout=WAIT)
                await asyncio.wait_for(conn.aclose(), PROMPT)  # idempotent, at once

        asyncio.run(main())
    assert_no_leak(fds)
