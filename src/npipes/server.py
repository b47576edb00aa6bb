"""``npipes.serve``: a ready-made sync server, one thread per connection, bounded.

The accept loop runs in a background thread and only accepts: each client's
authkey handshake (deadline ``handshake_timeout``) and, with ``idle_timeout``,
the wait for its first message run in that client's worker, so a silent or slow
client holds up nobody else. The loop stops taking clients while
``max_connections`` workers are busy (further clients wait in the OS queue).
An accept that keeps failing (``EMFILE``: out of descriptors) is retried with
a growing pause, and logged once plus a reminder every few seconds, never
once per try. ``close()`` stops accepting, closes clients not yet in their
handler, gives running handlers up to a deadline to finish, then closes their
connections so blocked handlers end too. A handler's exception is logged
(logger ``npipes.server``), never printed, and the server keeps serving.

``serve(name, respond=func)`` runs a built-in handler on the same machinery:
it answers each message with ``func(message)`` (the rules, shared with
asyncio, are in ``_respond``). A worker waiting for its next request is idle:
``close()`` closes it at once, and lets a ``func`` already running finish and
send its reply.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self, Unpack, final

from ._deadline import NO_DEADLINE, Deadline
from ._options import ListenOptions
from ._protocol import HANDSHAKE_TIMEOUT
from ._respond import check_handler_choice, error_reply, reply_crc, reply_value
from .connection import Connection, Listener, listen
from .errors import ConnectionClosedError, NpipesError

if TYPE_CHECKING:
    from ._frame import Frame

__all__ = ["DEFAULT_HANDSHAKE_TIMEOUT", "Respond", "Server", "serve"]

log = logging.getLogger("npipes.server")

Handler = Callable[[Connection], object]
Respond = Callable[[bytes | str], object]
"""A respond function: takes a message, returns the reply (``str`` or bytes-like)."""

DEFAULT_HANDSHAKE_TIMEOUT: Final = HANDSHAKE_TIMEOUT  # one default, the core's
"""Seconds a client of a server with an ``authkey`` has to complete the handshake."""


def _check_server_options(
    max_connections: int, handshake_timeout: float | None, idle_timeout: float | None
) -> None:
    """The checks of ``serve``'s own options (sync and asyncio), at the call."""
    if isinstance(max_connections, bool) or not isinstance(max_connections, int):
        raise TypeError(f"max_connections must be an int, not {max_connections!r}")
    if max_connections < 1:
        raise ValueError("max_connections must be at least 1")
    for option, value in (("handshake_timeout", handshake_timeout), ("idle_timeout", idle_timeout)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{option} must be None or a number of seconds > 0, not {value!r}")
        if not value > 0:
            raise ValueError(f"{option} must be None or a number of seconds > 0, not {value!r}")


class _AcceptFailures:
    """Pauses and rate-limited logging for an accept loop whose accepts keep failing.

    Out of descriptors (``EMFILE``/``ENFILE``), the listening socket stays
    readable and every accept fails at once: retrying at once would burn a
    core and log a traceback per try (trio's ``SocketListener`` sleeps too).
    The first failure of a run is logged with its traceback, then a line every
    ``LOG_EVERY`` seconds; the pause doubles from ``FIRST_PAUSE`` up to
    ``MAX_PAUSE``, which bounds how long clients wait once descriptors are free.
    """

    FIRST_PAUSE: Final = 0.01
    MAX_PAUSE: Final = 0.5
    LOG_EVERY: Final = 10.0

    def __init__(self, address: str) -> None:
        self._address = address
        self._count = 0
        self._pause = 0.0
        self._next_log = 0.0

    def failed(self, exc: BaseException) -> float:
        """Record a failed accept; return the seconds to pause before the next one."""
        self._count += 1
        now = time.monotonic()
        if self._count == 1:
            log.error(
                "accept failed on %s; still serving, retrying with pauses: %s",
                self._address,
                exc,
                exc_info=exc,
            )
            self._next_log = now + self.LOG_EVERY
        elif now >= self._next_log:
            log.warning(
                "accept still failing on %s (%d failures in a row): %s",
                self._address,
                self._count,
                exc,
            )
            self._next_log = now + self.LOG_EVERY
        self._pause = min(max(2 * self._pause, self.FIRST_PAUSE), self.MAX_PAUSE)
        return self._pause

    def succeeded(self) -> None:
        """Record an accept that worked (ends a run of failures)."""
        if self._count:
            log.info("accepting again on %s after %d failed accepts", self._address, self._count)
            self._count = 0
            self._pause = 0.0


@final
class Server:
    """A running :func:`serve`. A context manager; ``close()`` is idempotent."""

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
        self._responding: set[Connection] = set()  # respond workers inside func or its reply
        self._handshake_timeout = handshake_timeout
        self._idle_timeout = idle_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._workers: dict[threading.Thread, Connection] = {}
        self._handling: set[Connection] = set()  # connections whose handler runs
        self._stopped = threading.Event()
        self._close_done = threading.Event()
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"npipes-serve-{listener.name}", daemon=True
        )
        self._acceptor.start()

    @property
    def address(self) -> str:
        return self.listener.address

    @property
    def active(self) -> int:
        """Connections being handled now (including those still in their handshake)."""
        with self._lock:
            return len(self._workers)

    def _accept_loop(self) -> None:
        failures = _AcceptFailures(self.address)
        while not self._stopped.is_set():
            # Short waits for a free slot, so close() is never stuck behind a full server.
            if not self._slots.acquire(timeout=0.1):
                continue
            if self._stopped.is_set():
                self._slots.release()
                return
            try:
                self._accept_one()
            # NpipesError: ConnectionClosedError...; RuntimeError: no thread (RLIMIT_NPROC)
            except (NpipesError, OSError, RuntimeError) as exc:
                self._slots.release()
                if self._stopped.is_set() or self.listener.closed:
                    return
                self._stopped.wait(failures.failed(exc))  # close() cuts the pause short
                continue
            failures.succeeded()

    def _accept_one(self) -> None:
        # A method of its own: no local of the loop keeps the last connection alive.
        conn = self.listener._accept_unauthenticated(None)
        worker = threading.Thread(
            target=self._run, args=(conn,), name=f"npipes-serve-{self.listener.name}", daemon=True
        )
        with self._lock:
            self._workers[worker] = conn
        try:
            worker.start()
        except BaseException:
            with self._lock:
                del self._workers[worker]
            conn.close()
            raise

    def _admit(self, conn: Connection) -> bool:
        """Authenticate ``conn`` and wait for its first message; True if its handler may run."""
        try:
            conn._authenticate(self._handshake_timeout)
            if self._idle_timeout is not None and not conn._wait_readable(self._idle_timeout):
                log.info(
                    "closed a client of %s that sent nothing within idle_timeout=%s s",
                    self.address,
                    self._idle_timeout,
                )
                return False
        except (NpipesError, OSError, ValueError) as exc:
            # A bad or slow client, or close() (ValueError: a descriptor closed under us).
            log.info(
                "closed a client of %s before its handler (handshake_timeout=%s s): %s",
                self.address,
                self._handshake_timeout,
                exc,
            )
            return False
        with self._lock:
            if self._stopped.is_set():
                return False  # close() began: do not start a handler now
            self._handling.add(conn)
        return True

    def _run(self, conn: Connection) -> None:
        try:
            with conn:
                if self._admit(conn):
                    self._handler(conn)
        except ConnectionClosedError:
            pass  # the peer left, or close() ended the handler: nothing to report
        except Exception:
            log.exception("handler failed for a connection on %s", self.address)
        finally:
            with self._lock:
                self._workers.pop(threading.current_thread(), None)
                self._handling.discard(conn)
            self._slots.release()

    # -- respond=: the built-in handler ----------------------------------------

    def _respond_loop(self, conn: Connection) -> None:
        """Answer each request on ``conn`` with one reply, in order, until it ends."""
        while True:
            try:
                with conn._recv_lock:  # recv()'s lock, for the frame's CRC flag
                    frame: Frame = conn._receive_frame(NO_DEADLINE, None)
            except ConnectionClosedError:
                return  # the client left, or close() ended the wait for its next request
            except NpipesError as exc:
                if conn.closed:  # a message too large, framing broken: the client's fault
                    log.info("closed a client of %s: %s", self.address, exc)
                    return
                # That message only (a bad CRC-32, text not UTF-8): its reply says so.
                log.warning("a request to %s was dropped: %s", self.address, exc)
                if not self._send_error(conn, exc, None):
                    return
                continue
            with self._lock:
                if self._stopped.is_set():
                    return  # close() began: no new request is started
                self._responding.add(conn)
            try:
                if not self._answer(conn, frame):
                    return
            finally:
                with self._lock:
                    self._responding.discard(conn)
            if self._stopped.is_set():
                return

    def _answer(self, conn: Connection, frame: Frame) -> bool:
        """Run the respond function on one request and send its reply; False if
        ``conn`` was closed instead (its framing cannot carry an error reply)."""
        assert self._respond is not None
        crc = reply_crc(frame.crc)
        try:
            value = self._respond(frame.message)
        except Exception as exc:
            log.exception("the respond function failed for a client of %s", self.address)
            return self._send_error(conn, exc, crc)
        except BaseException as exc:
            # KeyboardInterrupt, SystemExit: not an error to report; it ends this
            # connection (no reply) and goes on out of the worker, as from any thread.
            log.error(
                "the respond function raised %s for a client of %s: connection closed",
                type(exc).__name__,
                self.address,
            )
            raise
        try:
            conn.send(reply_value(value), crc=crc)
        except (TypeError, ValueError) as exc:  # not a reply, or not for this framing: not sent
            if conn.closed:
                raise
            log.error("the respond function of %s returned a bad reply: %s", self.address, exc)
            return self._send_error(conn, exc, crc)
        return True

    def _send_error(self, conn: Connection, exc: BaseException, crc: bool | None) -> bool:
        """Send the error reply for ``exc``; False if the connection was closed instead."""
        reply = error_reply(exc, conn._settings.codec, conn._core.max_message_size)
        if reply is not None:
            try:
                conn.send(reply, crc=crc)
                return True
            except (TypeError, ValueError):  # a codec of the user's that cannot send it
                if conn.closed:
                    raise
        log.warning(
            "closed a client of %s: its framing (%s) cannot carry an error reply",
            self.address,
            conn.framing,
        )
        conn.close()
        return False

    def serve_forever(self) -> None:
        """Block until the server is closed; Ctrl+C closes it gracefully, then re-raises."""
        try:
            while not self._stopped.wait(0.2):  # short waits keep Ctrl+C prompt
                pass
        except KeyboardInterrupt:
            self.close()
            raise

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop accepting, wait up to ``timeout`` s for handlers, then close their connections.

        Clients still in their handshake or first-message wait are closed at once.

        Raises:
            TypeError, ValueError: ``timeout`` is not None or a number >= 0; nothing
                was closed (a close that raised half-way left handlers running).
        """
        Deadline(timeout)  # check it before anything is closed
        with self._lock:
            first = not self._stopped.is_set()
            self._stopped.set()
            in_handler = threading.current_thread() in self._workers
        if not first:
            # Another close() is under way: wait for it (a handler does not, since
            # that close() waits for the handler).
            if not in_handler:
                self._close_done.wait()
            return
        try:
            self._close(timeout)
        finally:
            self._close_done.set()

    def _close(self, timeout: float | None) -> None:
        self.listener.close()
        self._acceptor.join()
        # A handler may close its own server: it is neither waited for nor closed here.
        me = threading.current_thread()
        with self._lock:
            workers = [worker for worker in self._workers if worker is not me]
            waiting = [conn for conn in self._workers.values() if conn not in self._handling]
            if self._respond is not None:  # between requests: nothing to let finish either
                waiting += [c for c in self._handling if c not in self._responding]
        for conn in waiting:
            conn.close()  # no handler runs for it yet: nothing to let finish
        deadline = Deadline(timeout)  # one budget for all handlers
        for worker in workers:
            worker.join(deadline.remaining())
        with self._lock:
            stragglers = [(w, c) for w, c in self._workers.items() if w is not me]
        for worker, conn in stragglers:
            conn.close()  # wakes a handler blocked in recv
            worker.join(1.0)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def serve(
    name: str,
    handler: Handler | None = None,
    *,
    respond: Respond | None = None,
    max_connections: int = 64,
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    idle_timeout: float | None = None,
    **options: Unpack[ListenOptions],
) -> Server:
    """Listen on ``name`` and serve each client in its own thread: ``handler(conn)``,
    or ``respond(message)`` for each message.

    Returns at once with the server running in the background; the connection
    is closed when the handler returns. Options are those of :func:`npipes.listen`.

    Args:
        handler: called with each client's connection (positional).
        respond: instead of a handler (exactly one of the two): called with each
            message a client sends; its return value (``str`` or bytes-like) is
            sent back as the reply, in order, on that connection. The reply
            carries a CRC-32 when the request did, or when the server has
            ``crc=True``. An exception in ``respond`` is logged (logger
            ``npipes.server``, with the address) and sent to that client as an
            error reply, which its ``request()`` raises as :class:`RemoteError`
            (``remote_type``, ``remote_message``); so is a return value that is
            not a reply (None, other types, or bytes starting with the error
            reply prefix). The connection and the server keep serving. A
            ``KeyboardInterrupt``/``SystemExit`` from ``respond`` is not
            reported: it closes that connection without a reply and ends its
            worker thread as it would any thread. A request dropped on arrival
            (a bad CRC-32) also gets an error reply. The ``lines``, ``npipes1``
            and ``dotnet`` framings deliver only text, so they cannot carry an
            error reply: there the connection is closed instead. ``close()``
            ends connections waiting for their next request at once and lets
            a ``respond`` call under way finish and send its reply (up to its
            timeout).
        max_connections: clients served at once (in their handshake, first-message
            wait or handler); more clients wait in the OS queue.
        handshake_timeout: with ``authkey``, seconds a client has to complete the
            handshake (default 5) before it is closed; it runs in the client's
            worker, so it never delays other clients.
        idle_timeout: seconds a new client may stay silent before it is closed
            (logged at INFO, freeing its slot); its handler starts once its first
            whole message has arrived (a byte now and then does not count: a
            slowloris client is closed too). None (the default) starts the handler
            at once and waits as long as the handler does: keep None for protocols
            where the server speaks first, set it when clients are not trusted.
    Raises:
        TypeError: both or neither of ``handler`` and ``respond``, before listening.
    """
    check_handler_choice(handler, respond)
    _check_server_options(max_connections, handshake_timeout, idle_timeout)
    listener = listen(name, **options)
    return Server(
        listener,
        handler,
        max_connections,
        handshake_timeout=handshake_timeout,
        idle_timeout=idle_timeout,
        respond=respond,
    )
