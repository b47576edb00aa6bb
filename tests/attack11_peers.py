"""Victims for tests/test_attack11_*.py, run as ``python attack11_peers.py MODE ARGS...``.

Each prints one line per step (flushed), so the test waits for lines, not sleeps.
"""

from __future__ import annotations

import sys


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _peak_kib() -> int:
    import resource  # POSIX only: imported here, never at module level

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def ipc_send_while_flooded(name: str, timeout: float) -> None:
    """An IPC sender (limit 1 MiB) waiting for its ack while the peer floods it.

    Prints ``connected``, then ``<outcome> <peak RSS growth in KiB>``.
    """
    from npipes.errors import NpipesError
    from npipes.ipc import IPC

    base = _peak_kib()
    with IPC(name, timeout=timeout, max_message_size=1 << 20) as ipc:
        say("connected")
        try:
            ipc.send_message(b"x")
            outcome = "sent"
        except NpipesError as exc:
            outcome = type(exc).__name__
        say(f"{outcome} {_peak_kib() - base}")


def _open_fds() -> set[int]:
    import os

    listed = {int(fd) for fd in os.listdir("/proc/self/fd")}
    return {fd for fd in listed if _is_open(fd)}  # not the one listdir itself used


def _is_open(fd: int) -> bool:
    import os

    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _with_free_fds(free: int, call: object) -> tuple[str, list[int]]:
    """Run ``call()`` with exactly ``free`` descriptors left; (outcome, fds it leaked)."""
    import gc
    import resource

    from npipes.errors import NpipesError

    assert callable(call)
    gc.collect()
    before = _open_fds()
    soft = unused = 0
    while soft in before or unused < free:  # the lowest limit leaving ``free`` numbers
        unused += soft not in before
        soft += 1
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        result = call()
    except NpipesError as exc:
        outcome = f"typed {type(exc).__name__}"
    except Exception as exc:  # noqa: BLE001 - what the test looks for: anything untyped
        outcome = f"UNTYPED {type(exc).__name__}: {exc}"
    else:
        result.close()
        outcome = "ok"
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    gc.collect()
    return outcome, sorted(_open_fds() - before)


def fifo_out_of_descriptors(name: str) -> None:
    """Open a FIFO reader, and a writer, with 0..6 descriptors free; one JSON line each."""
    import json
    import warnings

    import npipes.fifo

    warnings.simplefilter("ignore", ResourceWarning)
    with npipes.fifo.open_reader(name + "w") as reader:
        for free in range(7):
            for role, call in (
                ("reader", lambda: npipes.fifo.open_reader(name)),
                ("writer", lambda: npipes.fifo.open_writer(name + "w", timeout=5)),
            ):
                outcome, leaked = _with_free_fds(free, call)
                say(json.dumps({"role": role, "free": free, "outcome": outcome, "leaked": leaked}))
        assert reader is not None


def long_parent_parts(base: str) -> list[str]:
    """Directory names that take ``base`` to a 97-character parent, each at least one
    character long whatever ``len(base)`` is (up to 95: a 60-character base once ended
    with an empty name, a mkdir of the parent again, and failed at random in CI)."""
    parts: list[str] = []
    length = len(base)
    while length < 97 - 10:  # leaves 1 to 9 characters for the last name
        parts.append("d" * 8)
        length += 9
    parts.append("e" * (97 - length - 1))
    return parts


def listen_long_path_beside_a_thread(base: str) -> None:
    """Listen (``allow_other_users``) 300 times on a path too long for the temporary
    name next to it, while another thread creates files with mode 0666 under umask 022.

    Prints how many of that thread's files did not get 0644 (``umask`` is per process).
    """
    import os
    import stat
    import threading

    import npipes

    os.umask(0o022)
    parent = base
    for part in long_parent_parts(base):
        parent = os.path.join(parent, part)
        os.mkdir(parent)
    path = os.path.join(parent, "s.sock")  # 104 bytes: fits sun_path, PARENT/.XXXXXXXX/s does not
    files = os.path.join(base, "files")
    os.mkdir(files)
    stop = threading.Event()
    modes: list[int] = []

    def create_files() -> None:
        while not stop.is_set():
            name = os.path.join(files, "f")
            fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
            os.close(fd)
            os.unlink(name)

    creator = threading.Thread(target=create_files)
    creator.start()
    try:
        for _ in range(300):
            npipes.listen(path, allow_other_users=True).close()
    finally:
        stop.set()
        creator.join()
    wrong = [mode for mode in modes if mode != 0o644]
    say(f"{len(wrong)} of {len(modes)} {sorted({oct(mode) for mode in wrong})}")


def endpoints_out_of_descriptors(name: str) -> None:
    """listen, connect, IPC, serve, aio.listen, aio.connect and aio accept with 0..6
    descriptors free; one JSON line per call."""
    import asyncio
    import json
    import warnings

    import npipes
    import npipes.aio
    from npipes.ipc import IPC

    warnings.simplefilter("ignore", ResourceWarning)
    loop = asyncio.new_event_loop()  # before the limit: the loop needs descriptors of its own

    class Closing:
        def __init__(self, close: object) -> None:
            self.close = close

    def aio_listen() -> Closing:
        listener = loop.run_until_complete(npipes.aio.listen(name + "al"))
        return Closing(lambda: loop.run_until_complete(listener.aclose()))

    def aio_closing(conn: npipes.aio.Connection) -> Closing:
        return Closing(lambda: loop.run_until_complete(conn.aclose()))

    def aio_connect() -> Closing:
        return aio_closing(loop.run_until_complete(npipes.aio.connect(name + "l", timeout=5)))

    def aio_accept() -> Closing:
        return aio_closing(loop.run_until_complete(aio_listener.accept(timeout=5)))

    calls = {
        "listen": lambda: npipes.listen(name + "x"),
        "connect": lambda: npipes.connect(name + "l", timeout=5),
        "ipc": lambda: IPC(name + "i", timeout=0.5),
        "serve": lambda: npipes.serve(name + "s", lambda conn: None),
        "aio.listen": aio_listen,
        "aio.connect": aio_connect,
        "aio.accept": aio_accept,
    }
    with npipes.listen(name + "l", backlog=64) as listener:
        aio_listener = loop.run_until_complete(npipes.aio.listen(name + "aa", backlog=64))
        clients = [npipes.connect(name + "aa") for _ in range(7)]
        for free in range(7):
            for entry, call in calls.items():
                outcome, leaked = _with_free_fds(free, call)
                if entry in ("connect", "aio.connect") and outcome == "ok":
                    listener.accept(timeout=5).close()
                result = {"entry": entry, "free": free, "outcome": outcome, "leaked": leaked}
                say(json.dumps(result))
        for client in clients:
            client.close()
        loop.run_until_complete(aio_listener.aclose())
    loop.close()


def fifos_beside_a_thread(prefix: str) -> None:
    """Create 300 FIFO readers while another thread creates files with mode 0755 under
    umask 022; prints how many of that thread's files did not get 0755."""
    import os
    import stat
    import tempfile
    import threading

    import npipes.fifo

    os.umask(0o022)
    files = tempfile.mkdtemp(prefix="npa11f")
    stop = threading.Event()
    modes: list[int] = []

    def create_files() -> None:
        while not stop.is_set():
            name = os.path.join(files, "f")
            fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o755)
            modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
            os.close(fd)
            os.unlink(name)

    creator = threading.Thread(target=create_files)
    creator.start()
    try:
        for i in range(300):
            npipes.fifo.open_reader(f"{prefix}{i}").close()
            os.unlink(npipes.fifo.path(f"{prefix}{i}"))
    finally:
        stop.set()
        creator.join()
        os.rmdir(files)
    wrong = [mode for mode in modes if mode != 0o755]
    say(f"{len(wrong)} of {len(modes)} {sorted({oct(mode) for mode in wrong})}")


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "ipc-send-while-flooded":
        ipc_send_while_flooded(args[0], float(args[1]))
    elif mode == "fifo-out-of-descriptors":
        fifo_out_of_descriptors(args[0])
    elif mode == "listen-long-path-beside-a-thread":
        listen_long_path_beside_a_thread(args[0])
    elif mode == "endpoints-out-of-descriptors":
        endpoints_out_of_descriptors(args[0])
    elif mode == "fifos-beside-a-thread":
        fifos_beside_a_thread(args[0])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
