"""npipes' sync API: ``npipes``, ``npipes-crc``, ``npipes-into`` and ``npipes-batch``."""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING, ClassVar, final

import npipes

from .base import RecvMany, SendMany, SyncContender, SyncEnd, SyncServer

if TYPE_CHECKING:
    from .base import Recv, Send

__all__ = ["Npipes", "NpipesBatch", "NpipesCrc", "NpipesInto"]

_CONNECT_TIMEOUT = 60.0


@final
class _End(SyncEnd):
    def __init__(self, conn: npipes.Connection, *, into: bool, batch: bool = False) -> None:
        self._conn = conn
        self._into = into
        self._batch = batch

    def sender(self, size: int) -> Send:
        return self._conn.send

    def receiver(self, size: int) -> Recv:
        if self._into:
            return functools.partial(self._conn.recv_into, bytearray(max(size, 1)))
        return self._conn.recv

    def batch_sender(self, size: int) -> SendMany | None:
        send_many: SendMany | None = getattr(self._conn, "send_many", None)
        return send_many

    def batch_receiver(self, size: int) -> RecvMany | None:
        return self._conn.recv_many if self._batch else None

    def close(self) -> None:
        self._conn.close()


@final
class _Server(SyncServer):
    def __init__(self, listener: npipes.Listener, *, into: bool, batch: bool = False) -> None:
        self._listener = listener
        self._into = into
        self._batch = batch

    def accept(self) -> SyncEnd:
        conn = self._listener.accept(timeout=_CONNECT_TIMEOUT)
        return _End(conn, into=self._into, batch=self._batch)

    def close(self) -> None:
        self._listener.close()


class Npipes(SyncContender):
    name: ClassVar[str] = "npipes"
    summary: ClassVar[str] = "npipes.connect/listen, conn.send / conn.recv, crc=False"
    crc: ClassVar[bool] = False
    into: ClassVar[bool] = False
    batch: ClassVar[int] = 0

    def versions(self) -> dict[str, str]:
        from npipes import _accel

        return {"npipes": npipes.__version__, "accelerator": "C" if _accel.ACCELERATED else "none"}

    def address(self, tag: str, tmpdir: str) -> str:
        return f"npb-{tag}"  # a bare name: $XDG_RUNTIME_DIR/npipes/... or \\.\pipe\...

    def listen(self, address: str) -> SyncServer:
        listener = npipes.listen(address, crc=self.crc)
        return _Server(listener, into=self.into, batch=self.batch > 0)

    def connect(self, address: str) -> SyncEnd:
        conn = npipes.connect(
            address, crc=self.crc, timeout=_CONNECT_TIMEOUT, wait_for_listener=True
        )
        return _End(conn, into=self.into, batch=self.batch > 0)


@final
class NpipesCrc(Npipes):
    name: ClassVar[str] = "npipes-crc"
    summary: ClassVar[str] = "as npipes, with crc=True on both sides"
    crc: ClassVar[bool] = True
    memory: ClassVar[bool] = False

    def versions(self) -> dict[str, str]:
        try:  # which CRC-32 implementation npipes picked (zlib, zlib-ng, isal)
            crc = str(importlib.import_module("npipes._crc").IMPLEMENTATION)
        except (ImportError, AttributeError):
            crc = "zlib"
        return {**super().versions(), "crc32": crc}


@final
class NpipesInto(Npipes):
    name: ClassVar[str] = "npipes-into"
    summary: ClassVar[str] = "as npipes, receiving with conn.recv_into(preallocated buffer)"
    into: ClassVar[bool] = True
    latency: ClassVar[bool] = False
    memory: ClassVar[bool] = False  # its buffer exists before the message


@final
class NpipesBatch(Npipes):
    name: ClassVar[str] = "npipes-batch"
    summary: ClassVar[str] = (
        "as npipes, sending with conn.send_many(256 messages), receiving with conn.recv_many()"
    )
    latency: ClassVar[bool] = False
    memory: ClassVar[bool] = False
    max_stream_size: ClassVar[int | None] = 64 * 1024
    batch: ClassVar[int] = 256

    def unavailable(self) -> str | None:
        if not hasattr(npipes.Connection, "send_many"):
            return "npipes.Connection has no send_many() yet"
        return super().unavailable()
