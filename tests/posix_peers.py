"""Peer programs for the POSIX tests (``test_posix_*.py``).

Module-level functions run by ``helpers.start`` in a fresh (spawned) process,
or, for the descriptor-limit peers, run as ``python posix_peers.py CMD ARGS``
so the limit never touches the test process. Every blocking step has a timeout.
"""

from __future__ import annotations

try:
    import resource
except ImportError:  # Windows: only POSIX-marked tests use it
    resource = None  # type: ignore[assignment]

import asyncio
import json
import os
import socket
import stat
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import multiprocessing.queues

WAIT = 30.0
SQUATTER = 4242
"""An unused uid: the "other local user" of the attack tests."""


def _reachable_by_all(path: str) -> bool:
    """Whether every user can traverse ``path`` and its parents."""
    path = os.path.realpath(path)
    while True:
        if not os.stat(path).st_mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def shared_base() -> str | None:
    """A directory other users can reach: the temp dir, else /tmp and friends (TMPDIR
    may be a private 0700 directory, where another uid cannot follow)."""
    for base in (tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(base) and _reachable_by_all(base):
            return base
    return None


def become(uid: int) -> None:
    """Drop every privilege: become ``uid`` (group ``uid``, no supplementary groups)."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def squat(
    directory: str | None,
    path: str,
    results: multiprocessing.queues.Queue[tuple[Any, ...]],
    clients: int = 1,
    accept_timeout: float = WAIT,
) -> None:
    """As another user: create ``directory`` (open to all) if given, listen at ``path``
    (mode 0666), and report every byte each of the first ``clients`` clients sends
    (or "no client" after ``accept_timeout`` s).

    This is the attack of issue 10 §2: the squatter gets there before the victim's
    own listener and waits for the victim's client.
    """
    become(SQUATTER)
    os.umask(0)
    if directory is not None:
        os.mkdir(directory, 0o777)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o666)
    listener.listen(8)
    listener.settimeout(accept_timeout)
    results.put(("ready",))
    for _ in range(clients):
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            results.put(("no client",))
            break
        conn.settimeout(WAIT)
        got = b""
        try:
            while chunk := conn.recv(65536):
                got += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        results.put(("got", got))
        conn.close()
    listener.close()


# -- descriptor limits (run as scripts) --------------------------------------------


def _open_fds() -> list[int]:
    return sorted(int(fd) for fd in os.listdir("/dev/fd"))


def _limit(extra: int) -> None:
    """Let this process open about ``extra`` more descriptors."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(_open_fds()) + 1 + extra, hard))


def _unlimit(soft: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def listen_emfile(name: str) -> dict[str, Any]:
    """Make ``listen`` fail at each step with EMFILE; report leaks and whether it recovers."""
    import npipes
    from npipes._names import resolve

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = _open_fds()
    failures: list[str] = []
    leaks: list[Any] = []
    for extra in range(12):
        _limit(extra)
        try:
            listener = npipes.listen(name)
        except Exception as exc:  # noqa: BLE001 - reported to the test
            _unlimit(soft)
            failures.append(f"{type(exc).__name__}: {exc}")
            if _open_fds() != before:
                leaks.append((extra, "fds", _open_fds(), before))
            if os.path.lexists(resolve(name).path):
                leaks.append((extra, "socket file left"))
            continue
        _unlimit(soft)
        listener.close()
        break
    # The name is usable again.
    with npipes.listen(name) as listener, npipes.connect(name, timeout=WAIT) as client:
        client.send("still works")
        with listener.accept(timeout=WAIT) as conn:
            works = conn.recv(timeout=WAIT) == "still works"
    return {"failures": failures, "leaks": leaks, "works": works}


def _fill_fds() -> list[int]:
    """Open descriptors until EMFILE; return them."""
    held = []
    while True:
        try:
            held.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            return held


def accept_emfile(name: str, flavour: str) -> dict[str, Any]:
    """Accept while out of descriptors; they are freed after a second.

    The accept must wait (not fail, not spin) and then return the client that
    was queued all along.
    """
    import npipes
    import npipes.aio

    _limit(64)
    held: list[int] = []
    freed = threading.Event()

    def free() -> None:
        time.sleep(1.0)
        for fd in held:
            os.close(fd)
        freed.set()

    def wait_for_client_then_fill() -> None:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        sys.stdin.readline()  # the test's client is queued in the backlog now
        held.extend(_fill_fds())
        threading.Thread(target=free).start()

    cpu0 = time.process_time()
    wall0 = time.monotonic()
    try:
        if flavour == "sync":
            with npipes.listen(name) as listener:
                wait_for_client_then_fill()
                cpu0, wall0 = time.process_time(), time.monotonic()
                with listener.accept(timeout=WAIT) as conn:
                    message = conn.recv(timeout=WAIT)
        else:

            async def main() -> object:
                nonlocal cpu0, wall0
                async with await npipes.aio.listen(name) as listener:
                    wait_for_client_then_fill()
                    cpu0, wall0 = time.process_time(), time.monotonic()
                    async with await listener.accept(timeout=WAIT) as conn:
                        return await conn.recv(timeout=WAIT)

            message = asyncio.run(main())
    except Exception as exc:  # noqa: BLE001 - reported to the test
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {
        "message": message,
        "freed_first": freed.is_set(),
        "cpu": time.process_time() - cpu0,
        "wall": time.monotonic() - wall0,
    }


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    result = {"listen_emfile": listen_emfile, "accept_emfile": accept_emfile}[command](*args)
    sys.stdout.write(json.dumps(result) + "\n")
