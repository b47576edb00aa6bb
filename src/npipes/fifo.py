"""``npipes.fifo``: named FIFOs (``mkfifo``) for one-way shell interop, POSIX only.

    reader = npipes.fifo.open_reader("events")     # creates the FIFO, 0600
    # elsewhere:  echo hello > "$(python -m npipes fifo-path events)"
    for line in reader: ...

Both ends are :class:`npipes.Connection` objects with the same framings
(default ``"lines"``): the reader only receives, the writer only sends. The
reader keeps reading across writers that come and go; it ends when closed.

Atomicity (PIPE_BUF): with several writers, a message written in one go of at
most ``PIPE_BUF`` bytes (4096 on Linux, 512 guaranteed by POSIX) is never
interleaved with another writer's; larger ones can be. npipes writes each
message of at most PIPE_BUF bytes with one ``write``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _backend
from ._deadline import Deadline
from ._frame import DEFAULT_MAX_MESSAGE_SIZE
from ._framings import get_codec
from ._names import resolve
from ._options import Settings, check_limit
from .connection import Connection

if TYPE_CHECKING:
    from ._framings import Codec

__all__ = ["PIPE_BUF", "open_reader", "open_writer", "path"]

PIPE_BUF = 512
"""Largest write POSIX guarantees atomic on a FIFO (Linux: 4096, ``select.PIPE_BUF``)."""


def _require_fifo() -> None:
    if not _backend.HAS_FIFO:
        raise OSError("FIFOs are POSIX only; on Windows use npipes.listen/connect (named pipes)")


def path(name: str) -> str:
    """The FIFO's path for ``name``: ``<private dir>/NAME.fifo``, or an absolute path as given."""
    return resolve(name, suffix=".fifo").path


def _open(
    name: str,
    *,
    write: bool,
    framing: str | Codec,
    timeout: float | None,
    max_message_size: int | None,
    create: bool,
) -> Connection:
    _require_fifo()
    from ._backend.fifo import open_fifo  # type: ignore[attr-defined, unused-ignore]

    settings = Settings(
        name=name,
        address=resolve(name, suffix=".fifo"),
        codec=get_codec(framing),
        max_message_size=check_limit(max_message_size),
    )
    stream = open_fifo(settings.address, write=write, deadline=Deadline(timeout), create=create)
    return Connection(stream, settings)


def open_reader(
    name: str,
    *,
    framing: str | Codec = "lines",
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
) -> Connection:
    """Create the FIFO (0600, in the private directory) if needed and open it for reading.

    ``recv()`` waits for writers; the reader sees no end between writers.
    """
    return _open(
        name,
        write=False,
        framing=framing,
        timeout=None,
        max_message_size=max_message_size,
        create=True,
    )


def open_writer(
    name: str,
    *,
    framing: str | Codec = "lines",
    timeout: float | None = None,
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
) -> Connection:
    """Open an existing FIFO for writing, waiting up to ``timeout`` s for a reader.

    The writer checks what it opens as a listener does: the private directory
    (bare names), no symlink, a FIFO owned by you (or root), so another user
    cannot plant a FIFO and read what you write.

    Raises:
        PipeNotFoundError: no FIFO, or no reader came in time.
        PipePermissionError: the directory is unsafe, or the path is a symlink,
            not a FIFO, or another user's FIFO.
    """
    return _open(
        name,
        write=True,
        framing=framing,
        timeout=timeout,
        max_message_size=max_message_size,
        create=False,
    )
