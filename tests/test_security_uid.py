"""The POSIX security matrix (issue 11 §2): another local user tries every way in, on
every entry point (``connect``, ``listen``, ``IPC``, ``serve``, ``aio``, ``fifo``, the CLI).

The attacks run for real: the attacker is a process that dropped to uid
``uid_peers.ATTACKER``; the victim runs as root or, where it matters, as
``uid_peers.VICTIM`` in a process of its own. Becoming another user needs root:
without it these tests skip (the reason says so).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
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
from npipes import PipePermissionError
from npipes.ipc import IPC
from uid_peers import ATTACKER, VICTIM

pytestmark = [
    pytest.mark.posix,
    pytest.mark.skipif(
        hasattr(os, "geteuid") and os.geteuid() != 0,  # Windows: the posix mark says why
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
        assert code in (1, 3, 4, 5), stderr
        assert stderr.startswith("npipes "), stderr
        if permission:
            assert code == 5, stderr
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


# -- what the victim calls (in this process, as root) ---------------------------------------


def victim_call(entry: str, name: str, timeout: float = 5.0) -> None:
    """Open ``name`` through ``entry`` and close it again; errors propagate."""
    if entry == "connect":
        npipes.connect(name, timeout=timeout, wait_for_listener=True).close()
    elif entry in ("aio.connect", "aio.listen", "aio.serve"):

        async def handler(conn: npipes.aio.Connection) -> None:
            await conn.recv(timeout=timeout)

        async def main() -> None:
            if entry == "aio.connect":
                conn = await npipes.aio.connect(name, timeout=timeout, wait_for_listener=True)
                await conn.aclose()
            elif entry == "aio.listen":
                await (await npipes.aio.listen(name)).aclose()
            else:
                await (await npipes.aio.serve(name, handler)).aclose()

        asyncio.run(main())
    elif entry == "listen":
        npipes.listen(name).close()
    elif entry == "serve":
        npipes.serve(name, lambda conn: None).close()
    elif entry == "ipc":
        with IPC(name, timeout=timeout) as ipc:
            ipc.send_message(b"secret")
    elif entry in ("cli-send", "cli-recv"):
        command = ["send", "--name", name, "--timeout", str(timeout), "secret"]
        if entry == "cli-recv":
            command = ["recv", "--name", name, "--timeout", str(timeout)]
        code, _, err = uid_peers.cli(*command)
        assert code != 0, err
        error = {3: npipes.PipeTimeoutError, 4: npipes.PipeNotFoundError}.get(code)
        raise (error or {5: npipes.PipePermissionError}.get(code, npipes.NpipesError))(err)
    elif entry == "fifo-reader":
        npipes.fifo.open_reader(name).close()
    elif entry == "fifo-writer":
        with npipes.fifo.open_writer(name, timeout=timeout) as writer:
            writer.send("secret")
    else:
        raise ValueError(entry)


def squat(plant: str, where: Path, target: str = "") -> tuple[Any, Any]:
    """Start the attacker planting ``plant`` at ``where``; wait until it is there."""
    proc, results = run_as(ATTACKER, {}, "squat", plant, str(where), target, 3 * WAIT)
    assert results.get(timeout=WAIT) == ("ready",)
    return proc, results


def squatter_got(where: Path, proc: Any, results: Any) -> tuple[Any, ...]:
    """Tell the attacker the victim is done; what it accepted and read."""
    Path(str(where) + ".done").touch()
    return outcome(proc, results)[1]  # type: ignore[no-any-return]


# -- 2. squat the private directory before the victim comes ----------------------------


ALL_ENTRIES = [
    "connect",
    "aio.connect",
    "listen",
    "aio.listen",
    "serve",
    "aio.serve",
    "ipc",
    "cli-send",
    "cli-recv",
    "fifo-reader",
    "fifo-writer",
]


@pytest.mark.parametrize("plant", ["dir", "dir_link"])
@pytest.mark.parametrize("entry", ALL_ENTRIES)
def test_a_squatted_private_directory_is_refused(
    pipe_name: str, sticky_tmp: Path, entry: str, plant: str
) -> None:
    """The attacker creates ``<tmp>/npipes-<uid>`` (open to all, with a socket and a FIFO
    of the victim's name in it), or a symlink there to such a directory of its own."""
    private = sticky_tmp / f"npipes-{os.getuid()}"
    proc, results = squat(plant, private, f"{pipe_name}.sock,{pipe_name}.fifo")
    with pytest.raises(PipePermissionError) as caught:
        victim_call(entry, pipe_name)
    assert "npipes-" in str(caught.value)
    assert squatter_got(private, proc, results) == ("accepted", 0, "got", b"")


# -- 3. plant a socket, symlink, FIFO or lock file at an absolute path -----------------------

PLANTED = {
    # entry family -> plant -> the error the victim gets
    "listen": {
        "socket": npipes.PipeInUseError,
        "socket_link": npipes.PipeInUseError,
        "fifo": npipes.PipeInUseError,
        "lock_link": PipePermissionError,
        "lock_file": PipePermissionError,
    },
    "connect": {
        "socket": PipePermissionError,
        "socket_link": PipePermissionError,
        "fifo": npipes.PipeTimeoutError,  # refused: it waits (wait_for_listener) until its timeout
    },
    "ipc": {  # connects if it can, else listens
        "socket": PipePermissionError,
        "socket_link": PipePermissionError,
        "fifo": npipes.PipeTimeoutError,  # neither connects nor listens until its timeout
        "lock_link": PipePermissionError,
        "lock_file": PipePermissionError,
    },
    "fifo": {
        "fifo": PipePermissionError,
        "fifo_link": PipePermissionError,
        "file": PipePermissionError,
    },
}
FAMILY = {
    "listen": "listen",
    "aio.listen": "listen",
    "serve": "listen",
    "aio.serve": "listen",
    "connect": "connect",
    "aio.connect": "connect",
    "ipc": "ipc",
    "cli-send": "ipc",
    "cli-recv": "ipc",
    "fifo-reader": "fifo",
    "fifo-writer": "fifo",
}
PLANT_CASES = [(entry, plant) for entry in ALL_ENTRIES for plant in PLANTED[FAMILY[entry]]]


@pytest.mark.parametrize(("entry", "plant"), PLANT_CASES)
def test_a_planted_endpoint_is_refused_and_never_followed(
    open_dir: Path, entry: str, plant: str
) -> None:
    """In a directory everyone may write, the attacker gets there first: the victim fails
    with a typed error, writes nothing through a symlink, and sends the attacker no byte."""
    suffix = ".fifo" if FAMILY[entry] == "fifo" else ".sock"
    path = open_dir / f"victim{suffix}"
    precious = open_dir / "precious"
    precious.write_bytes(b"precious")
    where = Path(str(path) + ".lock") if plant.startswith("lock") else path
    proc, results = squat(plant, where, str(precious))
    with pytest.raises(PLANTED[FAMILY[entry]][plant]):
        victim_call(entry, str(path), timeout=1.0)
    assert squatter_got(where, proc, results)[3] == b""
    assert precious.read_bytes() == b"precious"
    if FAMILY[entry] == "listen":
        assert not any(p.name.startswith(".") for p in open_dir.iterdir())  # no temp dir left


# -- 4. race the waiting client -------------------------------------------------------------


@pytest.mark.parametrize("entry", ["connect", "aio.connect", "ipc", "cli-send", "cli-recv"])
def test_a_waiting_client_never_talks_to_a_listener_of_another_user(
    open_dir: Path, entry: str
) -> None:
    """The victim waits on a path in a shared directory (``wait_for_listener=True``; ``IPC``
    and the CLI wait because the path is taken by a FIFO, so they can neither connect
    nor listen); the attacker's listener appears there first."""
    path = open_dir / "victim.sock"
    proc, results = squat("fifo_then_socket", path)
    with pytest.raises(PipePermissionError, match=f"uid {ATTACKER}"):
        victim_call(entry, str(path), timeout=WAIT)
    assert squatter_got(path, proc, results) == ("accepted", 1, "got", b"")


# -- 5. race listen ----------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ["listen", "aio.listen"])
def test_listen_racing_another_user_fails_typed_or_wins_safely(open_dir: Path, entry: str) -> None:
    """The attacker binds the path (and lets go) over and over while the victim listens:
    each ``listen`` fails with a typed error or owns a socket of its own, which only
    the victim's clients reach; the attacker gets no byte."""
    path = str(open_dir / "victim.sock")
    proc, results = run_as(ATTACKER, {}, "bind_race", path, 400)
    assert results.get(timeout=WAIT) == ("ready",)
    failed: list[str] = []
    served = 0
    deadline = time.monotonic() + 2 * WAIT
    while proc.is_alive() and time.monotonic() < deadline:
        try:
            served += listen_and_check(entry, path)
        except (npipes.PipeInUseError, PipePermissionError) as exc:
            failed.append(type(exc).__name__)
    _, (_, won, _, got) = outcome(proc, results)
    assert got == b"", got
    assert served + len(failed) > 0, f"attacker bound {won} times"


def listen_and_check(entry: str, path: str) -> int:
    """Listen once; 1 if a client reached this very listener, 0 if the path was taken."""

    def reach() -> bool:
        try:
            with npipes.connect(path, timeout=5) as conn:  # root: any uid but the attacker's
                conn.send(b"mine", timeout=5)
        except (PipePermissionError, npipes.PipeNotFoundError):
            return False  # the attacker replaced or removed the file (the directory is 0777)
        return True

    if entry == "listen":
        with npipes.listen(path) as listener:
            if not reach():
                return 0
            with listener.accept(timeout=5) as conn:
                assert conn.peer.uid == 0
                assert conn.recv(timeout=5) == b"mine"
            return 1

    async def main() -> int:
        async with await npipes.aio.listen(path) as listener:
            if not await asyncio.to_thread(reach):
                return 0
            async with await listener.accept(timeout=5) as conn:
                assert conn.peer.uid == 0
                assert await conn.recv(timeout=5) == b"mine"
            return 1

    return asyncio.run(main())


# -- 6. allow_other_users and allowed_uids ----------------------------------------------------


@pytest.mark.parametrize("entry", ["listen", "aio.listen", "serve", "aio.serve"])
def test_allowed_users_get_in_and_others_do_not(open_dir: Path, entry: str) -> None:
    """A non-root victim listens with ``allow_other_users=True``: the attacker's uid gets
    in, but only when its client trusts that listener (``allowed_uids``); a client that
    allows some other uid refuses it; a listener without ``allow_other_users`` lets
    nobody else in (``test_another_user_cannot_get_in``)."""
    path = str(open_dir / "shared.sock")
    proc, results = run_as(VICTIM, {}, "victim_serve", entry, path, True)
    try:
        assert results.get(timeout=WAIT) == ("ready", path)
        out = call_as(ATTACKER, {}, "allowed_attack", path, VICTIM)
        for front in ("connect", "aio.connect"):
            assert out[front, "none"][1] == "PipePermissionError", out
            assert out[front, "other"][1] == "PipePermissionError", out
            assert out[front, "victim"] == ("answered", b"echo:let-in"), out
        assert call_as(VICTIM, {}, "own_client", entry, path, b"stop") == b"echo:stop"
        reports, _ = outcome(proc, results)
    finally:
        if proc.is_alive():
            proc.kill()
    assert reports == [("got", b"let-in"), ("got", b"let-in"), ("got", b"stop")]


# -- 7. FIFOs: another user cannot write to or read from ours ---------------------------------


@pytest.mark.parametrize("victim", ["root", "user"])
def test_another_user_cannot_open_our_fifo(pipe_name: str, sticky_tmp: Path, victim: str) -> None:
    """The FIFO is 0600 in our 0700 directory: the attacker, naming it by its path, gets a
    typed ``PipePermissionError`` from ``open_writer`` and ``open_reader``, and the OS says
    no to a plain open; our reader receives nothing from it."""
    env = env_of(sticky_tmp)
    if victim == "root":
        reader = npipes.fifo.open_reader(pipe_name)
        path = npipes.fifo.path(pipe_name)
    else:
        path = str(sticky_tmp / f"npipes-{VICTIM}" / f"{pipe_name}.fifo")
        proc, results = run_as(VICTIM, env, "fifo_victim", pipe_name)
        assert results.get(timeout=WAIT) == ("ready", path)
    try:
        out = call_as(ATTACKER, env, "fifo_attack", path)
        assert out["raw"] == "EACCES", out
        for end in ("writer", "reader"):
            assert out[end][1] == "PipePermissionError", out
        if victim == "root":
            with npipes.fifo.open_writer(pipe_name, timeout=WAIT) as writer:
                writer.send("mine")
            assert reader.recv(timeout=WAIT) == "mine"  # the first line is ours
        else:
            assert call_as(VICTIM, env, "fifo_write", pipe_name, "mine") is None
            _, got = outcome(proc, results)
            assert got == "mine"
    finally:
        if victim == "root":
            reader.close()
