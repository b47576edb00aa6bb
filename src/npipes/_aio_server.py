"""``npipes.aio.serve``: a ready-made asyncio server, one task per connection, bounded.

Re-exported by :mod:`npipes.aio` (``Server``, ``serve``, ``Handler``); it lives
here so the front end stays one job. Same rules as the sync server
(:mod:`npipes.server`): the accept loop only accepts; each client's authkey
handshake (``handshake_timeout``) and first-message wait (``idle_timeout``) run in
its own task; failing accepts (``EMFILE``) are retried with pauses and logged
at a bounded rate; ``aclose()`` lets its caller's cancellation through.

``serve(name, respond=func)`` runs a built-in handler on the same machinery
(rules shared with the sync server in ``_respond``): ``aclose()`` cancels the
tasks waiting for their next request at once and lets a ``func`` under way
finish and send its reply.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self, Unpack, final

from . import aio
from ._deadline import Deadline
from ._respond import check_handler_choice, error_reply, reply_crc, reply_value
from .errors import ConnectionClosedError, NpipesError
from .server import DEFAULT_HANDSHAKE_TIMEOUT, _AcceptFailures, _check_server_options

if TYPE_CHECKING:
    from ._frame import Frame
    from ._options import ListenOptions
    from .aio import Connection, Listener

__all__ = ["Handler", "Respond", "Server", "serve"]

log = logging.getLogger("npipes.server")

Handler = Callable[["Connection"], Awaitable[None]]
Respond = Callable[[bytes | str], object]
"""A respond function: takes a message, returns the reply (``str`` or bytes-like),
or an awaitable of it (an ``async def`` function)."""


@final
class Server:
    """A running :func:`serve`: one task per connection, at most ``max_connections``."""

    def __init__(
        self,
        listener: Listener,
        handler: Handler | None,
        max_connections: int,
        *,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        idle_timeout: float | None = None,
        respond: Respond | None = None,
    ) -> None:
        check_handler_choice(handler, respond)
        self.listener: Final = listener
        self._respond = respond
        self._handler: Handler = self._respond_loop if handler is None else handler
        self._idle: set[asyncio.Task[None]] = set()  # respond tasks between requests
        self._handshake_timeout = handshake_timeout
        self._idle_timeout = idle_timeout
        self._slots = asyncio.Semaphore(max_connections)
        self._tasks: set[asyncio.Task[None]] = set()
        self._admitting: set[asyncio.Task[None]] = set()  # tasks not in their handler yet
        self._connections: set[Connection] = set()
        self._own: dict[asyncio.Task[None], Connection] = {}  # each task's connection
        self._closing = False
        self._accepting = asyncio.ensure_future(self._accept_loop())
        self._closed = asyncio.get_running_loop().create_future()

    @property
    def address(self) -> str:
        return self.listener.address

    @property
    def active(self) -> int:
        """Connections being handled now (including those still in their handshake)."""
        return len(self._tasks)

    async def _accept_loop(self) -> None:
        failures = _AcceptFailures(self.address)
        while True:
            await self._slots.acquire()  # bounded: stop accepting while full
            try:
                await self._accept_one()
            except (NpipesError, OSError) as exc:  # NpipesError: ConnectionClosedError...
                self._slots.release()
                if self.listener.closed:
                    return
                await asyncio.sleep(failures.failed(exc))  # EMFILE: do not spin
                continue
            except BaseException:
                self._slots.release()
                raise
            failures.succeeded()

    async def _accept_one(self) -> None:
        # A method of its own: no local of the loop keeps the last connection alive.
        conn = await self.listener._accept_unauthenticated(None)
        task = asyncio.ensure_future(self._run(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _admit(self, conn: Connection) -> bool:
        """Authenticate ``conn`` and wait for its first message; True if its handler may run."""
        task = asyncio.current_task()
        assert task is not None
        self._admitting.add(task)
        try:
            await conn._authenticate(self._handshake_timeout)
            if self._idle_timeout is not None and not await conn._wait_readable(self._idle_timeout):
                log.info(
                    "closed a client of %s that sent nothing within idle_timeout=%s s",
                    self.address,
                    self._idle_timeout,
                )
                return False
        except (NpipesError, OSError) as exc:
            log.info(
                "closed a client of %s before its handler (handshake_timeout=%s s): %s",
                self.address,
                self._handshake_timeout,
                exc,
            )
            return False
        finally:
            self._admitting.discard(task)
        return not self._closing

    async def _run(self, conn: Connection) -> None:
        self._connections.add(conn)
        task = asyncio.current_task()
        if task is not None:
            self._own[task] = conn
        try:
            try:
                if await self._admit(conn):
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
            if task is not None:
                self._own.pop(task, None)
            self._slots.release()  # only once the connection is closed

    # -- respond=: the built-in handler ----------------------------------------

    async def _respond_loop(self, conn: Connection) -> None:
        """Answer each request on ``conn`` with one reply, in order, until it ends."""
        task = asyncio.current_task()
        assert task is not None
        while not self._stopping():
            self._idle.add(task)
            try:
                frame: Frame = await conn._next_frame(None)
            except ConnectionClosedError:
                return  # the client left
            except NpipesError as exc:
                if conn.closed:  # a message too large, framing broken: the client's fault
                    log.info("closed a client of %s: %s", self.address, exc)
                    return
                # That message only (a bad CRC-32, text not UTF-8): its reply says so.
                log.warning("a request to %s was dropped: %s", self.address, exc)
                if not await self._send_error(conn, exc, None):
                    return
                continue
            finally:
                self._idle.discard(task)
            if self._stopping():
                return  # aclose() began: no new request is started
            if not await self._answer(conn, frame):
                return

    def _stopping(self) -> bool:
        return self._closing  # a call: each await may have changed it

    async def _answer(self, conn: Connection, frame: Frame) -> bool:
        """Run the respond function on one request and send its reply; False if
        ``conn`` was closed instead (its framing cannot carry an error reply)."""
        assert self._respond is not None
        crc = reply_crc(frame.crc)
        try:
            value = self._respond(frame.message)
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:
            log.exception("the respond function failed for a client of %s", self.address)
            return await self._send_error(conn, exc, crc)
        except asyncio.CancelledError:
            raise  # aclose() gave up waiting: the connection is aborted
        except BaseException as exc:
            # KeyboardInterrupt, SystemExit: not an error to report; it ends this
            # connection (no reply) and goes on to the event loop, which stops.
            log.error(
                "the respond function raised %s for a client of %s: connection closed",
                type(exc).__name__,
                self.address,
            )
            raise
        try:
            await conn.send(reply_value(value), crc=crc)
        except (TypeError, ValueError) as exc:  # not a reply, or not for this framing: not sent
            if conn.closed:
                raise
            log.error("the respond function of %s returned a bad reply: %s", self.address, exc)
            return await self._send_error(conn, exc, crc)
        return True

    async def _send_error(self, conn: Connection, exc: BaseException, crc: bool | None) -> bool:
        """Send the error reply for ``exc``; False if the connection is to be closed instead."""
        reply = error_reply(exc, conn._settings.codec, conn._core.max_message_size)
        if reply is not None:
            try:
                await conn.send(reply, crc=crc)
                return True
            except (TypeError, ValueError):  # a codec of the user's that cannot send it
                if conn.closed:
                    raise
        log.warning(
            "closed a client of %s: its framing (%s) cannot carry an error reply",
            self.address,
            conn.framing,
        )
        return False  # _run closes it

    async def serve_forever(self) -> None:
        """Wait until the server is closed (cancel it to close the server)."""
        try:
            await asyncio.shield(self._closed)
        except asyncio.CancelledError:
            await self.aclose()
            raise

    async def aclose(self, timeout: float | None = 5.0) -> None:  # noqa: ASYNC109
        """Stop accepting, let handlers finish for up to ``timeout`` s, then close the rest.

        Clients still in their handshake or first-message wait are closed at
        once. Cancelling ``aclose()`` cancels every handler and re-raises.

        Raises:
            TypeError, ValueError: ``timeout`` is not None or a number >= 0; nothing
                was closed.
        """
        Deadline(timeout)  # check it before anything is closed
        if self._closed.done():
            return
        self._closing = True
        # A handler may close its own server: it is neither waited for nor cancelled here.
        me = asyncio.current_task()
        await self.listener.aclose()
        self._accepting.cancel()
        try:
            await asyncio.wait({self._accepting})  # unlike awaiting it, lets our cancel through
            if not self._accepting.cancelled() and (error := self._accepting.exception()):
                log.error("the accept loop of %s failed", self.address, exc_info=error)
            for task in self._admitting | self._idle:
                task.cancel()  # no handler (or respond call) runs for it: nothing to finish
            others = self._tasks - {me} if me is not None else set(self._tasks)
            if others:
                _, pending = await asyncio.wait(others, timeout=timeout)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending)
        except asyncio.CancelledError:
            for task in self._tasks - {me}:
                task.cancel()  # our caller stopped waiting: end the handlers now
            raise
        finally:
            mine = self._own.get(me) if me is not None else None
            for conn in list(self._connections):
                if conn is not mine:
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
    handler: Handler | None = None,
    *,
    respond: Respond | None = None,
    max_connections: int = 256,
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    idle_timeout: float | None = None,
    **options: Unpack[ListenOptions],
) -> Server:
    """Listen on ``name`` and serve each client in its own task: ``await handler(conn)``,
    or ``respond(message)`` for each message.

    At most ``max_connections`` clients are served at once (further clients
    wait in the OS queue). A handler's exception is logged (logger
    ``npipes.server``) and the server keeps serving. ``handshake_timeout`` and
    ``idle_timeout`` are those of :func:`npipes.serve`; other options are those
    of :func:`listen`.

    ``respond`` (instead of ``handler``; exactly one of the two) follows the
    rules of :func:`npipes.serve`'s ``respond``: its return value is the reply,
    in order on each connection, and an exception becomes an error reply the
    client raises as :class:`RemoteError`. It may be an ``async def`` function
    (awaited; a slow one holds up only its own connection) or a plain function
    (called in the event loop: keep it quick, or hand blocking work to
    ``asyncio.to_thread``); a plain function returning an awaitable is awaited
    too. Its ``KeyboardInterrupt``/``SystemExit`` is not reported to the client:
    it closes that connection and reaches the event loop, which stops.

    Raises:
        TypeError: both or neither of ``handler`` and ``respond``, before listening.
    """
    check_handler_choice(handler, respond)
    _check_server_options(max_connections, handshake_timeout, idle_timeout)
    listener = await aio.listen(name, **options)
    return Server(
        listener,
        handler,
        max_connections,
        handshake_timeout=handshake_timeout,
        idle_timeout=idle_timeout,
        respond=respond,
    )
