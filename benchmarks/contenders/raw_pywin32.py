"""``raw-pywin32``: the best plain pywin32 loop over a message-mode pipe (the Windows baseline).

One pipe message per message (the pipe keeps the boundaries, so no header),
64 KiB pipe buffers, synchronous handles. ``WriteFile`` sends; ``ReadFile``
reads into one preallocated ``AllocateReadBuffer`` of the message's size.
Small messages come back as the ``bytes`` ReadFile returns; from 64 KiB on an
OVERLAPPED structure (on the synchronous handle) makes ReadFile return the
buffer itself, so the payload is not copied.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, ClassVar, final

import pywintypes  # noqa: TID251 - raw pywin32 is what this contender measures
import win32file  # noqa: TID251
import win32pipe  # noqa: TID251

from .base import SyncContender, SyncEnd, SyncServer

if TYPE_CHECKING:
    from .base import Recv, Send

assert sys.platform == "win32" or not TYPE_CHECKING

__all__ = ["RawPywin32"]

_PIPE_BUFFER = 64 * 1024
_NO_COPY_MIN = 64 * 1024
_ERROR_PIPE_BUSY = 231
_ERROR_FILE_NOT_FOUND = 2


@final
class RawPipeEnd(SyncEnd):
    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def sender(self, size: int) -> Send:
        handle = self._handle
        write = win32file.WriteFile

        def send(payload: bytes | memoryview) -> None:
            write(handle, payload)

        return send

    def receiver(self, size: int) -> Recv:
        handle = self._handle
        buf = win32file.AllocateReadBuffer(max(size, 1))
        read = win32file.ReadFile
        if size < _NO_COPY_MIN:

            def recv() -> bytes:
                data: bytes = read(handle, buf)[1]
                return data

            return recv
        overlapped = pywintypes.OVERLAPPED()
        result = win32file.GetOverlappedResult

        def recv_no_copy() -> memoryview:
            read(handle, buf, overlapped)
            count: int = result(handle, overlapped, True)
            view: memoryview = buf[:count]
            return view

        return recv_no_copy

    def close(self) -> None:
        self._handle.Close()


@final
class _Server(SyncServer):
    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def accept(self) -> SyncEnd:
        win32pipe.ConnectNamedPipe(self._handle, None)  # 0 or ERROR_PIPE_CONNECTED: both fine
        return RawPipeEnd(self._handle)

    def close(self) -> None:
        self._handle.Close()


@final
class RawPywin32(SyncContender):
    name: ClassVar[str] = "raw-pywin32"
    summary: ClassVar[str] = (
        "message-mode pipe, WriteFile / ReadFile into a preallocated buffer, 64 KiB buffers"
    )
    platforms: ClassVar[frozenset[str]] = frozenset({"windows"})
    baseline: ClassVar[bool] = True

    def versions(self) -> dict[str, str]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return {"pywin32": version("pywin32")}
        except PackageNotFoundError:
            return {}

    def address(self, tag: str, tmpdir: str) -> str:
        return rf"\\.\pipe\npb-{tag}"

    def listen(self, address: str) -> SyncServer:
        handle = win32pipe.CreateNamedPipe(
            address,
            win32pipe.PIPE_ACCESS_DUPLEX,
            win32pipe.PIPE_TYPE_MESSAGE | win32pipe.PIPE_READMODE_MESSAGE | win32pipe.PIPE_WAIT,
            1,
            _PIPE_BUFFER,
            _PIPE_BUFFER,
            0,
            None,  # type: ignore[arg-type]  # default security; the stubs omit None
        )
        return _Server(handle)

    def connect(self, address: str) -> SyncEnd:
        deadline = time.monotonic() + 60
        while True:
            try:
                handle = win32file.CreateFile(
                    address,
                    win32file.GENERIC_READ | win32file.GENERIC_WRITE,
                    0,
                    None,
                    win32file.OPEN_EXISTING,
                    0,
                    None,
                )
                break
            except pywintypes.error as exc:
                if exc.winerror not in (_ERROR_PIPE_BUSY, _ERROR_FILE_NOT_FOUND):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        win32pipe.SetNamedPipeHandleState(int(handle), win32pipe.PIPE_READMODE_MESSAGE, None, None)
        return RawPipeEnd(handle)
