"""The Unix socket backend against what it may find on disk at an absolute path.

A regular file, a missing folder, a lock path that is a folder, a foreign (non-npipes)
listener, a stale socket at a path too long for the temporary-name bind, and socket or
lock files deleted under a live listener: each ends in a typed error that says what to do,
or in a working listener; none removes what is not npipes'.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

import npipes
from npipes._backend import ListenOptions
from npipes._deadline import Deadline
from npipes._names import SUN_PATH_MAX, Address

if sys.platform != "win32":  # POSIX only, like this module (imported here so Windows collects it)
    from npipes._backend import unix
    from npipes._backend.unix import UnixListener, UnixStream

pytestmark = pytest.mark.posix


def _echo_once(listener: npipes.Listener, path: str) -> None:
    with npipes.connect(path, timeout=10) as client, listener.accept(timeout=10) as server:
        client.send("ping", timeout=10)
        assert server.recv(timeout=10) == "ping"


def test_a_regular_file_at_the_path_is_never_replaced(tmp_path: Path) -> None:
    target = tmp_path / "data.sock"
    target.write_bytes(b"keep me")
    with pytest.raises(npipes.PipeInUseError, match="is not a socket"):
        npipes.listen(str(target))
    assert target.read_bytes() == b"keep me"


def test_a_missing_folder_says_create_it(tmp_path: Path) -> None:
    with pytest.raises(npipes.PipeNotFoundError, match="does not exist; create it first"):
        npipes.listen(str(tmp_path / "missing" / "x.sock"))


def test_a_lock_path_that_is_a_folder_fails_with_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "x.sock"
    (tmp_path / "x.sock.lock").mkdir()
    with pytest.raises(OSError) as info:  # noqa: PT011 - the type is checked below
        npipes.listen(str(path))
    assert isinstance(info.value, npipes.NpipesError), repr(info.value)
    assert not path.exists()


@pytest.mark.parametrize("backlog_full", [False, True])
def test_a_foreign_listener_is_never_stolen(tmp_path: Path, backlog_full: bool) -> None:
    path = str(tmp_path / "foreign.sock")
    foreign = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    queued: list[socket.socket] = []
    try:
        foreign.bind(path)
        foreign.listen(0)
        if backlog_full:  # its queue is full: a probe gets EAGAIN, still alive
            for _ in range(8):
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.setblocking(False)
                queued.append(c)
                try:
                    c.connect(path)
                except BlockingIOError:
                    break
        with pytest.raises(npipes.PipeInUseError, match="does not hold the npipes lock"):
            npipes.listen(path)
        assert os.path.exists(path)
    finally:
        for c in queued:
            c.close()
        foreign.close()


def test_stale_socket_at_a_path_too_long_for_a_temporary_name(tmp_path: Path) -> None:
    # The socket path fits (<= SUN_PATH_MAX bytes), but "<folder>/.XXXXXXXX/s" does not:
    # the listener binds in place, after removing the stale socket of a dead listener.
    folder = tmp_path / ("d" * max(1, SUN_PATH_MAX - len(str(tmp_path)) - 10))
    folder.mkdir()
    path = str(folder / "s.sock")
    assert len(os.fsencode(path)) <= SUN_PATH_MAX
    assert len(os.fsencode(str(folder))) + 12 > SUN_PATH_MAX
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()  # a listener that died: its file stays, nobody listens
    with npipes.listen(path) as listener:
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o600)
        _echo_once(listener, path)
    assert not os.path.exists(path)


def test_socket_and_lock_files_deleted_under_a_live_listener(tmp_path: Path) -> None:
    path = str(tmp_path / "gone.sock")
    listener = npipes.listen(path)
    try:
        _echo_once(listener, path)
        os.unlink(path)
        os.unlink(path + ".lock")
    finally:
        listener.close()  # neither file is there: nothing to remove, no error
    assert not os.path.exists(path)
    with npipes.listen(path) as again:  # the name is free again
        _echo_once(again, path)


# -- the backend's corners, in process (each once hit only by a race in the suite) --


def _backend_pair(tmp_path: Path) -> tuple[UnixListener, UnixStream, UnixStream]:
    path = str(tmp_path / "b.sock")
    raw = unix.listen(Address(path, path, None), ListenOptions())
    client = unix.connect(Address(path, path, None), Deadline(10), wait_for_listener=False)
    return raw, client, raw.accept(Deadline(10))


def test_a_closed_backend_listener_refuses_accept_wait_and_client_checks(tmp_path: Path) -> None:
    raw, client, server = _backend_pair(tmp_path)
    client.close()
    server.close()
    raw.close()
    with pytest.raises(npipes.ConnectionClosedError, match="the listener is closed"):
        raw.accept(Deadline(1))
    assert raw.client_waiting() is False
    assert raw._start_wait() is None
    raw._end_wait()  # no wait started by this thread: nothing to end
    assert unix.wait_any([raw], Deadline(1)) == [0]  # closed: reported at once


def test_wait_any_reports_a_closed_stream_at_once(tmp_path: Path) -> None:
    raw, client, server = _backend_pair(tmp_path)
    try:
        server.close()  # its descriptor is gone: it cannot be watched
        assert unix.wait_any([client, server], Deadline(5)) == [1]
    finally:
        client.close()
        raw.close()


def test_unclosed_backend_objects_warn_and_close(tmp_path: Path) -> None:
    raw, client, server = _backend_pair(tmp_path)
    path = raw.address
    with pytest.warns(ResourceWarning, match="unclosed npipes stream"):
        client.__del__()
    assert client._closed
    server.close()
    with pytest.warns(ResourceWarning, match="unclosed npipes listener"):
        raw.__del__()
    assert raw.closed
    assert not os.path.exists(path)  # closing removed its socket file


def test_a_private_directory_that_cannot_be_created_is_a_typed_error(tmp_path: Path) -> None:
    """The error says which directory is missing, not "nobody listens there"."""
    missing = tmp_path / "missing"
    with pytest.raises(npipes.PipeNotFoundError, match=f"{missing} does not exist; create it"):
        unix.ensure_private_dir(str(missing / "dir"), create=True)
