"""``npipes-ipc``: the 1.x facade, ``IPC(name).send_message`` / ``receive_message``."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, final

import npipes
from npipes.ipc import IPC

from .base import SyncContender, SyncEnd, SyncServer

if TYPE_CHECKING:
    from .base import Recv, Send

__all__ = ["NpipesIpc"]


@final
class _End(SyncEnd):
    def __init__(self, ipc: IPC) -> None:
        self._ipc = ipc

    def sender(self, size: int) -> Send:
        return self._ipc.send_message

    def receiver(self, size: int) -> Recv:
        return self._ipc.receive_message

    def close(self) -> None:
        self._ipc.close()


@final
class _Server(SyncServer):
    def __init__(self, ipc: IPC) -> None:
        self._ipc = ipc

    def accept(self) -> SyncEnd:
        return _End(self._ipc)  # IPC accepts on its first receive_message

    def close(self) -> None:
        self._ipc.close()


@final
class NpipesIpc(SyncContender):
    name: ClassVar[str] = "npipes-ipc"
    summary: ClassVar[str] = "npipes.ipc.IPC(name).send_message / receive_message"
    memory: ClassVar[bool] = False

    def versions(self) -> dict[str, str]:
        return {"npipes": npipes.__version__}

    def address(self, tag: str, tmpdir: str) -> str:
        return f"npb-{tag}"

    def listen(self, address: str) -> SyncServer:
        return _Server(IPC(address))  # nobody there yet: this side listens

    def connect(self, address: str) -> SyncEnd:
        # No timeout: a deadline would put every call on the timed (poll) path.
        return _End(IPC(address))  # the child listens already
