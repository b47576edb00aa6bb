"""POSIX backend for asyncio: the same endpoints as ``unix.py``, driven by the event loop.

Binding, locking, permissions and the peer-uid check are ``unix.py``'s; this
module only moves accept and connect onto the loop and hands the socket to
``loop.connect_accepted_socket`` with the front end's BufferedProtocol, so a
selector loop (or uvloop) reads straight into the decoder's buffers.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, final

from npipes.errors import ConnectionClosedError, PipeTimeoutError

assert sys.platform != "win32"  # before importing unix.py, so mypy --platform win32 skips us

from .unix import (  # noqa: E402
    UnixListener,
    connect_failed,
    ensure_private_dir,
    new_socket,
    peer_credentials,
)

if TYPE_CHECKING:
    from npipes._deadline import Deadline
    from npipes._names import Address

    from ._base import ListenOptions, PeerInfo

__all__ = ["READS_KEEP_MESSAGE_BOUNDARIES", "AioListener", "open_connection"]

READS_KEEP_MESSAGE_BOUNDARIES = True  # a byte stream: nothing to lose

P = TypeVar("P", bound=asyncio.BaseProtocol)


async def open_connection(
    address: Address,
    deadline: Deadline,
    *,
    wait_for_listener: bool,
    protocol_factory: Callable[[], P],
) -> tuple[asyncio.BaseTransport, P, PeerInfo]:
    """Connect to ``address`` on the running loop; errors as the sync ``connect``."""
    loop = asyncio.get_running_loop()
    if address.private_dir is not None:
        ensure_private_dir(address.private_dir, create=False)
    pause = 0.001
    while True:
        sock = new_socket()
        sock.setblocking(False)
        try:
            async with asyncio.timeout(deadline.remaining()):
                await loop.sock_connect(sock, address.path)
            break
        except TimeoutError as exc:
            sock.close()
            raise PipeTimeoutError(
                f"connect to {address.path} timed out after {deadline.timeout} s",
                timeout=deadline.timeout,
                address=address.path,
            ) from exc
        except OSError as exc:
            sock.close()
            connect_failed(exc, address, deadline, wait_for_listener=wait_for_listener)
        except BaseException:
            sock.close()
            raise
        left = deadline.remaining()
        await asyncio.sleep(pause if left is None else min(pause, left))
        pause = min(pause * 2, 0.05)
    try:
        peer = peer_credentials(sock)
        transport, protocol = await loop.connect_accepted_socket(protocol_factory, sock)
    except BaseException:
        sock.close()
        raise
    return transport, protocol, peer


@final
class AioListener:
    """A ``UnixListener`` whose accepts run on the event loop."""

    def __init__(self, address: Address, options: ListenOptions) -> None:
        self._raw = UnixListener(address, options)
        self._waiting: set[asyncio.Future[Any]] = set()

    @property
    def address(self) -> str:
        return self._raw.address

    @property
    def closed(self) -> bool:
        return self._raw.closed

    async def accept(
        self, protocol_factory: Callable[[], P]
    ) -> tuple[asyncio.BaseTransport, P, PeerInfo]:
        """Wait for the next admitted peer (cancellation consumes no connection)."""
        loop = asyncio.get_running_loop()
        while True:
            if self._raw.closed:
                raise ConnectionClosedError("the listener is closed", address=self.address)
            future = asyncio.ensure_future(loop.sock_accept(self._raw.listening_socket))
            self._waiting.add(future)
            try:
                sock, _ = await future
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closed_now() and not (task and task.cancelling()):
                    raise ConnectionClosedError(
                        "the listener was closed", address=self.address
                    ) from None
                raise
            finally:
                self._waiting.discard(future)
            peer = self._raw.admit(sock)
            if peer is None:
                continue  # another user, or already gone
            sock.setblocking(False)
            try:
                transport, protocol = await loop.connect_accepted_socket(protocol_factory, sock)
            except BaseException:
                sock.close()
                raise
            return transport, protocol, peer

    def _closed_now(self) -> bool:
        return self._raw.closed  # a method, so type narrowing does not stick across awaits

    def close(self) -> None:
        """Stop listening; pending accepts end with ConnectionClosedError."""
        for future in list(self._waiting):
            future.cancel()
        self._raw.close()
