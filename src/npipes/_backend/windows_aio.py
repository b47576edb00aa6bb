"""Windows backend for asyncio: our own pipe instances, driven by the proactor loop.

asyncio's ``start_serving_pipe``/``create_pipe_connection`` cannot take a
security descriptor, reject remote clients or open clients at identification
level, so npipes creates the handles itself (``windows.py``: same secure
defaults, same per-name claim) and hands them to the proactor: the overlapped
``ConnectNamedPipe`` through ``proactor.accept_pipe`` and the connected pipe
through the loop's duplex pipe transport. No thread per connection: every wait
is an overlapped operation on the loop's I/O completion port.
"""

from __future__ import annotations

import asyncio
import sys
from asyncio import windows_utils
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, final

import pywintypes
import win32api

from npipes.errors import ConnectionClosedError

assert sys.platform == "win32" or not TYPE_CHECKING

from .windows import (  # noqa: E402
    _name_semaphore,
    _peer_of_client_side,
    _peer_of_server_side,
    create_instance,
    listener_security,
    retry_open,
    try_open_client,
)

if TYPE_CHECKING:
    from npipes._deadline import Deadline
    from npipes._names import Address

    from ._base import ListenOptions, PeerInfo

__all__ = ["READS_KEEP_MESSAGE_BOUNDARIES", "AioListener", "open_connection"]

READS_KEEP_MESSAGE_BOUNDARIES = False  # the proactor reports ERROR_MORE_DATA as a plain read

P = TypeVar("P", bound=asyncio.BaseProtocol)


def _proactor(loop: asyncio.AbstractEventLoop) -> Any:
    proactor = getattr(loop, "_proactor", None)
    if proactor is None:
        raise RuntimeError(
            "npipes.aio needs the proactor event loop on Windows (asyncio's default);"
            " a selector loop cannot wait on named pipes"
        )
    return proactor


async def _transport(
    loop: asyncio.AbstractEventLoop,
    pipe: windows_utils.PipeHandle,
    protocol_factory: Callable[[], P],
    address: str,
) -> tuple[asyncio.BaseTransport, P]:
    protocol = protocol_factory()
    waiter = loop.create_future()
    make = loop._make_duplex_pipe_transport  # type: ignore[attr-defined]
    transport = make(pipe, protocol, waiter, extra={"addr": address})
    try:
        await waiter
    except BaseException:
        transport.close()
        raise
    return transport, protocol


async def open_connection(
    address: Address,
    deadline: Deadline,
    *,
    wait_for_listener: bool,
    protocol_factory: Callable[[], P],
    allowed_uids: frozenset[int] = frozenset(),  # POSIX only: the DACL decides here
) -> tuple[asyncio.BaseTransport, P, PeerInfo]:
    """Open the client end of ``address`` (identification-level SQOS) on the loop."""
    loop = asyncio.get_running_loop()
    _proactor(loop)
    path = address.path
    pause = 0.001
    while True:
        handle = try_open_client(path)
        if not isinstance(handle, pywintypes.error):
            break
        retry_open(handle, path, deadline, wait_for_listener=wait_for_listener)
        left = deadline.remaining()
        await asyncio.sleep(pause if left is None else min(pause, left))
        pause = min(pause * 2, 0.05)
    peer = _peer_of_client_side(handle)
    pipe = windows_utils.PipeHandle(handle.Detach())
    try:
        transport, protocol = await _transport(loop, pipe, protocol_factory, path)
    except BaseException:
        pipe.close()
        raise
    return transport, protocol, peer


@final
class AioListener:
    """A named pipe server on the proactor loop, one instance always waiting."""

    def __init__(self, address: Address, options: ListenOptions) -> None:
        self._closed = True
        self._address = address.path
        self._options = options
        self._sa = listener_security(options)
        self._claim = _name_semaphore(self._address)
        try:
            self._pending = self._create(first=True)
        except BaseException:
            win32api.CloseHandle(self._claim)
            raise
        self._waiting: set[asyncio.Future[Any]] = set()
        self._closed = False

    @property
    def address(self) -> str:
        return self._address

    @property
    def closed(self) -> bool:
        return self._closed

    def _create(self, *, first: bool) -> windows_utils.PipeHandle:
        handle = create_instance(self._address, self._options, self._sa, first=first)
        return windows_utils.PipeHandle(handle.Detach())

    async def accept(
        self, protocol_factory: Callable[[], P]
    ) -> tuple[asyncio.BaseTransport, P, PeerInfo]:
        """Wait for the next client (cancellation leaves the listener serving)."""
        loop = asyncio.get_running_loop()
        proactor = _proactor(loop)
        if self._closed:
            raise ConnectionClosedError("the listener is closed", address=self._address)
        pipe = self._pending
        try:
            future = asyncio.ensure_future(proactor.accept_pipe(pipe))
        except BrokenPipeError:
            # ERROR_NO_DATA: a client came and already left; what it wrote may wait.
            future = loop.create_future()
            future.set_result(pipe)
        self._waiting.add(future)
        try:
            await future
        except asyncio.CancelledError:
            # The overlapped ConnectNamedPipe was cancelled: replace the instance.
            self._replace(pipe)
            task = asyncio.current_task()
            if self._closed_now() and not (task and task.cancelling()):
                raise ConnectionClosedError(
                    "the listener was closed", address=self._address
                ) from None
            raise
        except OSError:
            self._replace(pipe)
            raise
        finally:
            self._waiting.discard(future)
        self._pending = self._create(first=False)  # before handing this one out
        peer = _peer_of_server_side(pipe.handle)
        try:
            transport, protocol = await _transport(loop, pipe, protocol_factory, self._address)
        except BaseException:
            pipe.close()
            raise
        return transport, protocol, peer

    def _closed_now(self) -> bool:
        return self._closed  # a method, so type narrowing does not stick across awaits

    def _replace(self, pipe: windows_utils.PipeHandle) -> None:
        if not self._closed and pipe is self._pending:
            self._pending = self._create(first=False)
        pipe.close()

    def close(self) -> None:
        """Stop listening; pending accepts end with ConnectionClosedError."""
        if self._closed:
            return
        self._closed = True
        for future in list(self._waiting):
            future.cancel()
        if not self._waiting:
            self._pending.close()
        win32api.CloseHandle(self._claim)
