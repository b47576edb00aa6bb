"""``npipes.aio.serve``: a ready-made asyncio server, one task per connection, bounded.

Re-exported by :mod:`npipes.aio` (``Server``, ``serve``, ``Handler``); it lives
here so the front end stays one job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self, final

from . import aio
from ._frame import DEFAULT_MAX_MESSAGE_SIZE
from .errors import ConnectionClosedError, NpipesError

if TYPE_CHECKING:
    from ._framings import Codec
    from .aio import Connection, Listener

__all__ = ["Handler", "Server", "serve"]

log = logging.getLogger("npipes.server")

Handler = Callable[["Connection"], Awaitable[None]]


@final
class Server:
    """A running :func:`serve`: one task per connection, at most ``max_connections``."""

    def __init__(self, listener: Listener, handler: Handler, max_connections: int) -> None:
        self.listener: Final = listener
        self._handler = handler
        self._slots = asyncio.Semaphore(max_connections)
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections: set[Connection] = set()
        self._accepting = asyncio.ensure_future(self._accept_loop())
        self._closed = asyncio.get_running_loop().create_future()

    @property
    def address(self) -> str:
        return self.listener.address

    @property
    def active(self) -> int:
        """Connections being handled now."""
        return len(self._tasks)

    async def _accept_loop(self) -> None:
        while True:
            await self._slots.acquire()  # bounded: stop accepting while full
            try:
                conn = await self.listener.accept()
            except ConnectionClosedError:
                self._slots.release()
                return
            except NpipesError:
                self._slots.release()
                log.exception("accept failed on %s; still serving", self.address)
                continue
            task = asyncio.ensure_future(self._run(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, conn: Connection) -> None:
        self._connections.add(conn)
        try:
            try:
                await self._handler(conn)
            except ConnectionClosedError:
                pass  # the client left, or aclose() ended the handler: the normal end
            except Exception:
                log.exception("handler failed for a connection on %s", self.address)
            await conn.aclose()
        except BaseException:
            conn.abort()  # cancelled by aclose(): do not wait to flush to a stuck client
            raise
        finally:
            self._connections.discard(conn)
            self._slots.release()  # only once the connection is closed

    async def serve_forever(self) -> None:
        """Wait until the server is closed (cancel it to close the server)."""
        try:
            await asyncio.shield(self._closed)
        except asyncio.CancelledError:
            await self.aclose()
            raise

    async def aclose(self, timeout: float | None = 5.0) -> None:  # noqa: ASYNC109
        """Stop accepting, let handlers finish for up to ``timeout`` s, then close the rest."""
        await self.listener.aclose()
        self._accepting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._accepting
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        for conn in list(self._connections):
            conn.abort()  # handlers are gone: nobody is left to wait for a flush
        if not self._closed.done():
            self._closed.set_result(None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def serve(
    name: str,
    handler: Handler,
    *,
    max_connections: int = 256,
    crc: bool = False,
    framing: str | Codec = "npipes",
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
    allow_other_users: bool = False,
    backlog: int = 128,
    allow_remote: bool = False,
    allowed_users: Sequence[str] = (),
    security_descriptor: str | None = None,
    authkey: bytes | None = None,
) -> Server:
    """Listen on ``name`` and run ``await handler(conn)`` in its own task for each client.

    At most ``max_connections`` handlers run at once (further clients wait in
    the OS queue). A handler's exception is logged (logger ``npipes.server``)
    and the server keeps serving. Other options are those of :func:`listen`.
    """
    if max_connections < 1:
        raise ValueError("max_connections must be at least 1")
    listener = await aio.listen(
        name,
        crc=crc,
        framing=framing,
        max_message_size=max_message_size,
        allow_other_users=allow_other_users,
        backlog=backlog,
        allow_remote=allow_remote,
        allowed_users=allowed_users,
        security_descriptor=security_descriptor,
        authkey=authkey,
    )
    return Server(listener, handler, max_connections)
