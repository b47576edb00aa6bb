"""POSIX FIFOs (``mkfifo``): one-way byte streams for shell interop.

The only ``os.mkfifo`` user in npipes. A FIFO is created 0600 (less the
umask: it never exists with wider access) in the same private
0700 directory as the sockets. The reader also holds a write end open, so it
sees no end-of-file between two writers (``echo a > p; echo b > p``); it ends
when closed. Writes of at most PIPE_BUF bytes are atomic: frames that small
from several writers never interleave; larger ones can.

Both ends open the FIFO with ``O_NOFOLLOW`` and check what they opened
(``fstat``): a FIFO owned by you (a writer also accepts root's), in a private
directory that passes the listeners' checks, so another user cannot plant a
FIFO, or a symlink to one, and read what a writer sends.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import stat
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, final

from npipes._deadline import seconds
from npipes.errors import (
    ConnectionClosedError,
    PipeNotFoundError,
    PipePermissionError,
    PipeTimeoutError,
    translate_os_error,
)

from ._base import PeerInfo

if TYPE_CHECKING:
    from npipes._deadline import Deadline
    from npipes._names import Address
    from npipes._types import Buffer

assert sys.platform != "win32"  # before importing unix.py, so mypy --platform win32 skips us

from .unix import _poll, ensure_private_dir, wait_ms, write_all  # noqa: E402

__all__ = ["PIPE_BUF", "FifoStream", "make_fifo", "open_fifo"]

PIPE_BUF: Final = select.PIPE_BUF


def make_fifo(address: Address) -> str:
    """Create the FIFO for ``address`` (mode 0600) unless it exists; return its path.

    Raises:
        PipePermissionError: the path exists and is not a FIFO we own.
    """
    if address.private_dir is not None:
        ensure_private_dir(address.private_dir, create=True)
    path = address.path
    try:
        # 0600 less the umask is never wider than 0600: no process-wide umask change
        # (it would change the mode of files other threads create meanwhile).
        os.mkfifo(path, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise translate_os_error(exc, "mkfifo", address=path) from exc
    st = os.lstat(path)
    if not stat.S_ISFIFO(st.st_mode) or st.st_uid != os.getuid():
        raise PipePermissionError(
            f"{path} exists but is not a FIFO owned by you; remove it or use another name",
            address=path,
        )
    return path


@final
class FifoStream:
    """One end of a FIFO, as a RawStream: a reader cannot send, a writer cannot receive."""

    message_mode = False
    message_end = True

    def __init__(self, fd: int, *, readable: bool, path: str, keep_open: int = -1) -> None:
        try:
            self._wake_r, self._wake_w = os.pipe()
        except OSError as exc:  # EMFILE: the descriptors handed to us are ours to close
            for own in (fd, keep_open):
                if own >= 0:
                    os.close(own)
            raise translate_os_error(exc, "open FIFO", address=path) from exc
        self._fd = fd
        self._keep_open = keep_open  # the reader's own write end: no EOF between writers
        self._readable = readable
        self._path = path
        self._closed = False
        self._pid = os.getpid()  # close() in a forked child must not wake the parent's reader

    @property
    def peer(self) -> PeerInfo:
        return PeerInfo(pid=None)  # a FIFO does not know who is on the other end

    def recv_into(self, buffer: memoryview, deadline: Deadline) -> int:
        if not self._readable:
            raise ConnectionClosedError("this FIFO end is for writing only", address=self._path)
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            if self._closed:
                raise ConnectionClosedError("the FIFO was closed", address=self._path)
            try:
                return os.readv(self._fd, [buffer])
            except BlockingIOError:
                pass
            except OSError as exc:
                raise translate_os_error(exc, "read", address=self._path) from exc
            if not poller.poll(wait_ms(deadline)) and deadline.expired():
                raise PipeTimeoutError(
                    f"recv timed out after {seconds(deadline.timeout)}", timeout=deadline.timeout
                )

    def send(self, buffers: Sequence[Buffer], deadline: Deadline) -> None:
        if self._readable:
            raise ConnectionClosedError("this FIFO end is for reading only", address=self._path)
        if len(buffers) > 1 and sum(memoryview(b).nbytes for b in buffers) <= PIPE_BUF:
            buffers = [b"".join(buffers)]  # one write: atomic up to PIPE_BUF
        fd = self._fd
        try:
            write_all(
                buffers,
                lambda views: os.writev(fd, views),
                lambda: _poll(fd, select.POLLOUT, deadline, "send"),
            )
        except PipeTimeoutError:
            raise  # a TimeoutError is an OSError: keep it (and its ``partial``) as it is
        except OSError as exc:
            raise translate_os_error(exc, "write", address=self._path) from exc

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if os.getpid() == self._pid:  # the wake-up pipe is shared with a forked parent
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")  # wakes a reader blocked in another thread
        for fd in (self._fd, self._keep_open, self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"unclosed npipes FIFO {self._path!r}", ResourceWarning, 2)
            self.close()


def _open_checked(path: str, flags: int, *, trusted: tuple[int, ...]) -> int:
    """Open the FIFO at ``path`` without following a symlink; check it is a FIFO owned
    by a ``trusted`` uid. Returns the descriptor.

    Raises:
        PipePermissionError: a symlink, not a FIFO, or another user's FIFO.
        OSError: the open failed otherwise (ENXIO: no reader yet).
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a symlink (EMLINK: BSD)
            raise PipePermissionError(
                f"{path} is a symlink; npipes opens only the FIFO itself. Remove it or"
                " give the FIFO's real path.",
                address=path,
            ) from exc
        raise
    try:
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISFIFO(st.st_mode) or st.st_uid not in trusted:
        os.close(fd)
        what = (
            "is not a FIFO"
            if not stat.S_ISFIFO(st.st_mode)
            else (
                f"belongs to uid {st.st_uid}, not to you (uid {os.getuid()});"
                " another user could read what you write"
            )
        )
        raise PipePermissionError(f"{path} {what}; remove it or use another name", address=path)
    return fd


def open_fifo(address: Address, *, write: bool, deadline: Deadline, create: bool) -> FifoStream:
    """Open the FIFO of ``address`` for reading or writing.

    A writer waits (up to the deadline) for a reader to open the FIFO, since
    writing to a FIFO nobody reads fails; a reader does not wait for writers.
    Both check the private directory (bare names) and what they opened.

    Raises:
        PipeNotFoundError: no FIFO there (and not creating it), or no reader
            came in time for a writer.
        PipePermissionError: the directory is not safe, or the path is a
            symlink, not a FIFO, or another user's.
    """
    me = os.getuid()
    if create:
        path = make_fifo(address)
    else:
        path = address.path
        if address.private_dir is not None:
            ensure_private_dir(address.private_dir, create=False)
        try:
            os.lstat(path)
        except FileNotFoundError as exc:
            raise PipeNotFoundError(
                f"no FIFO at {path}; create it with npipes.fifo.open_reader first",
                address=path,
            ) from exc
        except OSError as exc:  # EACCES: another user's directory
            raise translate_os_error(exc, "open FIFO", address=path) from exc
    if not write:
        try:
            fd = _open_checked(path, os.O_RDONLY | os.O_NONBLOCK, trusted=(me,))
            try:
                keep = _open_checked(path, os.O_WRONLY | os.O_NONBLOCK, trusted=(me,))
                if not os.path.samestat(os.fstat(fd), os.fstat(keep)):
                    os.close(keep)
                    raise PipePermissionError(
                        f"{path} was replaced while it was opened; try again", address=path
                    )
            except BaseException:
                os.close(fd)
                raise
        except OSError as exc:
            if isinstance(exc, PipePermissionError):
                raise
            raise translate_os_error(exc, "open FIFO", address=path) from exc
        return FifoStream(fd, readable=True, path=path, keep_open=keep)
    pause = 0.001
    while True:
        try:
            fd = _open_checked(path, os.O_WRONLY | os.O_NONBLOCK, trusted=(me, 0))
            return FifoStream(fd, readable=False, path=path)
        except PipePermissionError:
            raise
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise translate_os_error(exc, "open FIFO", address=path) from exc
            if deadline.expired():
                raise PipeNotFoundError(
                    f"nobody reads the FIFO {path}; start the reader first or pass a timeout",
                    address=path,
                ) from exc
        left = deadline.remaining()
        select.select([], [], [], pause if left is None else min(pause, left))
        pause = min(pause * 2, 0.05)
