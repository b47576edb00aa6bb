"""Endpoints: owning a name, timeouts, receiver rules, permissions, names, peers, threads."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import socket
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import npipes
import peers
import posix_peers
from helpers import CTX, finish, start
from npipes import (
    ChecksumError,
    ConnectionClosedError,
    InvalidPipeNameError,
    MessageTooLargeError,
    PipeInUseError,
    PipeNotFoundError,
    PipePermissionError,
    PipeTimeoutError,
    ProtocolError,
    _backend,
)
from npipes._deadline import Deadline
from npipes._frame import encode_frame
from npipes._names import resolve

WAIT = 30.0
VECTORS = json.loads((Path(__file__).parent / "data" / "vectors.json").read_text())
VALID = {v["name"]: bytes.fromhex(v["frame_hex"]) for v in VECTORS["valid"]}
GOOD_FRAME, GOOD_MESSAGE = VALID["hello_text_crc"], "Hello"


def _elapsed(since: float) -> float:
    return time.monotonic() - since


# -- who owns a name -------------------------------------------------------------


@pytest.mark.posix
def test_stale_socket_of_killed_listener_is_replaced(pipe_name: str) -> None:
    ready, stop = CTX.Queue(), CTX.Event()
    proc = start(peers.hold_listener, pipe_name, ready, stop)
    address = ready.get(timeout=WAIT)
    proc.kill()
    assert finish(proc) != 0
    stale = os.lstat(address)
    assert stat.S_ISSOCK(stale.st_mode)  # left behind
    with pytest.raises(PipeNotFoundError):
        npipes.connect(pipe_name, timeout=5)  # nobody answers there
    with npipes.listen(pipe_name) as listener:
        assert listener.address == address
        assert os.stat(address).st_ino != stale.st_ino  # a new socket file
        with npipes.connect(pipe_name, timeout=5) as client, listener.accept(timeout=5) as conn:
            client.send("fresh")
            assert conn.recv(timeout=5) == "fresh"


def test_live_name_is_refused(pipe_name: str) -> None:
    ready, stop = CTX.Queue(), CTX.Event()
    proc = start(peers.hold_listener, pipe_name, ready, stop)
    try:
        ready.get(timeout=WAIT)
        with pytest.raises(PipeInUseError) as info:
            npipes.listen(pipe_name)
        assert isinstance(info.value, FileExistsError)
        with npipes.connect(pipe_name, timeout=5):
            pass  # the first listener still owns it
    finally:
        stop.set()
    assert finish(proc) == 0


def test_racing_listeners_end_with_exactly_one(pipe_name: str) -> None:
    racers = 4
    ready, results = CTX.Queue(), CTX.Queue()
    go, stop = CTX.Event(), CTX.Event()
    procs = [start(peers.race_listen, pipe_name, ready, go, results, stop) for _ in range(racers)]
    try:
        for _ in range(racers):
            ready.get(timeout=WAIT)
        go.set()
        outcomes = sorted(results.get(timeout=WAIT)[1] for _ in range(racers))
        assert outcomes == ["in use"] * (racers - 1) + ["listening"]
        with npipes.connect(pipe_name, timeout=5):
            pass
    finally:
        stop.set()
    assert [finish(proc) for proc in procs] == [0] * racers


@pytest.mark.posix
def test_close_removes_the_socket_file(pipe_name: str) -> None:
    with npipes.listen(pipe_name) as listener:
        address = listener.address
        assert stat.S_ISSOCK(os.lstat(address).st_mode)
    assert not os.path.lexists(address)
    assert not os.path.lexists(address + ".lock")


@pytest.mark.posix
def test_close_keeps_a_socket_file_someone_else_put_there(pipe_name: str) -> None:
    with npipes.listen(pipe_name) as listener:
        address = listener.address
        other = os.path.join(os.path.dirname(address), f"{pipe_name}-other.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.bind(other)
            inode = os.stat(other).st_ino
            os.rename(other, address)  # someone replaced our file
            listener.close()
            try:
                assert os.stat(address).st_ino == inode
            finally:
                os.unlink(address)


# -- timeouts ---------------------------------------------------------------------


def test_accept_timeout(pipe_name: str) -> None:
    with npipes.listen(pipe_name) as listener:
        began = time.monotonic()
        with pytest.raises(PipeTimeoutError) as info:
            listener.accept(timeout=0.3)
        assert 0.25 <= _elapsed(began) < 3
        assert isinstance(info.value, TimeoutError)
        assert info.value.timeout == 0.3


def test_connect_to_nobody_fails_at_once(pipe_name: str) -> None:
    began = time.monotonic()
    with pytest.raises(PipeNotFoundError) as info:
        npipes.connect(pipe_name, timeout=WAIT)
    assert _elapsed(began) < 2
    assert isinstance(info.value, FileNotFoundError)
    assert info.value.name == pipe_name


def test_connect_waits_for_a_listener_that_comes_later(pipe_name: str) -> None:
    with pytest.raises(PipeNotFoundError):
        npipes.connect(pipe_name)
    proc = start(peers.serve_once, pipe_name, "late but here")
    with npipes.connect(pipe_name, wait_for_listener=True, timeout=WAIT) as conn:
        assert conn.recv(timeout=WAIT) == "late but here"
        assert conn.peer.pid == proc.pid
    assert finish(proc) == 0


def test_connect_waiting_for_nobody_times_out(pipe_name: str) -> None:
    began = time.monotonic()
    with pytest.raises(PipeTimeoutError):
        npipes.connect(pipe_name, wait_for_listener=True, timeout=0.3)
    assert 0.25 <= _elapsed(began) < 3


def test_recv_timeout_is_a_deadline_even_for_a_dribbling_peer(pipe_name: str) -> None:
    # One byte every 50 ms for up to 5 s: a per-read timeout of 1 s would never fire.
    with npipes.listen(pipe_name) as listener:
        proc = start(peers.dribble, pipe_name, 1000, 0.05, 100)
        with listener.accept(timeout=WAIT) as conn:
            began = time.monotonic()
            with pytest.raises(PipeTimeoutError) as info:
                conn.recv(timeout=1.0)
            assert 0.95 <= _elapsed(began) < 2.5
            assert info.value.partial
            assert conn.closed  # half a frame was read: the stream is out of step
            with pytest.raises(ConnectionClosedError):
                conn.recv(timeout=1)
    assert finish(proc) == 0


def test_recv_timeout_with_nothing_read_keeps_the_connection(pipe_name: str) -> None:
    with npipes.listen(pipe_name) as listener:
        proc = start(peers.echo, pipe_name)
        with listener.accept(timeout=WAIT) as conn:
            with pytest.raises(PipeTimeoutError) as info:
                conn.recv(timeout=0.2)
            assert not info.value.partial
            assert not conn.closed
            conn.send("still here", timeout=WAIT)
            assert conn.recv(timeout=WAIT) == "still here"
    assert finish(proc) == 0


def test_close_from_another_thread_wakes_accept(pipe_name: str) -> None:
    listener = npipes.listen(pipe_name)
    waiting = threading.Event()
    outcome: list[Any] = []

    def accept() -> None:
        waiting.set()
        try:
            outcome.append(listener.accept(timeout=WAIT))
        except Exception as exc:  # noqa: BLE001 - checked below
            outcome.extend([exc, time.monotonic()])

    thread = threading.Thread(target=accept)
    thread.start()
    assert waiting.wait(WAIT)
    closed_at = time.monotonic()
    listener.close()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert isinstance(outcome[0], ConnectionClosedError), outcome
    assert outcome[1] - closed_at < 2


# -- message size limits ----------------------------------------------------------


def test_oversize_send_and_receive(pipe_name: str) -> None:
    limit = 100
    with npipes.listen(pipe_name, max_message_size=limit) as listener:
        proc = start(peers.oversize_peer, pipe_name, limit)
        with listener.accept(timeout=WAIT) as conn:
            with pytest.raises(MessageTooLargeError) as info:
                conn.send(b"x" * (limit + 1), timeout=WAIT)
            assert (info.value.size, info.value.limit) == (limit + 1, limit)
            assert not conn.closed
            conn.send(b"x" * limit, timeout=WAIT)
            # The peer's first message is the one that fits: nothing else went out.
            assert conn.recv(timeout=WAIT) == f"bytes:{limit}"
            with pytest.raises(MessageTooLargeError) as info:
                conn.recv(timeout=WAIT)
            assert (info.value.size, info.value.limit) == (limit + 1, limit)
            assert conn.closed
    assert finish(proc) == 0


# -- receiver rules, with hand-made bytes ------------------------------------------


class _RawPeer:
    """The client end of a connection, writing raw bytes through the backend (any OS)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def sendall(self, data: bytes) -> None:
        self.stream.send([data], Deadline(10))

    def recv(self, size: int) -> bytes:
        buf = bytearray(size)
        count = self.stream.recv_into(memoryview(buf), Deadline(10))
        return bytes(buf[:count])

    def close(self) -> None:
        self.stream.close()


@contextlib.contextmanager
def _raw_client(pipe_name: str, *, crc: bool = False) -> Iterator[tuple[_RawPeer, Any]]:
    """A listener's connection whose client end writes raw bytes (no framing)."""
    with npipes.listen(pipe_name, crc=crc) as listener:
        raw = _RawPeer(_backend.connect(resolve(pipe_name), Deadline(10), wait_for_listener=False))
        try:
            with listener.accept(timeout=10) as conn:
                yield raw, conn
        finally:
            raw.close()


def _invalid(fatal: bool) -> list[Any]:
    return [
        pytest.param(bytes.fromhex(v["frame_hex"]), getattr(npipes, v["error"]), id=v["name"])
        for v in VECTORS["invalid"]
        if v["fatal"] == fatal
    ]


@pytest.mark.parametrize(("frame", "error"), _invalid(fatal=True))
def test_broken_frame_closes_the_connection(
    pipe_name: str, frame: bytes, error: type[Exception]
) -> None:
    with _raw_client(pipe_name) as (raw, conn):
        raw.sendall(frame)
        incomplete = error is npipes.IncompleteMessageError
        if incomplete:
            raw.close()  # the peer goes away mid-frame
        else:
            raw.sendall(GOOD_FRAME)
        with pytest.raises(error):
            conn.recv(timeout=10)
        assert conn.closed
        if not incomplete:
            assert raw.recv(1) == b""  # the receiver hung up
        with pytest.raises(ConnectionClosedError):
            conn.recv(timeout=10)


@pytest.mark.parametrize(("frame", "error"), _invalid(fatal=False))
def test_bad_message_is_dropped_and_the_next_arrives(
    pipe_name: str, frame: bytes, error: type[Exception]
) -> None:
    assert error in (ChecksumError, ProtocolError)
    with _raw_client(pipe_name) as (raw, conn):
        raw.sendall(frame + GOOD_FRAME)
        with pytest.raises(error):
            conn.recv(timeout=10)
        assert not conn.closed
        assert conn.recv(timeout=10) == GOOD_MESSAGE


def test_crc_receiver_rejects_a_frame_without_crc(pipe_name: str) -> None:
    with _raw_client(pipe_name, crc=True) as (raw, conn):
        raw.sendall(VALID["hello_text_nocrc"] + GOOD_FRAME)
        with pytest.raises(ChecksumError):
            conn.recv(timeout=10)
        assert not conn.closed
        assert conn.recv(timeout=10) == GOOD_MESSAGE


# -- permissions --------------------------------------------------------------------


@pytest.fixture
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh XDG_RUNTIME_DIR (short path: sun_path is small), so the real one is untouched."""
    path = Path(tempfile.mkdtemp(prefix="npx"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(path))
    yield path
    shutil.rmtree(path)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can enter, for sockets named by absolute path.

    Not under a private TMPDIR (0700): another uid could not reach it there.
    """
    base = posix_peers.shared_base()
    if base is None:
        pytest.skip("no directory here is reachable by other users (TMPDIR and /tmp are private)")
    path = Path(tempfile.mkdtemp(prefix="npx", dir=base))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.posix
def test_private_directory_0700_and_socket_0600(pipe_name: str, runtime_dir: Path) -> None:
    private = runtime_dir / "npipes"
    with npipes.listen(pipe_name) as listener:
        assert listener.address == str(private / f"{pipe_name}.sock")
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
        st = os.lstat(listener.address)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_uid == os.getuid()


@pytest.mark.posix
@pytest.mark.parametrize("flaw", ["other_owner", "world_writable", "group_writable", "symlink"])
def test_unsafe_private_directory_is_refused(pipe_name: str, runtime_dir: Path, flaw: str) -> None:
    private = runtime_dir / "npipes"
    if flaw == "symlink":
        (runtime_dir / "elsewhere").mkdir(mode=0o700)
        private.symlink_to(runtime_dir / "elsewhere")
    else:
        private.mkdir()
        private.chmod({"world_writable": 0o777, "group_writable": 0o770}.get(flaw, 0o700))
        if flaw == "other_owner":
            os.chown(private, peers.NOBODY, peers.NOBODY)
    with pytest.raises(PipePermissionError):
        npipes.listen(pipe_name)
    with pytest.raises(PipePermissionError):
        npipes.connect(pipe_name, timeout=5)
    assert list(runtime_dir.glob("**/*.sock")) == []


@pytest.mark.posix
def test_peer_of_another_user_is_rejected(open_dir: Path) -> None:
    name = str(open_dir / "s.sock")
    results = CTX.Queue()
    accepted: queue.Queue[Any] = queue.Queue()
    with npipes.listen(name) as listener:
        os.chmod(listener.address, 0o666)  # the file lets anyone in; the uid check must not

        def accept() -> None:
            try:
                accepted.put(listener.accept(timeout=WAIT))
            except Exception as exc:  # noqa: BLE001 - checked below
                accepted.put(exc)

        thread = threading.Thread(target=accept)
        thread.start()
        proc = start(peers.as_nobody_client, name, results)
        outcome = results.get(timeout=WAIT)
        assert finish(proc) == 0
        assert outcome[:2] == ("closed", "ConnectionClosedError"), outcome
        assert outcome[2] < 5
        # The listener is still there for its own user.
        with npipes.connect(name, timeout=5) as mine:
            thread.join(WAIT)
            got = accepted.get(timeout=WAIT)
            assert isinstance(got, npipes.Connection), got
            with got:
                assert got.peer.pid == os.getpid()
                mine.send("me")
                assert got.recv(timeout=5) == "me"


@pytest.mark.posix
def test_allow_other_users_lets_them_in(open_dir: Path) -> None:
    name = str(open_dir / "s.sock")
    results = CTX.Queue()
    with npipes.listen(name, allow_other_users=True) as listener:
        assert stat.S_IMODE(os.lstat(listener.address).st_mode) == 0o666
        proc = start(peers.as_nobody_client, name, results)
        with listener.accept(timeout=WAIT) as conn:
            assert conn.peer.uid == peers.NOBODY
            assert conn.peer.pid == proc.pid
            conn.send("welcome", timeout=WAIT)
            assert conn.recv(timeout=WAIT) == f"uid {peers.NOBODY} got welcome"
            assert results.get(timeout=WAIT) == ("message", "welcome", os.getuid())
    assert finish(proc) == 0


# -- names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("../x", "only letters, digits", id="dotdot"),
        pytest.param("a/b", "only letters, digits", id="slash"),
        pytest.param("a\0b", "NUL", id="nul"),
        pytest.param("a" * 101, "at most 100 characters", id="101-chars"),
        pytest.param("/" + "x" * 199, "sun_path", id="long-path", marks=pytest.mark.posix),
        pytest.param("a" * 100, "sun_path", id="long-bare-name", marks=pytest.mark.posix),
    ],
)
def test_invalid_names(name: str, rule: str) -> None:
    for call in (npipes.listen, lambda n: npipes.connect(n, timeout=5)):
        with pytest.raises(InvalidPipeNameError, match=rule) as info:
            call(name)
        assert isinstance(info.value, ValueError)
        assert info.value.name == name


# -- peer info ---------------------------------------------------------------------------


def test_peer_is_the_other_process_on_both_sides(pipe_name: str) -> None:
    with npipes.listen(pipe_name) as listener:
        proc = start(peers.report_peer, pipe_name)
        with listener.accept(timeout=WAIT) as conn:
            report = json.loads(conn.recv(timeout=WAIT))
            mine = conn.peer
    assert finish(proc) == 0
    assert report["pid"] == proc.pid == mine.pid
    their_pid, their_uid, their_gid = report["peer"]
    assert their_pid == os.getpid()
    if sys.platform != "win32":
        assert (mine.uid, mine.gid) == (os.getuid(), os.getgid())
        assert (their_uid, their_gid) == (os.getuid(), os.getgid())


# -- threads ---------------------------------------------------------------------------


def test_one_thread_sends_while_another_receives(pipe_name: str) -> None:
    # 256 KiB each way per message: a send blocks until the peer reads, and the
    # peer only reads while this side keeps receiving its echoes.
    count, size = 64, 256 * 1024
    errors: list[BaseException] = []
    with npipes.listen(pipe_name) as listener:
        proc = start(peers.echo, pipe_name)
        with listener.accept(timeout=WAIT) as conn:

            def send_all() -> None:
                try:
                    for i in range(count):
                        conn.send(bytes([i]) * size, timeout=WAIT)
                except BaseException as exc:  # noqa: BLE001 - checked below
                    errors.append(exc)

            sender = threading.Thread(target=send_all)
            sender.start()
            for i in range(count):
                assert conn.recv(timeout=WAIT) == bytes([i]) * size
            sender.join(WAIT)
    assert not errors
    assert finish(proc) == 0


def test_concurrent_senders_never_interleave_frames(pipe_name: str) -> None:
    threads, per_thread = 8, 40
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []
    with npipes.listen(pipe_name) as listener:
        proc = start(peers.check_threaded, pipe_name, threads, per_thread)
        with listener.accept(timeout=WAIT) as conn:

            def send_mine(thread: int) -> None:
                try:
                    barrier.wait(WAIT)
                    for seq in range(per_thread):
                        conn.send(peers.threaded_message(thread, seq), timeout=WAIT)
                except BaseException as exc:  # noqa: BLE001 - checked below
                    errors.append(exc)

            senders = [threading.Thread(target=send_mine, args=(t,)) for t in range(threads)]
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join(WAIT)
            report = json.loads(conn.recv(timeout=WAIT))
    assert not errors
    assert report == {"next": [per_thread] * threads, "errors": []}
    assert finish(proc) == 0


@pytest.mark.parametrize("crc", [False, True])
def test_send_many_batches_and_keeps_order(pipe_name: str, crc: bool) -> None:
    messages: list[bytes | str] = [f"m{i}" for i in range(3000)]
    messages[10] = b"x" * (300 * 1024)  # a large payload in the middle goes uncopied
    messages[20] = b""
    with npipes.listen(pipe_name, crc=crc) as listener:
        client = npipes.connect(pipe_name, timeout=10, crc=crc)
        with client, listener.accept(timeout=10) as conn:
            sender = threading.Thread(target=lambda: client.send_many(iter(messages), timeout=30))
            sender.start()
            got = [conn.recv(timeout=30) for _ in messages]
            sender.join(30)
            assert got == messages
            assert client.send_many([]) == 0
        small = npipes.connect(pipe_name, timeout=10, max_message_size=10, crc=crc)
        with small, listener.accept(timeout=10) as conn2:
            with pytest.raises(npipes.MessageTooLargeError):
                small.send_many(["ok", b"y" * 100], timeout=5)
            small.send("after")  # nothing of the failed batch was written
            assert conn2.recv(timeout=10) == "after"


def test_recv_many_returns_bursts_and_keeps_later_errors(pipe_name: str) -> None:
    with npipes.listen(pipe_name) as listener:
        client = npipes.connect(pipe_name, timeout=10)
        with client, listener.accept(timeout=10) as conn:
            client.send_many([f"m{i}" for i in range(500)])
            got: list[bytes | str] = []
            while len(got) < 500:
                burst = conn.recv_many(timeout=10)
                assert burst
                got.extend(burst)
            assert got == [f"m{i}" for i in range(500)]
            # A bad message inside a burst: the ones before it arrive, the error comes next.
            bad = bytearray(encode_frame(b"bad", crc=True))
            bad[-1] ^= 0xFF
            _RawPeer(client._stream).sendall(encode_frame("a") + bytes(bad) + encode_frame("b"))
            assert conn.recv_many(timeout=10) == ["a"]  # one read brought all three
            with pytest.raises(ChecksumError):
                conn.recv_many(timeout=10)
            assert conn.recv_many(timeout=10) == ["b"]
            with pytest.raises(ValueError, match="max_messages"):
                conn.recv_many(max_messages=0)
