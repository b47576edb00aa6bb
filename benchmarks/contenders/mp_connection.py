"""``multiprocessing``: ``multiprocessing.connection`` Listener/Client, send_bytes/recv_bytes.

AF_UNIX on POSIX, AF_PIPE (overlapped named pipes) on Windows; no authkey.
"""

from __future__ import annotations

import os
import platform
import sys
from multiprocessing.connection import Client, Listener
from typing import TYPE_CHECKING, Any, ClassVar, final

from .base import SyncContender, SyncEnd, SyncServer

if TYPE_CHECKING:
    from .base import Recv, Send

__all__ = ["MultiprocessingConnection"]

_FAMILY = "AF_PIPE" if sys.platform == "win32" else "AF_UNIX"


@final
class _End(SyncEnd):
    def __init__(self, conn: Any) -> None:  # Connection, or PipeConnection on Windows
        self._conn = conn

    def sender(self, size: int) -> Send:
        send: Send = self._conn.send_bytes
        return send

    def receiver(self, size: int) -> Recv:
        recv: Recv = self._conn.recv_bytes
        return recv

    def close(self) -> None:
        self._conn.close()


@final
class _Server(SyncServer):
    def __init__(self, listener: Listener) -> None:
        self._listener = listener

    def accept(self) -> SyncEnd:
        return _End(self._listener.accept())

    def close(self) -> None:
        self._listener.close()


@final
class MultiprocessingConnection(SyncContender):
    name: ClassVar[str] = "multiprocessing"
    summary: ClassVar[str] = f"multiprocessing.connection {_FAMILY}, send_bytes / recv_bytes"

    def versions(self) -> dict[str, str]:
        return {"python": platform.python_version()}

    def address(self, tag: str, tmpdir: str) -> str:
        if sys.platform == "win32":
            return rf"\\.\pipe\npb-{tag}"
        else:  # (an else: mypy then checks each branch on its platform only)
            return os.path.join(tmpdir, f"{tag}.sock")

    def listen(self, address: str) -> SyncServer:
        return _Server(Listener(address, family=_FAMILY))

    def connect(self, address: str) -> SyncEnd:
        return _End(Client(address, family=_FAMILY))
