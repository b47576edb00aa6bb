"""Map a portable pipe name to the OS address; pure, no I/O but reading the environment.

A bare name (letters, digits, ``.``, ``_``, ``-``; 1 to 100 characters) is
portable: ``\\\\.\\pipe\\NAME`` on Windows; on POSIX ``NAME.sock`` inside a
private per-user directory, ``$XDG_RUNTIME_DIR/npipes`` when that is set and
usable, else ``<tempdir>/npipes-<uid>``. An absolute path (POSIX) or a full
``\\\\.\\pipe\\...`` name (Windows) is used as given. Anything else raises
:class:`InvalidPipeNameError` naming the rule it breaks.

``dotnet=True`` names a pipe the way .NET does (docs/dotnet.md): on POSIX a
bare name is the socket ``<temp dir>/CoreFxPipe_NAME`` that .NET's and Mono's
``NamedPipeServerStream``/``NamedPipeClientStream`` use, with .NET's temp dir
(``$TMPDIR``, else ``/tmp``); ``\\\\.\\pipe\\NAME`` means the same there. That
directory is shared, so no private directory is checked: the listener's uid
check of ``connect`` is what keeps another user's socket out. On Windows it
changes nothing (.NET uses ``\\\\.\\pipe\\NAME`` too).

A bare name is private to its user on POSIX: the directory is 0700, and
another user's bare name resolves to that user's own directory. Endpoints
other users must reach (``allow_other_users=True``) take an absolute path in
a directory they can enter; the backend refuses a bare name for them.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, final

from .errors import InvalidPipeNameError

__all__ = ["Address", "dotnet_temp_dir", "resolve"]

_BARE: Final = re.compile(r"[A-Za-z0-9._-]{1,100}")
_WINDOWS_PREFIX: Final = "\\\\.\\pipe\\"
# sun_path holds 108 bytes on Linux, 104 on macOS/BSD, including the final NUL.
SUN_PATH_MAX: Final = 107 if sys.platform.startswith("linux") else 103
# Windows pipe names: the part after \\.\pipe\ may be up to 256 characters.
_WINDOWS_NAME_MAX: Final = 256  # the whole \\.\pipe\NAME string (CreateNamedPipe docs)


@final
@dataclass(frozen=True, slots=True)
class Address:
    """Where a name lives on this OS.

    Attributes:
        name: what the user passed.
        path: the OS address (socket path, or ``\\\\.\\pipe\\NAME``).
        private_dir: the per-user directory npipes owns and checks, for bare
            names on POSIX; None when the caller chose the path.
    """

    name: str
    path: str
    private_dir: str | None


def _rule(name: str, rule: str) -> InvalidPipeNameError:
    return InvalidPipeNameError(f"invalid pipe name {name!r}: {rule}", name=name)


def _check_bare(name: str) -> None:
    if not _BARE.fullmatch(name):
        if not name:
            raise _rule(name, "it is empty")
        if len(name) > 100:
            raise _rule(name, f"a bare name has at most 100 characters, not {len(name)}")
        raise _rule(
            name,
            "a bare name uses only letters, digits, '.', '_' and '-'"
            " (or pass an absolute path on POSIX, \\\\.\\pipe\\NAME on Windows)",
        )
    if set(name) == {"."}:
        raise _rule(name, "a bare name cannot be only dots")


def _uid() -> int:
    getuid: Callable[[], int] | None = getattr(os, "getuid", None)  # POSIX only
    if getuid is None:
        raise OSError("this OS has no uid; bare names need no directory here")
    return getuid()


def runtime_dir() -> str:
    """The private directory bare names live in on POSIX (not created here)."""
    uid = _uid()
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        try:
            st = os.stat(xdg)
        except OSError:
            st = None
        if (
            st is not None
            and stat.S_ISDIR(st.st_mode)
            and st.st_uid == uid
            and os.access(xdg, os.W_OK | os.X_OK)
        ):
            return os.path.join(xdg, "npipes")
    return os.path.join(tempfile.gettempdir(), f"npipes-{uid}")


def dotnet_temp_dir() -> str:
    """The directory .NET puts its pipes in on POSIX: ``$TMPDIR``, else ``/tmp``.

    .NET's ``Path.GetTempPath()`` reads only ``TMPDIR`` (an empty one counts as
    unset), unlike Python's ``tempfile``, which also tries other variables and
    skips unwritable directories; both sides must agree, so this follows .NET.
    """
    return os.path.abspath(os.environ.get("TMPDIR") or "/tmp")


def _resolve_posix(name: str, suffix: str = ".sock", *, dotnet: bool = False) -> Address:
    if "\0" in name:
        raise _rule(name, "it contains a NUL character")
    if name.startswith("/"):
        path, private = name, None  # .NET also uses a rooted pipe name as the path
    elif dotnet:
        bare = name[9:] if name[:9].lower() == _WINDOWS_PREFIX else name  # same pipe
        _check_bare(bare)
        path, private = os.path.join(dotnet_temp_dir(), "CoreFxPipe_" + bare), None
    else:
        _check_bare(name)
        private = runtime_dir()
        path = os.path.join(private, name + suffix)
    size = len(os.fsencode(path))
    if size > SUN_PATH_MAX:
        raise _rule(
            name,
            f"its socket path {path!r} is {size} bytes, too long for sun_path"
            f" (at most {SUN_PATH_MAX}); use a shorter name or path",
        )
    return Address(name, path, private)


def _resolve_windows(name: str) -> Address:
    if "\0" in name:
        raise _rule(name, "it contains a NUL character")
    if name[:9].lower() == _WINDOWS_PREFIX:
        rest = name[9:]
        if not rest:
            raise _rule(name, "nothing follows \\\\.\\pipe\\")
        if len(name) > _WINDOWS_NAME_MAX:
            raise _rule(
                name,
                f"a pipe name (with its \\\\.\\pipe\\ prefix) has at most"
                f" {_WINDOWS_NAME_MAX} characters",
            )
        return Address(name, name, None)
    _check_bare(name)
    return Address(name, _WINDOWS_PREFIX + name, None)


def resolve(
    name: str, *, platform: str = sys.platform, suffix: str = ".sock", dotnet: bool = False
) -> Address:
    """Return the :class:`Address` of ``name`` on ``platform``.

    ``suffix`` names the file of a bare name on POSIX (``".fifo"`` for FIFOs).
    ``dotnet``: name the pipe as .NET does (see the module docstring).

    Raises:
        InvalidPipeNameError: the name breaks a rule (the message says which).
        TypeError: ``name`` is not a ``str``.
    """
    if not isinstance(name, str):
        raise TypeError(f"a pipe name is a str, not {type(name).__name__}")
    if platform == "win32":
        return _resolve_windows(name)
    return _resolve_posix(name, suffix, dotnet=dotnet)
