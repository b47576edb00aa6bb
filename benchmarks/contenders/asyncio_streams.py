"""``asyncio-streams``: asyncio Unix streams, an 8-byte length prefix and ``readexactly``."""

from __future__ import annotations

import asyncio
import os
import platform
import struct
import sys
from typing import TYPE_CHECKING, ClassVar, final

from .base import AsyncContender, AsyncEnd, AsyncServer

if TYPE_CHECKING:
    from .base import ARecv, ASend, Data

assert sys.platform != "win32"  # Unix sockets; the registry imports this on POSIX only

__all__ = ["AsyncioStreams"]

_HEADER = struct.Struct("<Q")
_JOIN_MAX = 1024  # up to this size, header + payload go as one write


@final
class _End(AsyncEnd):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    def sender(self, size: int) -> ASend:
        writer = self._writer
        pack = _HEADER.pack

        async def send_small(payload: Data) -> None:
            writer.write(pack(len(payload)) + payload)
            await writer.drain()

        async def send_large(payload: Data) -> None:
            writer.write(pack(len(payload)))
            writer.write(payload)
            await writer.drain()

        return send_small if size <= _JOIN_MAX else send_large

    def receiver(self, size: int) -> ARecv:
        readexactly = self._reader.readexactly
        unpack = _HEADER.unpack

        async def recv() -> bytes:
            (length,) = unpack(await readexactly(8))
            return await readexactly(length)

        return recv

    async def aclose(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()


@final
class _Server(AsyncServer):
    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._accepted: asyncio.Future[_End] = asyncio.get_running_loop().create_future()

    async def start(self, address: str) -> None:
        self._server = await asyncio.start_unix_server(self._on_client, address)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._accepted.done():
            self._accepted.set_result(_End(reader, writer))

    async def accept(self) -> AsyncEnd:
        return await self._accepted

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()


@final
class AsyncioStreams(AsyncContender):
    name: ClassVar[str] = "asyncio-streams"
    summary: ClassVar[str] = "asyncio.start_unix_server / open_unix_connection, readexactly"
    platforms: ClassVar[frozenset[str]] = frozenset({"posix"})

    def versions(self) -> dict[str, str]:
        return {"python": platform.python_version()}

    def address(self, tag: str, tmpdir: str) -> str:
        return os.path.join(tmpdir, f"{tag}.sock")

    async def listen(self, address: str) -> AsyncServer:
        server = _Server()
        await server.start(address)
        return server

    async def connect(self, address: str) -> AsyncEnd:
        reader, writer = await asyncio.open_unix_connection(address)
        return _End(reader, writer)
