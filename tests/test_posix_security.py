"""POSIX endpoint security against another local user (issue 10 §2).

The attacks run for real: a child process drops to an unused uid and squats
the victim's directory or name. They need root (to become another user) and
skip otherwise.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import npipes
import npipes.aio
import npipes.fifo
import posix_peers
from helpers import CTX, finish, start
from npipes import InvalidPipeNameError, PipePermissionError
from npipes._deadline import Deadline
from npipes._names import resolve

pytestmark = pytest.mark.posix
WAIT = 30.0
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not IS_ROOT, reason="becoming another user (setuid) needs root; run the suite as root too"
)


def shared_base() -> str:
    """A directory other users can reach (the temp dir, or /tmp when TMPDIR is private)."""
    base = posix_peers.shared_base()
    if base is None:
        pytest.skip("no directory here is reachable by other users (TMPDIR and /tmp are private)")
    return base


@pytest.fixture
def sticky_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh shared temp dir (mode 1777 like /tmp) used as TMPDIR, with no XDG_RUNTIME_DIR:
    where bare names live when the session has no runtime directory."""
    path = Path(tempfile.mkdtemp(prefix="npt", dir=shared_base()))
    path.chmod(0o1777)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(path))
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    yield path
    shutil.rmtree(path)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can enter and write, for sockets named by absolute path."""
    path = Path(tempfile.mkdtemp(prefix="npo", dir=shared_base()))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


def _squat(
    directory: Path | None, path: Path, clients: int = 1, accept_timeout: float = WAIT
) -> tuple[Any, Any]:
    results = CTX.Queue()
    where = None if directory is None else str(directory)
    proc = start(posix_peers.squat, where, str(path), results, clients, accept_timeout)
    return proc, results


# -- a client waiting for its listener -------------------------------------------------


@needs_root
@pytest.mark.parametrize("front", ["sync", "aio"])
def test_waiting_client_never_talks_to_a_squatted_private_dir(
    pipe_name: str, sticky_tmp: Path, front: str
) -> None:
    """Another user creates ``<tmp>/npipes-<uid>`` while our client waits, and binds the name."""
    address = resolve(pipe_name)
    assert address.private_dir == str(sticky_tmp / f"npipes-{os.getuid()}")
    outcome: list[object] = []

    def client() -> None:
        try:
            if front == "sync":
                with npipes.connect(pipe_name, timeout=WAIT, wait_for_listener=True) as conn:
                    conn.send(b"secret")
            else:

                async def run() -> None:
                    conn = await npipes.aio.connect(pipe_name, timeout=WAIT, wait_for_listener=True)
                    async with conn:
                        await conn.send(b"secret")

                asyncio.run(run())
            outcome.append("sent")
        except Exception as exc:  # noqa: BLE001 - checked below
            outcome.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    time.sleep(0.3)  # let the client start waiting (if it is late, it must refuse anyway)
    # The client is done before the squatter looks: a connection it made is queued
    # by then, so a short accept timeout misses nothing.
    proc, results = _squat(Path(address.private_dir), Path(address.path), accept_timeout=3.0)
    assert results.get(timeout=WAIT) == ("ready",)
    thread.join(WAIT)
    assert len(outcome) == 1
    assert isinstance(outcome[0], PipePermissionError), outcome
    assert "uid" in str(outcome[0])
    got = results.get(timeout=WAIT)
    assert got in {("got", b""), ("no client",)}, got
    finish(proc)


@needs_root
def test_listener_of_another_user_is_refused_unless_allowed(open_dir: Path) -> None:
    """An absolute path another user listens on: refused before a byte is sent."""
    from npipes._backend import connect

    path = open_dir / "s.sock"
    proc, results = _squat(None, path, clients=2)
    assert results.get(timeout=WAIT) == ("ready",)
    address = resolve(str(path))
    with pytest.raises(PipePermissionError, match=f"uid {posix_peers.SQUATTER}"):
        connect(address, Deadline(WAIT), wait_for_listener=False)
    stream = connect(
        address,
        Deadline(WAIT),
        wait_for_listener=False,
        allowed_uids=frozenset({posix_peers.SQUATTER}),
    )
    try:
        assert stream.peer.uid == posix_peers.SQUATTER
        stream.send([b"allowed"], Deadline(WAIT))
    finally:
        stream.close()
    # The refused client sent nothing; the squatter saw it close with no bytes.
    assert results.get(timeout=WAIT) == ("got", b"")
    assert results.get(timeout=WAIT) == ("got", b"allowed")
    finish(proc)


@needs_root
def test_aio_listener_of_another_user_is_refused_unless_allowed(open_dir: Path) -> None:
    from npipes._backend.aio import open_connection

    path = open_dir / "s.sock"
    proc, results = _squat(None, path, clients=2)
    assert results.get(timeout=WAIT) == ("ready",)
    address = resolve(str(path))

    async def main() -> None:
        with pytest.raises(PipePermissionError, match=f"uid {posix_peers.SQUATTER}"):
            await open_connection(
                address, Deadline(WAIT), wait_for_listener=False, protocol_factory=asyncio.Protocol
            )
        transport, _, peer = await open_connection(
            address,
            Deadline(WAIT),
            wait_for_listener=False,
            protocol_factory=asyncio.Protocol,
            allowed_uids=frozenset({posix_peers.SQUATTER}),
        )
        assert peer.uid == posix_peers.SQUATTER
        transport.close()

    asyncio.run(main())
    assert results.get(timeout=WAIT) == ("got", b"")
    assert results.get(timeout=WAIT) == ("got", b"")
    finish(proc)


# -- FIFO writers ------------------------------------------------------------------------


@pytest.mark.parametrize("flaw", ["world_writable_dir", "other_owner_dir", "other_owner_fifo"])
def test_fifo_writer_checks_directory_and_owner(
    pipe_name: str, monkeypatch: pytest.MonkeyPatch, flaw: str
) -> None:
    if flaw.startswith("other_owner") and not IS_ROOT:
        pytest.skip("giving a file to another user (chown) needs root")
    runtime = Path(tempfile.mkdtemp(prefix="npf"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    try:
        private = runtime / "npipes"
        fifo = private / f"{pipe_name}.fifo"
        private.mkdir(0o700)
        os.mkfifo(fifo, 0o666)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # someone reads: a writer may open
        try:
            if flaw == "world_writable_dir":
                private.chmod(0o777)
            elif flaw == "other_owner_dir":
                os.chown(private, posix_peers.SQUATTER, posix_peers.SQUATTER)
            else:
                os.chown(fifo, posix_peers.SQUATTER, posix_peers.SQUATTER)
            with pytest.raises(PipePermissionError):
                npipes.fifo.open_writer(pipe_name, timeout=5)
            assert os.read(reader, 100) == b""  # nothing was written
        finally:
            os.close(reader)
    finally:
        shutil.rmtree(runtime)


def test_fifo_writer_refuses_a_symlink_to_a_fifo(tmp_path: Path) -> None:
    target = tmp_path / "real.fifo"
    os.mkfifo(target, 0o600)
    link = tmp_path / "link.fifo"
    link.symlink_to(target)
    reader = os.open(target, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(PipePermissionError):
            npipes.fifo.open_writer(str(link), timeout=5)
    finally:
        os.close(reader)


# -- the listen lock file -------------------------------------------------------------------


@pytest.mark.parametrize("planted", ["symlink", "dangling_symlink", "fifo", "other_owner"])
def test_lock_file_is_never_followed_or_trusted(tmp_path: Path, planted: str) -> None:
    """Another user plants ``NAME.sock.lock`` in a shared directory before we listen."""
    if planted == "other_owner" and not IS_ROOT:
        pytest.skip("giving a file to another user (chown) needs root")
    name = str(tmp_path / "s.sock")
    lock = tmp_path / "s.sock.lock"
    victim = tmp_path / "victim"
    if planted == "symlink":
        victim.write_bytes(b"precious")
        lock.symlink_to(victim)
    elif planted == "dangling_symlink":
        lock.symlink_to(victim)
    elif planted == "fifo":
        os.mkfifo(lock, 0o600)
    else:
        lock.write_bytes(b"")
        os.chown(lock, posix_peers.SQUATTER, posix_peers.SQUATTER)
    with pytest.raises(PipePermissionError, match="lock"):
        npipes.listen(name)
    if planted == "symlink":
        assert victim.read_bytes() == b"precious"
    if planted == "dangling_symlink":
        assert not victim.exists()
    assert not (tmp_path / "s.sock").exists()


# -- allow_other_users with a bare name -----------------------------------------------------


def test_allow_other_users_with_a_bare_name_fails_at_listen(pipe_name: str) -> None:
    """A bare name lives in the caller's own private directory, which other users
    cannot enter (and which they would not even look in): say so at once."""
    with pytest.raises(InvalidPipeNameError, match="absolute path"):
        npipes.listen(pipe_name, allow_other_users=True)
    assert not os.path.lexists(resolve(pipe_name).path)
    with npipes.listen(pipe_name):  # the name is free
        pass


def test_connect_checks_private_dir_before_every_try(pipe_name: str) -> None:
    """Without root: the private directory turns unsafe while a client waits."""
    runtime = Path(tempfile.mkdtemp(prefix="npw"))
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_RUNTIME_DIR", str(runtime))
    try:
        private = runtime / "npipes"
        errors: list[BaseException] = []

        def client() -> None:
            try:
                npipes.connect(pipe_name, timeout=WAIT, wait_for_listener=True).close()
            except Exception as exc:  # noqa: BLE001 - checked below
                errors.append(exc)

        thread = threading.Thread(target=client)
        thread.start()
        time.sleep(0.3)
        private.mkdir(0o777)
        private.chmod(0o777)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(private / f"{pipe_name}.sock"))
        listener.listen(8)
        thread.join(WAIT)
        listener.close()
        assert len(errors) == 1
        assert isinstance(errors[0], PipePermissionError), errors
    finally:
        mp.undo()
        shutil.rmtree(runtime)
