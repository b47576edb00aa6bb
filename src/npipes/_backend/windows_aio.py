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
from typing import TYPE_CHECKING, Any, TypeVar, cast, final

import pywintypes
import win32api
import win32pipe

from npipes.errors import ConnectionClosedError

assert sys.platform == "win32" or not TYPE_CHECKING

from .windows import (  # noqa: E402
    _EOF_ERRORS,
    _peer_of_client_side,
    _peer_of_server_side,
    check_path,
    create_instance,
    retry_open,
    try_open_client,
)
from .windows_security import claim_name, listener_security  # noqa: E402

if TYPE_CHECKING:
    from npipes._deadline import Deadline
    from npipes._names import Address

    from ._base import ListenOptions, PeerInfo

__all__ = ["MAX_WRITE", "READS_KEEP_MESSAGE_BOUNDARIES", "AioListener", "open_connection"]

MAX_WRITE: int | None = 0xFFFFFFFF  # WriteFile takes a DWORD length
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
    path = check_path(address.path)
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


def _connected(pipe: windows_utils.PipeHandle) -> bool:
    """Whether a client is connected to ``pipe`` (or came and left: data may wait)."""
    try:
        win32pipe.PeekNamedPipe(pipe.handle, 0)
    except pywintypes.error as exc:
        return exc.winerror in _EOF_ERRORS  # else listening (230/536): nobody came
    return True


def _close_if_cancelled(pipe: windows_utils.PipeHandle, made: asyncio.Future[Any]) -> None:
    """Close ``pipe`` if its transport task was cancelled (maybe before it ran: then only here)."""
    if made.cancelled():
        pipe.close()


@final
class AioListener:
    """A named pipe server on the proactor loop, one instance always waiting.

    Accepts run one at a time (a lock), so two concurrent ``accept()`` calls
    never share an instance. A client the OS connected is never dropped: if
    the accept is cancelled after it connected, the instance (or the transport
    already made for it, with the protocol from that call's factory) is kept
    and the next ``accept()`` returns it; a listener closed meanwhile closes it.
    An accept cancelled with nobody connected leaves its instance listening.
    """

    def __init__(self, address: Address, options: ListenOptions) -> None:
        self._closed = True
        self._address = check_path(address.path)
        self._options = options
        self._sa = listener_security(options)
        self._claim = claim_name(self._address)
        try:
            self._pending: windows_utils.PipeHandle | None = self._create(first=True)
        except BaseException:
            win32api.CloseHandle(self._claim)
            raise
        self._ready: windows_utils.PipeHandle | None = None
        self._accepting: asyncio.Future[Any] | None = None
        # A transport made for an accept that was cancelled meanwhile: the next accept's.
        self._made: asyncio.Future[Any] | None = None
        self._lock = asyncio.Lock()
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

    def _closed_error(self) -> ConnectionClosedError:
        return ConnectionClosedError("the listener is closed", address=self._address)

    async def accept(
        self, protocol_factory: Callable[[], P]
    ) -> tuple[asyncio.BaseTransport, P, PeerInfo]:
        """Wait for the next client (cancellation leaves the listener serving)."""
        loop = asyncio.get_running_loop()
        proactor = _proactor(loop)
        if self._closed:
            raise self._closed_error()
        async with self._lock:
            if self._made is not None and self._made.cancelled():
                self._made = None
            if self._made is None:
                while self._ready is None:
                    if self._closed_now():
                        raise self._closed_error()
                    await self._wait_for_client(proactor, loop)
                pipe = self._ready
                peer = _peer_of_server_side(pipe.handle)
                self._ready = None
                self._made = asyncio.ensure_future(self._make(loop, pipe, protocol_factory, peer))
                self._made.add_done_callback(lambda made: _close_if_cancelled(pipe, made))
            made = self._made
            try:
                # Shielded: the transport owns the client's pipe and may have read
                # from it; if this accept is cancelled, the next one returns it.
                result = await asyncio.shield(made)
            except asyncio.CancelledError:
                if made.cancelled():  # close() gave up on it, not our caller
                    self._made = None
                    task = asyncio.current_task()
                    if self._closed_now() and not (task and task.cancelling()):
                        raise self._closed_error() from None
                raise
            except BaseException:
                self._made = None
                raise
            self._made = None
            return cast("tuple[asyncio.BaseTransport, P, PeerInfo]", result)

    async def _make(
        self,
        loop: asyncio.AbstractEventLoop,
        pipe: windows_utils.PipeHandle,
        protocol_factory: Callable[[], P],
        peer: PeerInfo,
    ) -> tuple[asyncio.BaseTransport, P, PeerInfo]:
        try:
            transport, protocol = await _transport(loop, pipe, protocol_factory, self._address)
        except BaseException:
            pipe.close()
            raise
        return transport, protocol, peer

    async def _wait_for_client(self, proactor: Any, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until the pending instance is connected; it becomes ``_ready``."""
        if self._pending is None:  # creating it failed after the last accept
            self._pending = self._create(first=False)
        pipe = self._pending
        try:
            future = asyncio.ensure_future(proactor.accept_pipe(pipe))
        except BrokenPipeError:
            # ERROR_NO_DATA: a client came and already left; what it wrote may wait.
            future = loop.create_future()
            future.set_result(pipe)
        except OSError:
            self._settle(pipe, connected=False)
            raise
        self._accepting = future
        try:
            await future
        except BaseException:
            self._accepting = None
            done = future.done() and not future.cancelled() and future.exception() is None
            if done or _connected(pipe):
                self._settle(pipe, connected=True)
            elif self._closed:
                self._settle(pipe, connected=False)
            # else the instance stays the waiting one: closing it and making another
            # would drop a client connecting in between.
            task = asyncio.current_task()
            if self._closed_now() and not (task and task.cancelling()):
                raise self._closed_error() from None
            raise
        self._accepting = None
        self._settle(pipe, connected=True)
        if self._closed_now():
            raise self._closed_error()

    def _closed_now(self) -> bool:
        return self._closed  # a method, so type narrowing does not stick across awaits

    def _settle(self, pipe: windows_utils.PipeHandle, *, connected: bool) -> None:
        """After an accept on ``pipe`` ended: keep it if connected, and one instance waiting."""
        self._pending = None
        if self._closed:
            pipe.close()  # close() left this instance to us: leave nothing behind
            return
        if connected:
            self._ready = pipe
        else:
            pipe.close()
        self._pending = self._create(first=False)

    def close(self) -> None:
        """Stop listening; pending accepts end with ConnectionClosedError."""
        if self._closed:
            return
        self._closed = True
        if self._accepting is not None:
            self._accepting.cancel()  # the accept closes its instance (see _settle)
        elif self._pending is not None:
            self._pending.close()
            self._pending = None
        if self._ready is not None:
            self._ready.close()
            self._ready = None
        if self._made is not None:
            made, self._made = self._made, None
            if made.done() and not made.cancelled() and made.exception() is None:
                made.result()[0].close()
            else:
                made.cancel()
        win32api.CloseHandle(self._claim)
