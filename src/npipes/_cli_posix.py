"""POSIX half of ``npipes ls``/``clean``: socket files, their locks, /proc/locks.

See :mod:`npipes._endpoints` for the rules (alive = a listener holds the lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import stat
import sys
from typing import Final

assert sys.platform != "win32"

from ._backend.unix import _probe_live as probe_live  # noqa: E402
from ._endpoints import Endpoint  # noqa: E402
from ._names import runtime_dir  # noqa: E402

__all__ = ["clean_sockets", "list_sockets"]

_Key = tuple[int, int, int]  # (major, minor, inode) of a file
_SUFFIX: Final = ".sock"


def list_sockets() -> list[Endpoint]:
    """This user's endpoints, sorted by name (see the module docstring)."""
    directory = runtime_dir()
    try:
        entries = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    holders = _lock_holders()
    found = []
    for entry in entries:
        path = os.path.join(directory, entry)
        if not entry.endswith(_SUFFIX):
            continue
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISSOCK(st.st_mode):
            continue
        alive, pid = _liveness(path, holders)
        found.append(
            Endpoint(
                name=entry[: -len(_SUFFIX)],
                address=path,
                state="alive" if alive else "stale",
                owner=_user(st.st_uid),
                pid=pid,
            )
        )
    return found


def clean_sockets(*, dry_run: bool = False) -> list[str]:
    """Remove stale socket files (and their lock files); return the paths removed.

    A file is removed only while this process holds its lock, so a listener
    can neither be live nor start on it meanwhile (one starting at that very
    moment gets ``PipeInUseError`` and may retry). Nothing to do on Windows:
    a pipe disappears with its last server handle.
    """
    directory = runtime_dir()
    try:
        entries = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    removed: list[str] = []
    for entry in entries:
        if not entry.endswith(_SUFFIX):
            continue
        path = os.path.join(directory, entry)
        try:
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                continue
        except FileNotFoundError:
            continue
        if not os.path.lexists(path + ".lock"):
            if _probe_live(path):
                continue
            if not dry_run:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            removed.append(path)
            continue
        if _remove_if_unlocked(path, dry_run=dry_run):
            removed.append(path)
    return removed


def _remove_if_unlocked(path: str, *, dry_run: bool) -> bool:
    lock_path = path + ".lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False  # gone, a symlink, or not ours: leave it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a listener holds it: live
        try:
            same = os.path.samestat(os.lstat(lock_path), os.fstat(fd))
        except FileNotFoundError:
            same = False
        if not same:
            return False  # replaced meanwhile: a new listener's; leave it
        if not dry_run:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path)
        return True
    finally:
        os.close(fd)


def _liveness(path: str, holders: dict[_Key, int] | None) -> tuple[bool, int | None]:
    """(alive, listener pid) of the socket file ``path``."""
    lock_path = path + ".lock"
    try:
        st = os.lstat(lock_path)
    except FileNotFoundError:
        return _probe_live(path), None
    if holders is not None:
        pid = holders.get((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino))
        return pid is not None, pid
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return _probe_live(path), None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True, None
    finally:
        os.close(fd)  # closing releases the lock taken, if any
    return False, None


def _lock_holders() -> dict[_Key, int] | None:
    """Linux: the holder pid of every FLOCK in ``/proc/locks``; None without it."""
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    holders: dict[_Key, int] = {}
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234567 0 EOF" ("->" marks waiters)
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK" or fields[2] == "->":
            continue
        try:
            pid = int(fields[4])
            major, minor, ino = fields[5].split(":")
            key = (int(major, 16), int(minor, 16), int(ino))
        except ValueError:
            continue
        holders[key] = pid
    return holders


def _probe_live(path: str) -> bool:
    try:
        return probe_live(path)
    except OSError:
        return True  # cannot tell: treat as live, never remove it


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
