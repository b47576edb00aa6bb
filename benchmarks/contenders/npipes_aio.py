"""``npipes-aio``: npipes' asyncio front end, ``await conn.send`` / ``await conn.recv``."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, ClassVar, final

import npipes

from .base import AsyncContender, AsyncEnd, AsyncServer

if TYPE_CHECKING:
    from .base import ARecv, ASend

__all__ = ["NpipesAio"]

_TIMEOUT = 60.0


def _aio() -> Any:
    # npipes.aio is optional here (it may not exist in this checkout): typed loosely.
    return importlib.import_module("npipes.aio")


@final
class _End(AsyncEnd):
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def sender(self, size: int) -> ASend:
        send: ASend = self._conn.send
        return send

    def receiver(self, size: int) -> ARecv:
        recv: ARecv = self._conn.recv
        return recv

    async def aclose(self) -> None:
        await self._conn.aclose()


@final
class _Server(AsyncServer):
    def __init__(self, listener: Any) -> None:
        self._listener = listener

    async def accept(self) -> AsyncEnd:
        return _End(await self._listener.accept())

    async def aclose(self) -> None:
        await self._listener.aclose()


@final
class NpipesAio(AsyncContender):
    name: ClassVar[str] = "npipes-aio"
    summary: ClassVar[str] = "npipes.aio.connect/listen, await conn.send / conn.recv"

    def unavailable(self) -> str | None:
        try:
            _aio()
        except ImportError as exc:
            return f"npipes.aio is not importable ({exc})"
        return super().unavailable()

    def versions(self) -> dict[str, str]:
        return {"npipes": npipes.__version__}

    def address(self, tag: str, tmpdir: str) -> str:
        return f"npb-{tag}"

    async def listen(self, address: str) -> AsyncServer:
        return _Server(await _aio().listen(address))

    async def connect(self, address: str) -> AsyncEnd:
        return _End(await _aio().connect(address, timeout=_TIMEOUT, crc=False))
