"""One side of one contender's connection, sync or async, behind blocking calls.

An async contender's side runs its event loop in a thread of its own, all the
time, as an application would: a workload is submitted to it and waited for.
(A loop that ran only during workloads would leave bytes that a send had
buffered unsent in between, and the peer waiting for them.)
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar, final

from . import workloads
from .contenders.base import AsyncContender, AsyncEnd, AsyncServer, SyncContender, SyncEnd

if TYPE_CHECKING:
    from .contenders.base import Contender, Data, SyncServer

__all__ = ["Listening", "LoopThread", "Session", "connect"]

_T = TypeVar("_T")


@final
class LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="npipes-bench-loop", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the loop; block until it is done and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self.run(self._loop.shutdown_asyncgens())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class Session(ABC):
    """Runs the workloads on one connected side."""

    @abstractmethod
    def round_trips(self, payload: Data, count: int, warmup: int) -> list[int]: ...

    @abstractmethod
    def stream(self, payload: Data, count: int) -> float: ...

    @abstractmethod
    def echo(self, size: int, count: int) -> None: ...

    @abstractmethod
    def sink(self, size: int, count: int) -> None: ...

    @abstractmethod
    def send_one(self, payload: Data) -> None: ...

    @abstractmethod
    def receive_one(self, size: int) -> Any: ...

    @abstractmethod
    def close(self) -> None: ...


@final
class _SyncSession(Session):
    def __init__(self, end: SyncEnd, batch: int) -> None:
        self._end = end
        self._batch = batch

    def round_trips(self, payload: Data, count: int, warmup: int) -> list[int]:
        return workloads.round_trips(self._end, payload, count, warmup)

    def stream(self, payload: Data, count: int) -> float:
        return workloads.stream(self._end, payload, count, self._batch)

    def echo(self, size: int, count: int) -> None:
        workloads.echo(self._end, size, count)

    def sink(self, size: int, count: int) -> None:
        workloads.sink(self._end, size, count)

    def send_one(self, payload: Data) -> None:
        self._end.sender(len(payload))(payload)

    def receive_one(self, size: int) -> Any:
        return self._end.receiver(size)()

    def close(self) -> None:
        self._end.close()


@final
class _AsyncSession(Session):
    def __init__(self, loop: LoopThread, end: AsyncEnd, *, owns_loop: bool) -> None:
        self._loop = loop
        self._end = end
        self._owns_loop = owns_loop

    def round_trips(self, payload: Data, count: int, warmup: int) -> list[int]:
        return self._loop.run(workloads.around_trips(self._end, payload, count, warmup))

    def stream(self, payload: Data, count: int) -> float:
        return self._loop.run(workloads.astream(self._end, payload, count))

    def echo(self, size: int, count: int) -> None:
        self._loop.run(workloads.aecho(self._end, size, count))

    def sink(self, size: int, count: int) -> None:
        self._loop.run(workloads.asink(self._end, size, count))

    def send_one(self, payload: Data) -> None:
        async def send() -> None:
            await self._end.sender(len(payload))(payload)

        self._loop.run(send())

    def receive_one(self, size: int) -> Any:
        async def receive() -> Any:
            return await self._end.receiver(size)()

        return self._loop.run(receive())

    def close(self) -> None:
        try:
            self._loop.run(self._end.aclose())
        finally:
            if self._owns_loop:
                self._loop.close()


@final
class Listening:
    """A contender's listening endpoint in the child, before the parent connects."""

    def __init__(self, contender: Contender, address: str) -> None:
        self._batch = contender.batch
        self._loop: LoopThread | None = None
        self._async: AsyncServer | None = None
        self._sync: SyncServer | None = None
        if isinstance(contender, AsyncContender):
            self._loop = LoopThread()
            self._async = self._loop.run(contender.listen(address))
        else:
            assert isinstance(contender, SyncContender)
            self._sync = contender.listen(address)

    def accept(self) -> Session:
        if self._loop is not None:
            assert self._async is not None
            end = self._loop.run(self._async.accept())
            return _AsyncSession(self._loop, end, owns_loop=False)
        assert self._sync is not None
        return _SyncSession(self._sync.accept(), self._batch)

    def close(self) -> None:
        if self._loop is not None:
            assert self._async is not None
            try:
                self._loop.run(self._async.aclose())
            finally:
                self._loop.close()
        elif self._sync is not None:
            self._sync.close()


def connect(contender: Contender, address: str) -> Session:
    """Connect to a contender's listening child."""
    if isinstance(contender, AsyncContender):
        loop = LoopThread()
        try:
            end = loop.run(contender.connect(address))
        except BaseException:
            loop.close()
            raise
        return _AsyncSession(loop, end, owns_loop=True)
    assert isinstance(contender, SyncContender)
    return _SyncSession(contender.connect(address), contender.batch)
