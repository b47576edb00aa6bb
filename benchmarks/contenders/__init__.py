"""The registry of contenders, in report order; each is imported only when used."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Final, final

from .base import Contender, platform_tag

__all__ = ["REGISTRY", "Entry", "create", "names"]


@final
@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    module: str
    cls: str
    platforms: frozenset[str]

    def skip_reason(self) -> str | None:
        """Why it cannot run here, or None (imports it to check its dependencies)."""
        if platform_tag() not in self.platforms:
            return f"runs on {' and '.join(sorted(self.platforms))} only"
        try:
            contender = create(self.name)
        except ImportError as exc:
            return f"cannot import {self.module}: {exc}"
        return contender.unavailable()


_BOTH = frozenset({"posix", "windows"})
_POSIX = frozenset({"posix"})
_WINDOWS = frozenset({"windows"})

REGISTRY: Final[dict[str, Entry]] = {
    e.name: e
    for e in (
        Entry("npipes", "npipes_sync", "Npipes", _BOTH),
        Entry("npipes-crc", "npipes_sync", "NpipesCrc", _BOTH),
        Entry("npipes-into", "npipes_sync", "NpipesInto", _BOTH),
        Entry("npipes-batch", "npipes_sync", "NpipesBatch", _BOTH),
        Entry("npipes-ipc", "npipes_ipc", "NpipesIpc", _BOTH),
        Entry("npipes-aio", "npipes_aio", "NpipesAio", _BOTH),
        Entry("raw-socket", "raw_socket", "RawSocket", _POSIX),
        Entry("raw-pywin32", "raw_pywin32", "RawPywin32", _WINDOWS),
        Entry("multiprocessing", "mp_connection", "MultiprocessingConnection", _BOTH),
        Entry("pyzmq", "zmq_pair", "Pyzmq", _POSIX),
        Entry("asyncio-streams", "asyncio_streams", "AsyncioStreams", _POSIX),
    )
}


def names() -> list[str]:
    """Every registered contender, in report order."""
    return list(REGISTRY)


def create(name: str) -> Contender:
    """A fresh instance of contender ``name`` (KeyError if unknown)."""
    entry = REGISTRY[name]
    module = importlib.import_module(f"{__name__}.{entry.module}")
    contender: Contender = getattr(module, entry.cls)()
    return contender
