"""Peers for the security matrix (``tests/test_security_*.py``): a victim, an own-user
client or an attacker, each in its own process and as its own uid.

``as_user`` runs one of the functions in ``ROLES`` in a spawned child after
dropping to a uid (0: stay root), with an environment of its own (so a bare
name resolves into the test's temp directory). Every role reports through a
queue; every blocking step has a timeout. Run as a script, ``memserver``
starts a server whose memory the slowloris and amplification tests measure.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import npipes
import npipes.aio
import npipes.cli  # imported before dropping root: the stdlib may be unreadable then
import npipes.fifo
from npipes._frame import encode_frame
from npipes._names import resolve
from npipes.ipc import IPC

if TYPE_CHECKING:
    import multiprocessing.queues

    Queue = multiprocessing.queues.Queue[tuple[Any, ...]]

WAIT = 30.0
ATTACKER = 4242
"""The hostile local user (no passwd entry needed)."""
VICTIM = 4343
"""The victim's uid when it is not root."""
ATTACK = b"attack"
IPC_HEADER = b"\x00npipes-ipc/1 message"


def become(uid: int) -> None:
    """Drop every privilege: become ``uid`` (group ``uid``, no supplementary groups)."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def describe(exc: BaseException) -> tuple[str, bool, bool, str]:
    """(type name, is an npipes error, is a PermissionError, message): picklable."""
    return (
        type(exc).__name__,
        isinstance(exc, npipes.NpipesError),
        isinstance(exc, PermissionError),
        str(exc),
    )


def as_user(
    uid: int, env: dict[str, str | None], role: str, args: tuple[Any, ...], results: Queue
) -> None:
    """Run ``ROLES[role](results, *args)`` as ``uid`` with ``env`` applied; report
    ``("done", value)`` or ``("error", describe(exc))``."""
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    tempfile.tempdir = None
    if uid:
        become(uid)
    os.umask(0o022)
    try:
        value = ROLES[role](results, *args)
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(("error", describe(exc)))
    else:
        results.put(("done", value))


def cli(*args: str, timeout: float = WAIT) -> tuple[int, str, str]:
    """Run the ``npipes`` command line ARGS as this process's user: (exit code, stdout, stderr).

    A fresh ``python -m npipes`` when this user may run this interpreter; else
    (it lives in root's 0700 home) ``npipes.cli.main`` in this process.
    """
    if os.access(sys.executable, os.X_OK):
        done = subprocess.run(
            [sys.executable, "-m", "npipes", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return done.returncode, done.stdout, done.stderr
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = npipes.cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


# -- the victim: an endpoint serving its own user ------------------------------------


def victim_serve(results: Queue, entry: str, name: str, allow_other_users: bool = False) -> str:
    """Serve ``name`` through ``entry``; report ``("ready", path)``, then ``("got", message)``
    for each message, and reply ``b"echo:" + message``; end after a ``stop`` message."""
    options: dict[str, Any] = {"allow_other_users": True} if allow_other_users else {}
    if entry == "listen":
        with npipes.listen(name, **options) as listener:
            results.put(("ready", listener.address))
            while True:
                with listener.accept(timeout=2 * WAIT) as conn:
                    try:
                        message = conn.recv(timeout=WAIT)
                    except npipes.ConnectionClosedError:
                        continue  # a client that refused us (it did not trust our uid)
                    results.put(("got", message))
                    conn.send(b"echo:" + message, timeout=WAIT)
                    if message == b"stop":
                        return "stopped"
    if entry == "aio.listen":

        async def aio_listen() -> str:
            async with await npipes.aio.listen(name, **options) as listener:
                results.put(("ready", listener.address))
                while True:
                    async with await listener.accept(timeout=2 * WAIT) as conn:
                        try:
                            message = await conn.recv(timeout=WAIT)
                        except npipes.ConnectionClosedError:
                            continue  # a client that refused us (it did not trust our uid)
                        results.put(("got", message))
                        await conn.send(b"echo:" + message, timeout=WAIT)
                        if message == b"stop":
                            return "stopped"

        return asyncio.run(aio_listen())
    if entry == "serve":
        stopped = threading.Event()

        def handler(conn: npipes.Connection) -> None:
            message = conn.recv(timeout=WAIT)
            results.put(("got", message))
            conn.send(b"echo:" + message, timeout=WAIT)
            if message == b"stop":
                stopped.set()

        with npipes.serve(name, handler, **options) as server:
            results.put(("ready", server.address))
            stopped.wait(3 * WAIT)
        return "stopped"
    if entry == "aio.serve":

        async def aio_serve() -> str:
            stopped = asyncio.Event()

            async def handler(conn: npipes.aio.Connection) -> None:
                message = await conn.recv(timeout=WAIT)
                results.put(("got", message))
                await conn.send(b"echo:" + message, timeout=WAIT)
                if message == b"stop":
                    stopped.set()

            async with await npipes.aio.serve(name, handler, **options) as server:
                results.put(("ready", server.address))
                await asyncio.wait_for(stopped.wait(), 3 * WAIT)
            return "stopped"

        return asyncio.run(aio_serve())
    if entry == "ipc":
        with IPC(name, timeout=2 * WAIT) as ipc:  # nobody there yet: it listens
            results.put(("ready", resolve(name).path))
            while True:
                message = ipc.receive_message()
                results.put(("got", message))
                if message == b"stop":
                    return "stopped"
    if entry == "cli":
        path = resolve(name).path
        done: list[tuple[int, str, str]] = []
        args = ("recv", "--name", name, "--count", "2", "--timeout", str(2 * WAIT))
        thread = threading.Thread(target=lambda: done.append(cli(*args, timeout=3 * WAIT)))
        thread.start()
        deadline = time.monotonic() + WAIT
        while not os.path.exists(path) and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.02)
        results.put(("ready", path))
        thread.join(4 * WAIT)
        code, out, err = done[0]
        for line in out.splitlines():
            results.put(("got", line.encode()))
        return f"exit {code} {err}"
    raise ValueError(entry)


def own_client(results: Queue, entry: str, name: str, message: bytes) -> object:
    """The victim's own user talking to its endpoint: returns the reply (or None)."""
    if entry in ("listen", "serve"):
        with npipes.connect(name, timeout=WAIT) as conn:
            conn.send(message, timeout=WAIT)
            return conn.recv(timeout=WAIT)
    if entry in ("aio.listen", "aio.serve"):

        async def talk() -> object:
            async with await npipes.aio.connect(name, timeout=WAIT) as conn:
                await conn.send(message, timeout=WAIT)
                return await conn.recv(timeout=WAIT)

        return asyncio.run(talk())
    if entry == "ipc":
        with IPC(name, timeout=WAIT) as ipc:
            ipc.send_message(message)
        return None
    if entry == "cli":
        code, _, err = cli("send", "--name", name, "--timeout", str(WAIT), message.decode())
        return (code, err)
    raise ValueError(entry)


# -- the attacker ------------------------------------------------------------------------


def raw_attack(path: str) -> str:
    """Connect with a plain socket, send an IPC header and a message, read the answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(WAIT)
        try:
            sock.connect(path)
        except PermissionError:
            return "EACCES"
        try:
            sock.sendall(encode_frame(IPC_HEADER) + encode_frame(ATTACK))
            answer = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return "closed"
        return "closed" if answer == b"" else f"answered {answer!r}"
    finally:
        sock.close()


def api_attack(
    path: str, front: str, allowed_uids: tuple[int, ...] = (), message: bytes = ATTACK
) -> object:
    """Try ``front`` (connect, aio.connect, ipc, cli) on ``path``; the outcome, never raised."""
    try:
        if front == "connect":
            with npipes.connect(path, timeout=5, allowed_uids=allowed_uids) as conn:
                conn.send(message, timeout=5)
                return ("answered", conn.recv(timeout=5))
        if front == "aio.connect":

            async def talk() -> object:
                async with await npipes.aio.connect(
                    path, timeout=5, allowed_uids=allowed_uids
                ) as conn:
                    await conn.send(message, timeout=5)
                    return ("answered", await conn.recv(timeout=5))

            return asyncio.run(talk())
        if front == "ipc":
            with IPC(path, timeout=2) as ipc:
                ipc.send_message(ATTACK)
                return ("answered", None)
        if front == "cli":
            code, _, err = cli("send", "--name", path, "--timeout", "2", ATTACK.decode())
            return ("cli", code, err)
    except Exception as exc:  # noqa: BLE001 - reported to the test
        return ("error", *describe(exc))
    raise ValueError(front)


def attack_endpoint(
    results: Queue, path: str, fronts: tuple[str, ...], allowed_uids: tuple[int, ...] = ()
) -> dict[str, object]:
    """Every way in: a raw socket, then each npipes front end."""
    outcome: dict[str, object] = {"raw": raw_attack(path)}
    for front in fronts:
        outcome[front] = api_attack(path, front)
    if allowed_uids:
        outcome["connect+allowed"] = api_attack(path, "connect", allowed_uids)
        outcome["aio.connect+allowed"] = api_attack(path, "aio.connect", allowed_uids)
    return outcome


def allowed_attack(results: Queue, path: str, victim: int) -> dict[tuple[str, str], object]:
    """Connect trusting no other uid, some other uid, then the victim's uid."""
    outcome: dict[tuple[str, str], object] = {}
    for front in ("connect", "aio.connect"):
        for label, uids in (("none", ()), ("other", (9999,)), ("victim", (victim,))):
            outcome[front, label] = api_attack(path, front, uids, b"let-in")
    return outcome


def fifo_attack(results: Queue, path: str) -> dict[str, object]:
    """Write to, and read from, another user's FIFO by its path."""
    outcome: dict[str, object] = {}
    for label, opener in (
        ("writer", lambda: npipes.fifo.open_writer(path, timeout=5)),
        ("reader", lambda: npipes.fifo.open_reader(path)),
    ):
        try:
            opener().close()
            outcome[label] = ("opened",)
        except Exception as exc:  # noqa: BLE001 - reported to the test
            outcome[label] = ("error", *describe(exc))
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        outcome["raw"] = "opened"
    except PermissionError:
        outcome["raw"] = "EACCES"
    except OSError as exc:
        outcome["raw"] = f"errno {exc.errno}"
    return outcome


def fifo_victim(results: Queue, name: str) -> object:
    """Open a FIFO reader on ``name``; report ``("ready", path)``; return the first message."""
    with npipes.fifo.open_reader(name) as reader:
        results.put(("ready", npipes.fifo.path(name)))
        return reader.recv(timeout=2 * WAIT)


def fifo_write(results: Queue, name: str, message: str) -> None:
    with npipes.fifo.open_writer(name, timeout=WAIT) as writer:
        writer.send(message)


def squat(results: Queue, plant: str, where: str, target: str, done_timeout: float) -> object:
    """Plant ``plant`` at ``where`` before the victim comes, and report every byte it sends.

    ``plant``: ``dir`` (a 0777 directory with a socket and a FIFO for each name
    in ``target``: "NAME.sock,NAME.fifo"), ``dir_link`` (a symlink to such a
    directory), ``socket`` (listen at ``where``), ``socket_link`` (a symlink to a
    socket elsewhere), ``fifo`` (a 0666 FIFO), ``fifo_then_socket`` (a FIFO that a
    listening socket replaces 1.5 s later), ``fifo_link``, ``file`` (a regular
    file), ``lock_link`` (a symlink to ``target``), ``lock_file`` (our own file).
    """
    os.umask(0)
    listeners: list[socket.socket] = []
    fifos: list[int] = []

    def sock_at(path: str) -> None:
        lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lst.bind(path)
        os.chmod(path, 0o666)
        lst.listen(16)
        lst.setblocking(False)
        listeners.append(lst)

    def fifo_at(path: str) -> None:
        os.mkfifo(path, 0o666)
        fifos.append(os.open(path, os.O_RDWR | os.O_NONBLOCK))  # a reader, so writers may open

    elsewhere = where + ".attacker"
    if plant in ("dir", "dir_link"):
        directory = where if plant == "dir" else elsewhere
        os.mkdir(directory, 0o777)
        for file in target.split(","):
            (sock_at if file.endswith(".sock") else fifo_at)(os.path.join(directory, file))
        if plant == "dir_link":
            os.symlink(directory, where)
    elif plant == "socket":
        sock_at(where)
    elif plant == "socket_link":
        sock_at(elsewhere)
        os.symlink(elsewhere, where)
    elif plant in ("fifo", "fifo_then_socket"):
        fifo_at(where)
    elif plant == "fifo_link":
        fifo_at(elsewhere)
        os.symlink(elsewhere, where)
    elif plant == "file":
        with open(where, "wb"):
            pass
    elif plant == "lock_link":
        os.symlink(target, where)
    elif plant == "lock_file":
        with open(where, "wb"):
            pass
    else:
        raise ValueError(plant)
    results.put(("ready",))
    if plant == "fifo_then_socket":
        # The victim now waits (a FIFO is no listener); then a listener appears there,
        # atomically (renamed over the FIFO), so the victim never finds the path free.
        time.sleep(1.5)
        sock_at(elsewhere)
        os.rename(elsewhere, where)
    # Collect until the test says the victim is done (a file appears), then drain.
    deadline = time.monotonic() + done_timeout
    got = b""
    conns: list[socket.socket] = []
    while True:
        finished = os.path.exists(where + ".done") or time.monotonic() > deadline
        for lst in listeners:
            try:
                conn, _ = lst.accept()
            except BlockingIOError:
                continue
            conn.setblocking(False)
            conns.append(conn)
        for conn in conns:
            with contextlib.suppress(BlockingIOError):
                got += conn.recv(65536)
        for fd in fifos:
            with contextlib.suppress(BlockingIOError):
                got += os.read(fd, 65536)
        if finished:
            break
        time.sleep(0.02)
    for obj in (*conns, *listeners):
        obj.close()
    for fd in fifos:
        os.close(fd)
    return ("accepted", len(conns), "got", got)


def bind_race(results: Queue, path: str, tries: int) -> object:
    """Try to bind ``path`` (and plant its lock file) over and over while the victim listens."""
    got = b""
    won = 0
    os.umask(0)
    results.put(("ready",))
    for _ in range(tries):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as lst:
            try:
                lst.bind(path)
            except OSError:
                time.sleep(0.001)
                continue
            won += 1
            lst.listen(4)
            lst.settimeout(0.05)
            try:
                conn, _ = lst.accept()
            except TimeoutError:
                pass
            else:
                conn.settimeout(1)
                with contextlib.suppress(TimeoutError, ConnectionResetError):
                    got += conn.recv(65536)
                conn.close()
            with contextlib.suppress(OSError):
                os.unlink(path)
    return ("won", won, "got", got)


ROLES: dict[str, Callable[..., object]] = {
    "victim_serve": victim_serve,
    "own_client": own_client,
    "attack_endpoint": attack_endpoint,
    "squat": squat,
    "allowed_attack": allowed_attack,
    "fifo_attack": fifo_attack,
    "fifo_victim": fifo_victim,
    "fifo_write": fifo_write,
    "bind_race": bind_race,
}


# -- a server whose memory is measured (run as a script) ---------------------------------


def memserver(name: str, front: str, limit: int, idle_s: float, slots: int) -> None:
    """Echo server with ``max_message_size=limit`` and ``idle_timeout=idle_s`` (0: None);
    prints ``READY`` then runs until its stdin ends."""
    idle = idle_s or None
    if front == "sync":

        def handler(conn: npipes.Connection) -> None:
            for message in conn:
                conn.send(message, timeout=WAIT)

        with npipes.serve(
            name, handler, max_message_size=limit, idle_timeout=idle, max_connections=slots
        ):
            sys.stdout.write("READY\n")
            sys.stdout.flush()
            sys.stdin.read()
        return

    async def aio_handler(conn: npipes.aio.Connection) -> None:
        async for message in conn:
            await conn.send(message, timeout=WAIT)

    async def main() -> None:
        async with await npipes.aio.serve(
            name, aio_handler, max_message_size=limit, idle_timeout=idle, max_connections=slots
        ):
            sys.stdout.write("READY\n")
            sys.stdout.flush()
            await asyncio.to_thread(sys.stdin.read)

    asyncio.run(main())


if __name__ == "__main__":
    _, command, *rest = sys.argv
    if command != "memserver":
        raise SystemExit(f"unknown command {command!r}")
    memserver(rest[0], rest[1], int(rest[2]), float(rest[3]), int(rest[4]))
