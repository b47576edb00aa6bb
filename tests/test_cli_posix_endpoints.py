"""``npipes ls``/``clean`` on POSIX, in process (tests/test_cli14_posix.py runs the
commands; these reach the corners: files that are not sockets, sockets without a lock
file, locks held or not, systems without /proc/locks, unknown owners)."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.posix

if sys.platform != "win32":  # POSIX only, like this module (imported here so Windows collects it)
    import fcntl

    from npipes import _cli_posix


@pytest.fixture
def private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An XDG_RUNTIME_DIR of our own: bare names live in its ``npipes`` folder."""
    tmp_path.chmod(0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return tmp_path / "npipes"


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    yield made
    for sock in made:
        sock.close()


def _socket_file(path: Path, made: list[socket.socket], *, listening: bool) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    if listening:
        sock.listen()
    made.append(sock)


def test_a_missing_directory_lists_and_cleans_nothing(private: Path) -> None:
    assert _cli_posix.list_sockets() == []
    assert _cli_posix.clean_sockets() == []


def test_every_kind_of_entry(private: Path, sockets: list[socket.socket]) -> None:
    private.mkdir(mode=0o700)
    (private / "plain.sock").write_text("not a socket")
    (private / "notes.txt").write_text("not an endpoint")
    _socket_file(private / "bare.sock", sockets, listening=False)  # no lock file: probed
    _socket_file(private / "probed.sock", sockets, listening=True)
    _socket_file(private / "held.sock", sockets, listening=False)
    _socket_file(private / "free.sock", sockets, listening=False)
    held = os.open(private / "held.sock.lock", os.O_RDWR | os.O_CREAT, 0o600)
    free = os.open(private / "free.sock.lock", os.O_RDWR | os.O_CREAT, 0o600)
    os.close(free)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        listed = {e.name: e for e in _cli_posix.list_sockets()}
        assert set(listed) == {"bare", "probed", "held", "free"}
        assert listed["bare"].state == "stale"
        assert listed["probed"].state == "alive"
        assert listed["held"].state == "alive"
        assert listed["free"].state == "stale"
        if os.path.exists("/proc/locks"):
            assert listed["held"].pid == os.getpid()
        # Without /proc/locks, a lock attempt tells (and releases at once).
        assert _cli_posix._liveness(str(private / "held.sock"), None) == (True, None)
        assert _cli_posix._liveness(str(private / "free.sock"), None) == (False, None)
        assert _cli_posix._liveness(str(private / "bare.sock"), None) == (False, None)
        # clean: stale sockets only, never a held or listening one, never a plain file.
        stale = [str(private / "bare.sock"), str(private / "free.sock")]
        assert _cli_posix.clean_sockets(dry_run=True) == stale
        assert (private / "free.sock").exists()
        assert _cli_posix.clean_sockets() == stale
        assert (private / "probed.sock").exists()
        assert not (private / "free.sock").exists()
        assert not (private / "free.sock.lock").exists()
        assert (private / "held.sock").exists()
        assert (private / "plain.sock").exists()
    finally:
        os.close(held)


def test_a_lock_file_that_is_a_symlink_is_never_followed(
    private: Path, sockets: list[socket.socket], tmp_path: Path
) -> None:
    private.mkdir(mode=0o700)
    _socket_file(private / "odd.sock", sockets, listening=False)
    target = tmp_path / "elsewhere"
    target.write_text("")
    (private / "odd.sock.lock").symlink_to(target)
    assert _cli_posix.clean_sockets() == []
    assert (private / "odd.sock").exists()
    assert _cli_posix._liveness(str(private / "odd.sock"), None) == (False, None)


def test_an_unknown_owner_shows_as_its_uid() -> None:
    unknown = 4_000_000_000
    assert _cli_posix._user(unknown) == str(unknown)


def test_proc_locks_lines_that_are_not_flocks_are_skipped() -> None:
    holders = _cli_posix._lock_holders()
    if holders is None:
        pytest.skip("no /proc/locks on this system")
    assert all(isinstance(pid, int) for pid in holders.values())


def test_a_socket_that_cannot_be_probed_counts_as_live() -> None:
    """Never removed when in doubt: a probe that fails (here a path too long for a
    socket address) says live; a missing file says not live."""
    assert _cli_posix._probe_live("/" + "x" * 300) is True
    assert _cli_posix._probe_live("/nonexistent-npipes-dir/s.sock") is False
