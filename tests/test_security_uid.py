"""The POSIX security matrix (issue 11 §2): another local user tries every way in, on
every entry point (``connect``, ``listen``, ``IPC``, ``serve``, ``aio``, ``fifo``, the CLI).

The attacks run for real: the attacker is a process that dropped to uid
``uid_peers.ATTACKER``; the victim runs as root or, where it matters, as
``uid_peers.VICTIM`` in a process of its own. Becoming another user needs root:
without it these tests skip (the reason says so).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import npipes
import npipes.aio
import npipes.fifo
import posix_peers
import uid_peers
from helpers import CTX, finish, start
from uid_peers import ATTACKER, VICTIM

pytestmark = [
    pytest.mark.posix,
    pytest.mark.skipif(
        not (hasattr(os, "geteuid") and os.geteuid() == 0),
        reason="the attacker becomes another user (setuid), which needs root: run as root",
    ),
]
WAIT = 30.0
SERVERS = ["listen", "aio.listen", "serve", "aio.serve", "ipc", "cli"]


@pytest.fixture
def sticky_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh shared temp dir (mode 1777, like /tmp) where bare names live, for this
    process (TMPDIR, no XDG_RUNTIME_DIR) and for the victims it starts."""
    base = posix_peers.shared_base()
    if base is None:
        pytest.skip("no directory here is reachable by other users (TMPDIR and /tmp are private)")
    path = Path(tempfile.mkdtemp(prefix="nps", dir=base))
    path.chmod(0o1777)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(path))
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    yield path
    shutil.rmtree(path)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user may write (0777, no sticky bit), for absolute-path endpoints."""
    base = posix_peers.shared_base()
    if base is None:
        pytest.skip("no directory here is reachable by other users (TMPDIR and /tmp are private)")
    path = Path(tempfile.mkdtemp(prefix="npo", dir=base))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


def env_of(tmp: Path) -> dict[str, str | None]:
    return {"TMPDIR": str(tmp), "XDG_RUNTIME_DIR": None}


def run_as(uid: int, env: dict[str, str | None], role: str, *args: Any) -> tuple[Any, Any]:
    """Start ``uid_peers.ROLES[role]`` as ``uid``; returns (process, results queue)."""
    results = CTX.Queue()
    return start(uid_peers.as_user, uid, env, role, args, results), results


def outcome(proc: Any, results: Any) -> tuple[list[tuple[Any, ...]], Any]:
    """Everything a peer reported, and its final value (an "error" fails the test)."""
    reports: list[tuple[Any, ...]] = []
    while True:
        report = results.get(timeout=3 * WAIT)
        if report[0] == "done":
            break
        assert report[0] != "error", report
        reports.append(report)
    assert finish(proc) == 0
    return reports, report[1]


def call_as(uid: int, env: dict[str, str | None], role: str, *args: Any) -> Any:
    """Run a role to its end and return its value."""
    return outcome(*run_as(uid, env, role, *args))[1]


def assert_refused(result: Any, *, permission: bool) -> None:
    """An attacker's npipes call ended in a typed npipes error (a PermissionError if asked)."""
    if result[0] == "cli":
        _, code, stderr = result
        assert code == 1, stderr
        assert stderr.startswith("npipes: "), stderr
        if permission:
            assert "PipePermissionError" in stderr, stderr
        return
    assert result[0] == "error", result
    _, _, is_npipes, is_permission, _ = result
    assert is_npipes, result
    if permission:
        assert is_permission, result


def refused_client(path: str) -> str:
    """Root, a trusted uid, connects to a non-root listener that did not allow others."""
    result = uid_peers.raw_attack(path)
    with (
        npipes.connect(path, timeout=WAIT, allowed_uids={VICTIM}) as conn,
        pytest.raises(npipes.ConnectionClosedError),
    ):
        exchange(conn, b"root")  # the listener closed us
    return result


def exchange(conn: npipes.Connection, message: bytes) -> object:
    conn.send(message, timeout=WAIT)
    return conn.recv(timeout=WAIT)


# -- 1. connect to the victim's endpoint --------------------------------------------------


@pytest.mark.parametrize("victim", ["root", "user"])
@pytest.mark.parametrize("entry", SERVERS)
def test_another_user_cannot_get_in(
    pipe_name: str, sticky_tmp: Path, entry: str, victim: str
) -> None:
    """The private directory keeps the attacker out; with it opened up, the listener's uid
    check does; the victim's own user is served all along, the attacker's bytes never."""
    uid = 0 if victim == "root" else VICTIM
    env = env_of(sticky_tmp)
    proc, results = run_as(uid, env, "victim_serve", entry, pipe_name)
    try:
        kind, path = results.get(timeout=WAIT)
        assert kind == "ready"
        fronts = ("connect", "aio.connect", *((entry,) if entry in ("ipc", "cli") else ()))
        # The socket is in a 0700 directory of the victim: the OS says no.
        out = call_as(ATTACKER, env, "attack_endpoint", path, fronts)
        assert out["raw"] == "EACCES", out
        for front in fronts:
            assert_refused(out[front], permission=True)
        # Open the directory and the socket to everyone: the listener's uid check is the gate.
        os.chmod(os.path.dirname(path), 0o711)
        os.chmod(path, 0o666)
        out = call_as(ATTACKER, env, "attack_endpoint", path, fronts, (uid,))
        assert out["raw"] == "closed", out
        for front in fronts:  # a non-root victim's listener is refused by the client too
            assert_refused(out[front], permission=victim == "user")
        for front in ("connect+allowed", "aio.connect+allowed"):
            assert out[front][1] == "ConnectionClosedError", out
        if victim == "user":  # root is no exception: the listener admits only its own uid
            assert refused_client(path) == "closed"
        # The victim's own user is still served.
        for message in (b"hello", b"stop"):
            reply = call_as(uid, env, "own_client", entry, pipe_name, message)
            if entry == "cli":
                assert reply[0] == 0, reply
            elif entry != "ipc":
                assert reply == b"echo:" + message
        reports, final = outcome(proc, results)
    finally:
        if proc.is_alive():
            proc.kill()
    assert reports == [("got", b"hello"), ("got", b"stop")], reports
    if entry == "cli":
        assert final.startswith("exit 0"), final
