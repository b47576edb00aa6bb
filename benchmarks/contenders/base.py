"""What a contender provides: a server end (in the child) and a client end (in the parent).

An end hands out plain callables, chosen once per message size, so the timed
loops in ``workloads`` call the contender's own functions with no wrapper in
between (for npipes, ``sender(size)`` is ``conn.send`` itself).
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

__all__ = [
    "ACK",
    "ARecv",
    "ASend",
    "AsyncContender",
    "AsyncEnd",
    "AsyncServer",
    "Contender",
    "Data",
    "Recv",
    "RecvMany",
    "Send",
    "SendMany",
    "SyncContender",
    "SyncEnd",
    "SyncServer",
    "platform_tag",
]

Data = bytes | bytearray | memoryview
"""The payload types the workloads pass to a sender."""

ACK = b"!"
"""What a sink sends back after the last message of a stream."""

# A payload is any bytes-like object; what a receiver returns, the contender decides
# (bytes, a view, a zmq Frame...): an echo server passes it straight back to its sender.
Send = Callable[[Any], object]
Recv = Callable[[], Any]
SendMany = Callable[[Sequence[Any]], object]
RecvMany = Callable[[], Sequence[Any]]
ASend = Callable[[Any], Awaitable[object]]
ARecv = Callable[[], Awaitable[Any]]


def platform_tag() -> str:
    """``"windows"`` or ``"posix"``: what the registry filters contenders on."""
    return "windows" if sys.platform == "win32" else "posix"


class SyncEnd(ABC):
    """One connected side, blocking calls."""

    @abstractmethod
    def sender(self, size: int) -> Send:
        """The call that sends one message of ``size`` bytes."""

    @abstractmethod
    def receiver(self, size: int) -> Recv:
        """The call that receives one message of (at most) ``size`` bytes."""

    def batch_sender(self, size: int) -> SendMany | None:
        """The call that sends many messages at once, if the contender has one."""
        return None

    def batch_receiver(self, size: int) -> RecvMany | None:
        """The call that returns every message already received, if the contender has one."""
        return None

    @abstractmethod
    def close(self) -> None: ...


class AsyncEnd(ABC):
    """One connected side, coroutines (run on the end's own event loop)."""

    @abstractmethod
    def sender(self, size: int) -> ASend: ...

    @abstractmethod
    def receiver(self, size: int) -> ARecv: ...

    @abstractmethod
    async def aclose(self) -> None: ...


class SyncServer(ABC):
    """A listening endpoint in the child; ``accept`` waits for the parent."""

    @abstractmethod
    def accept(self) -> SyncEnd: ...

    @abstractmethod
    def close(self) -> None: ...


class AsyncServer(ABC):
    @abstractmethod
    async def accept(self) -> AsyncEnd: ...

    @abstractmethod
    async def aclose(self) -> None: ...


class Contender(ABC):
    """One way of moving messages between two processes.

    Class attributes describe it; :meth:`unavailable` says why it cannot run here.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    platforms: ClassVar[frozenset[str]] = frozenset({"posix", "windows"})
    baseline: ClassVar[bool] = False
    """The raw loop every ratio is relative to (one per platform)."""
    latency: ClassVar[bool] = True
    """Takes part in the round-trip test."""
    memory: ClassVar[bool] = True
    """Takes part in the receiver-memory test."""
    max_stream_size: ClassVar[int | None] = None
    """Largest message size for the throughput test (None: all sizes)."""
    batch: ClassVar[int] = 0
    """Messages per ``batch_sender`` call when streaming (0: one ``sender`` call each)."""

    def unavailable(self) -> str | None:
        """Why this contender cannot run here (a missing dependency), or None."""
        if platform_tag() not in self.platforms:
            only = " and ".join(sorted(self.platforms))
            return f"runs on {only} only"
        return None

    def versions(self) -> dict[str, str]:
        """Versions of what is being measured (library, protocol), for the report."""
        return {}

    @abstractmethod
    def address(self, tag: str, tmpdir: str) -> str:
        """A fresh endpoint address; ``tmpdir`` is a private directory for socket files."""


class SyncContender(Contender):
    @abstractmethod
    def listen(self, address: str) -> SyncServer: ...

    @abstractmethod
    def connect(self, address: str) -> SyncEnd: ...


class AsyncContender(Contender):
    @abstractmethod
    async def listen(self, address: str) -> AsyncServer: ...

    @abstractmethod
    async def connect(self, address: str) -> AsyncEnd: ...
