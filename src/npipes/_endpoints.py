"""This user's endpoints, for ``npipes ls`` and ``npipes clean``.

POSIX: a bare name's socket file ``NAME.sock`` lives in the private per-user
directory (``_names.runtime_dir``), and its listener holds an advisory lock on
``NAME.sock.lock`` for its lifetime (``_backend/unix.py``). So the lock tells
alive from stale without connecting to anyone: on Linux ``/proc/locks`` names
the lock's holder (its pid too) without touching the lock; elsewhere a
non-blocking ``flock`` that succeeds (released at once) means nobody listens.
``/proc/net/unix`` cannot help here: npipes binds under a temporary name and
renames the file, and the kernel keeps the first name. Only a socket file
with no lock file (not made by npipes) is probed by a connect, since nothing
else can tell. ``clean`` removes a socket file only while holding its lock,
the same rule a listener follows, so it never removes a live endpoint.

Windows: the pipes in ``\\\\.\\pipe\\`` are listed (every one is alive: a pipe
exists only while a server holds an instance). Owner and server pid would
need opening the pipe, that is connecting to it, so they are not shown.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Final, final

from ._names import runtime_dir
from .errors import PipeOSError

__all__ = ["Endpoint", "clean", "list_endpoints", "where_listed"]

_PIPE_DIR: Final = "\\\\.\\pipe\\"


@final
@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint as ``npipes ls`` shows it."""

    name: str
    address: str
    state: str  # "alive" or "stale"
    owner: str | None
    pid: int | None

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "address": self.address,
            "state": self.state,
            "owner": self.owner,
            "pid": self.pid,
        }


def where_listed() -> str:
    """The place ``list_endpoints`` looks in."""
    return _PIPE_DIR if sys.platform == "win32" else runtime_dir()


def list_endpoints() -> list[Endpoint]:
    """This user's endpoints, sorted by name (see the module docstring)."""
    if sys.platform == "win32":
        return _windows_pipes()
    else:  # an else block: mypy --platform win32 skips it
        from ._cli_posix import list_sockets

        return list_sockets()


def clean(*, dry_run: bool = False) -> list[str]:
    """Remove stale socket files (and their lock files); return the paths removed.

    A file is removed only while this process holds its lock, so a listener
    can neither be live nor start on it meanwhile (one starting at that very
    moment gets ``PipeInUseError`` and may retry). Nothing to do on Windows:
    a pipe disappears with its last server handle.
    """
    if sys.platform == "win32":
        return []
    else:
        from ._cli_posix import clean_sockets

        return clean_sockets(dry_run=dry_run)


def _windows_pipes() -> list[Endpoint]:
    try:
        names = sorted(os.listdir(_PIPE_DIR))
    except OSError as exc:  # e.g. Wine: WinError 66, it cannot enumerate the pipe namespace
        raise PipeOSError(
            f"cannot list {_PIPE_DIR} on this system ({exc.strerror or exc});"
            " use 'npipes where NAME' to get a pipe's address",
            address=_PIPE_DIR,
        ) from exc
    return [Endpoint(n, _PIPE_DIR + n, "alive", None, None) for n in names]
