"""``npipes.serve``: a ready-made sync server, one thread per connection, bounded.

The accept loop runs in a background thread and stops taking clients while
``max_connections`` handlers are busy (further clients wait in the OS queue).
``close()`` stops accepting, gives running handlers up to a deadline to
finish, then closes their connections so blocked handlers end too. A handler's
exception is logged (logger ``npipes.server``), never printed, and the server
keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Final, Self, final

from ._deadline import Deadline
from ._frame import DEFAULT_MAX_MESSAGE_SIZE
from ._framings import Codec
from .connection import Connection, Listener, listen
from .errors import ConnectionClosedError, NpipesError

__all__ = ["Server", "serve"]

log = logging.getLogger("npipes.server")

Handler = Callable[[Connection], object]


@final
class Server:
    """A running :func:`serve`. A context manager; ``close()`` is idempotent."""

    def __init__(self, listener: Listener, handler: Handler, max_connections: int) -> None:
        self.listener: Final = listener
        self._handler = handler
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._workers: dict[threading.Thread, Connection] = {}
        self._stopped = threading.Event()
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"npipes-serve-{listener.name}", daemon=True
        )
        self._acceptor.start()

    @property
    def address(self) -> str:
        return self.listener.address

    @property
    def active(self) -> int:
        """Connections being handled now."""
        with self._lock:
            return len(self._workers)

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            # Short waits for a free slot, so close() is never stuck behind a full server.
            if not self._slots.acquire(timeout=0.1):
                continue
            if self._stopped.is_set():
                self._slots.release()
                return
            try:
                conn = self.listener.accept()
            except ConnectionClosedError:
                self._slots.release()
                return  # the listener was closed
            except NpipesError:
                self._slots.release()
                log.exception("accept failed on %s; still serving", self.address)
                continue
            worker = threading.Thread(target=self._run, args=(conn,), daemon=True)
            with self._lock:
                self._workers[worker] = conn
            worker.start()

    def _run(self, conn: Connection) -> None:
        try:
            with conn:
                self._handler(conn)
        except ConnectionClosedError:
            pass  # the peer left, or close() ended the handler: nothing to report
        except Exception:
            log.exception("handler failed for a connection on %s", self.address)
        finally:
            with self._lock:
                self._workers.pop(threading.current_thread(), None)
            self._slots.release()

    def serve_forever(self) -> None:
        """Block until the server is closed; Ctrl+C closes it gracefully, then re-raises."""
        try:
            while not self._stopped.wait(0.2):  # short waits keep Ctrl+C prompt
                pass
        except KeyboardInterrupt:
            self.close()
            raise

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop accepting, wait up to ``timeout`` s for handlers, then close their connections."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.listener.close()
        self._acceptor.join()
        with self._lock:
            workers = list(self._workers)
        deadline = Deadline(timeout)  # one budget for all handlers
        for worker in workers:
            worker.join(deadline.remaining())
        with self._lock:
            stragglers = list(self._workers.items())
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
    handler: Handler,
    *,
    max_connections: int = 64,
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
    """Listen on ``name`` and call ``handler(conn)`` in its own thread for each client.

    Returns at once with the server running in the background; the connection
    is closed when the handler returns. Options are those of :func:`npipes.listen`.

    Args:
        max_connections: handlers running at once; more clients wait to be accepted.
    """
    if max_connections < 1:
        raise ValueError("max_connections must be at least 1")
    listener = listen(
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
