"""POSIX backend for asyncio: the same endpoints as ``unix.py``, driven by the event loop.

Binding, locking, permissions and the peer-uid checks are ``unix.py``'s; this
module only moves accept and connect onto the loop and hands the socket to
``loop.connect_accepted_socket`` with the front end's BufferedProtocol, so a
selector loop (or uvloop) reads straight into the decoder's buffers.

Connect and accept do the system call themselves on the non-blocking socket
and use the loop only to wait: ``loop.sock_connect`` takes an AF_UNIX EAGAIN
(full backlog) for "in progress" and then reports a connection that was never
made, and a cancelled ``loop.sock_accept`` drops a client it already took.
A client taken from the kernel is kept (``_pending``) until an ``accept``
returns it, whatever gets cancelled in between.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import os
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, final

from npipes._deadline import seconds
from npipes.errors import (
    ConnectionClosedError,
    NpipesError,
    PipeTimeoutError,
    translate_os_error,
)

assert sys.platform != "win32"  # before importing unix.py, so mypy --platform win32 skips us

from .unix import (  # noqa: E402
    ACCEPT_LATER_ERRNOS,
    ACCEPT_PAUSE,
    UnixListener,
    check_listener_uid,
    connect_failed,
    finish_connect,
    start_connect,
)

if TYPE_CHECKING:
    from npipes._deadline import Deadline
    from npipes._names import Address

    from ._base import ListenOptions, PeerInfo

__all__ = ["MAX_WRITE", "READS_KEEP_MESSAGE_BOUNDARIES", "AioListener", "open_connection"]

MAX_WRITE: int | None = None  # a byte stream: the OS writes any size
READS_KEEP_MESSAGE_BOUNDARIES = True  # a byte stream: nothing to lose

P = TypeVar("P", bound=asyncio.BaseProtocol)


async def open_connection(
    address: Address,
    deadline: Deadline,
    *,
    wait_for_listener: bool,
    protocol_factory: Callable[[], P],
    allowed_uids: frozenset[int] = frozenset(),
) -> tuple[asyncio.BaseTransport, P, PeerInfo]:
    """Connect to ``address`` on the running loop; errors as the sync ``connect``.

    A full backlog (EAGAIN) is retried with backoff until the deadline, then
    PipeBusyError; the private directory is checked before every try and the
    listener's uid after connecting (see ``unix.connect``).
    """
    loop = asyncio.get_running_loop()
    path = address.path
    pause = 0.001
    while True:
        try:
            sock, done = start_connect(address)
        except NpipesError:  # an OSError too (the directory check): keep it as it is
            raise
        except OSError as exc:
            connect_failed(exc, address, deadline, wait_for_listener=wait_for_listener)
        else:
            if not done:  # pragma: no cover - EINPROGRESS: BSD/macOS, never on Linux AF_UNIX
                await _finish_connect(loop, sock, deadline, path)
            break
        left = deadline.remaining()
        await asyncio.sleep(pause if left is None else min(pause, left))
        pause = min(pause * 2, 0.05)
    try:
        peer = check_listener_uid(sock, path, allowed_uids)
        transport, protocol = await loop.connect_accepted_socket(protocol_factory, sock)
    except BaseException:
        sock.close()
        raise
    return transport, protocol, peer


async def _finish_connect(  # pragma: no cover - after EINPROGRESS (BSD/macOS only)
    loop: asyncio.AbstractEventLoop, sock: socket.socket, deadline: Deadline, path: str
) -> None:
    """Wait for a connect in progress (EINPROGRESS, not seen on Linux) and raise its error."""
    writable = loop.create_future()
    fd = sock.fileno()

    def ready() -> None:
        if not writable.done():
            writable.set_result(None)

    loop.add_writer(fd, ready)
    try:
        async with asyncio.timeout(deadline.remaining()):
            await writable
        finish_connect(sock)
    except TimeoutError as exc:
        sock.close()
        raise PipeTimeoutError(
            f"connect to {path} timed out after {seconds(deadline.timeout)}",
            timeout=deadline.timeout,
            address=path,
        ) from exc
    except OSError as exc:
        raise translate_os_error(exc, "connect", address=path) from exc
    except BaseException:
        sock.close()
        raise
    finally:
        loop.remove_writer(fd)


_Pending = tuple["asyncio.Future[tuple[asyncio.BaseTransport, Any]]", "PeerInfo", socket.socket]


@final
class AioListener:
    """A ``UnixListener`` whose accepts run on the event loop."""

    def __init__(self, address: Address, options: ListenOptions) -> None:
        self._raw = UnixListener(address, options)
        self._pending: collections.deque[_Pending] = collections.deque()
        self._readable: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = os.getpid()

    @property
    def address(self) -> str:
        return self._raw.address

    @property
    def closed(self) -> bool:
        return self._raw.closed

    async def accept(
        self, protocol_factory: Callable[[], P]
    ) -> tuple[asyncio.BaseTransport, P, PeerInfo]:
        """Wait for the next admitted peer.

        Cancellation loses no client: one already taken from the kernel is kept
        for the next ``accept``. Out of descriptors (EMFILE/ENFILE), it waits
        and retries, leaving the client queued.
        """
        loop = asyncio.get_running_loop()
        while True:
            self._raise_if_closed()
            if self._pending:
                future, peer, sock = self._pending.popleft()
            else:
                try:
                    sock, _ = self._raw.listening_socket.accept()
                except BlockingIOError:
                    await asyncio.shield(self._wait_readable(loop))
                    continue
                except ConnectionAbortedError:
                    continue  # the client left before we took it
                except OSError as exc:
                    self._raise_if_closed(exc)
                    if exc.errno not in ACCEPT_LATER_ERRNOS:
                        raise translate_os_error(exc, "accept", address=self.address) from exc
                    await asyncio.sleep(ACCEPT_PAUSE)
                    continue
                admitted = self._raw.admit(sock)
                if admitted is None:
                    continue  # another user, or already gone
                peer = admitted
                sock.setblocking(False)
                future = asyncio.ensure_future(loop.connect_accepted_socket(protocol_factory, sock))
            try:
                transport, protocol = await asyncio.shield(future)
            except asyncio.CancelledError:
                if not future.cancelled():
                    self._pending.appendleft((future, peer, sock))  # for the next accept
                raise
            except OSError:
                sock.close()  # asyncio closes it only if it made a transport: no leak
                continue  # the client left while its transport was set up
            return transport, protocol, peer

    def _raise_if_closed(self, exc: BaseException | None = None) -> None:
        if self._raw.closed:
            raise ConnectionClosedError("the listener was closed", address=self.address) from exc

    def _wait_readable(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """One future per listener, done when the socket is readable or the listener closes.

        Shared by concurrent accepts (the loop keeps one reader per descriptor).
        """
        if self._readable is None or self._readable.done():
            future: asyncio.Future[None] = loop.create_future()
            fd = self._raw.listening_socket.fileno()

            def ready() -> None:
                loop.remove_reader(fd)
                if not future.done():
                    future.set_result(None)

            loop.add_reader(fd, ready)
            self._readable, self._loop = future, loop
        return self._readable

    def close(self) -> None:
        """Stop listening; pending accepts end with ConnectionClosedError."""
        readable, self._readable = self._readable, None
        if readable is not None and not readable.done() and self._loop is not None:
            # Not in a forked child: its loop shares the parent's epoll instance, so
            # remove_reader would unregister the parent's pending accept.
            if not self._loop.is_closed() and os.getpid() == self._pid:
                self._loop.remove_reader(self._raw.listening_socket.fileno())
            readable.set_result(None)
        self._raw.close()
        while self._pending:  # taken from the kernel, never handed out
            future, _, sock = self._pending.popleft()
            future.add_done_callback(functools.partial(_close_transport, sock))


def _close_transport(
    sock: socket.socket, future: asyncio.Future[tuple[asyncio.BaseTransport, Any]]
) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result()[0].close()
    else:
        sock.close()  # no transport owns it
