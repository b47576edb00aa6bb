"""The asyncio front end: ``npipes.aio.connect``, ``listen``, ``serve``.

Same names, options, errors and wire format as the sync API, over the same
codec and backends. The transport feeds a ``BufferedProtocol`` whose
``get_buffer`` is the decoder's, so on POSIX the loop reads straight into the
decoder (large messages into one buffer of their exact size) and on Windows
the proactor copies each completed read in once.

Frames are decoded as they arrive, independently of ``recv`` calls, and wait
in a small queue; so cancelling ``recv`` (or a timeout around it) never
consumes or tears a message: the connection stays intact. When the queue is
full the transport stops reading, so a fast sender against a slow reader is
held back by the OS, not buffered without bound. ``send`` writes the whole
frame at once (frames never interleave) and then waits for the transport to
drain below its high-water mark.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self, TypeVar, cast, final

from ._backend import ListenOptions, PeerInfo
from ._backend.aio import READS_KEEP_MESSAGE_BOUNDARIES, AioListener, open_connection
from ._deadline import Deadline
from ._frame import DEFAULT_MAX_MESSAGE_SIZE, Frame
from ._framings import Codec, Decoder, get_codec
from ._names import resolve
from ._protocol import MAX_HANDSHAKE_MESSAGE, Exchange, accept_side, connect_side
from .connection import _check_limit
from .errors import (
    AuthenticationError,
    ChecksumError,
    ConnectionClosedError,
    NpipesError,
    PipeTimeoutError,
)

if TYPE_CHECKING:
    from ._types import Payload

__all__ = ["Connection", "Listener", "Server", "connect", "listen", "serve"]

_T = TypeVar("_T")

_QUEUE_HIGH: Final = 64  # decoded messages waiting before reading pauses
_QUEUE_LOW: Final = 16
_JOIN_LIMIT: Final = 64 * 1024  # frames below this go to the transport as one write


class _FrameProtocol(asyncio.BufferedProtocol):
    """Decodes frames as bytes arrive and queues them (or their errors) for ``recv``."""

    def __init__(self, decoder: Decoder) -> None:
        self._decoder = decoder
        self._queue: collections.deque[Frame | NpipesError] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.eof = False
        self.lost_waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._write_paused = False
        self._read_paused = False

    # -- asyncio callbacks ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No isinstance check: uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._decoder.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self._decoder.buffer_updated(nbytes)
        self._decoder.message_end()  # each read is a chunk (for framing="raw")
        self._drain_decoder()

    def eof_received(self) -> bool | None:
        self.eof = True
        self._decoder.feed_eof()
        self._drain_decoder()
        # Where the transport can half-close (sockets, not Windows pipes), keep it
        # open: a peer that half-closed after sending still gets its reply, as with
        # the sync API. A peer that closed completely fails the next send (EPIPE).
        return self.transport is not None and self.transport.can_write_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost:
            self.lost = True
            if not self._decoder.broken:
                self._decoder.feed_eof()  # clean close, or IncompleteMessageError mid-frame
                self._drain_decoder()
        self._wake()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        if not self.lost_waiter.done():
            self.lost_waiter.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # -- decoding ---------------------------------------------------------------

    def _drain_decoder(self) -> None:
        decoder = self._decoder
        while not decoder.broken:
            try:
                frame = decoder.next_frame()
            except ConnectionClosedError as exc:
                if not self._queue or not isinstance(self._queue[-1], ConnectionClosedError):
                    self._queue.append(exc)
                break
            except NpipesError as exc:
                self._queue.append(exc)
                if self._decoder.broken and self.transport is not None:
                    self.transport.abort()  # framing is lost
                continue
            if frame is None:
                break
            self._queue.append(frame)
        if len(self._queue) >= _QUEUE_HIGH and not self._read_paused and self.transport:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- for the Connection -------------------------------------------------------

    @property
    def finished(self) -> bool:
        """The connection is gone and nothing but its end is left to receive."""
        ended = self.lost or self.eof
        return ended and (not self._queue or isinstance(self._queue[0], ConnectionClosedError))

    async def next_frame(self) -> Frame:
        while not self._queue:
            if self.lost:
                raise ConnectionClosedError("the connection is closed")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter  # cancelling here consumes nothing
            finally:
                self._waiter = None
        item = self._queue[0]
        if isinstance(item, ConnectionClosedError):
            self._queue[0] = ConnectionClosedError(str(item))  # raise a fresh one next time
            raise item
        self._queue.popleft()
        if self._read_paused and len(self._queue) <= _QUEUE_LOW and self.transport:
            self._read_paused = False
            self.transport.resume_reading()
        if isinstance(item, NpipesError):
            raise item
        return item

    async def drain(self) -> None:
        if self.lost:
            raise ConnectionClosedError("the connection is closed")
        if not self._write_paused:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._drain_waiters:  # cancelled or timed out
                self._drain_waiters.remove(waiter)
        if self.lost:
            raise ConnectionClosedError("the peer closed the connection")


@final
class Connection:
    """An asyncio message connection; create it with :func:`connect` or
    :meth:`Listener.accept`. Same behaviour and errors as :class:`npipes.Connection`."""

    def __init__(
        self,
        transport: asyncio.BaseTransport,
        protocol: _FrameProtocol,
        peer: PeerInfo,
        *,
        name: str,
        address: str,
        crc: bool,
        max_message_size: int | None,
        codec: Codec,
        authkey: bytes | None = None,
    ) -> None:
        self._codec = codec
        self._authkey = authkey  # the listener's key, for _authenticate (accept side)
        self.framing: Final = codec.name
        self._transport = cast(asyncio.Transport, transport)
        self._protocol = protocol
        self._peer = peer
        self._closed = False
        self.name: Final = name
        self.address: Final = address
        self.crc: Final = crc
        self.max_message_size: Final = max_message_size

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<npipes.aio.Connection {self.address!r} {state}>"

    @property
    def peer(self) -> PeerInfo:
        """The other process: ``pid``, and ``uid``/``gid`` (POSIX) or ``sid`` (Windows)."""
        return self._peer

    @property
    def closed(self) -> bool:
        """True once closed by :meth:`aclose`, by the peer, or after an error that lost framing."""
        return self._closed or self._protocol.finished

    def _fail(self, exc: NpipesError) -> NpipesError:
        exc.name, exc.address = self.name, self.address
        return exc

    async def send(
        self, data: Payload, *, timeout: float | None = None, crc: bool | None = None
    ) -> None:
        """Send one message; waits while the transport's buffer is above its high-water mark.

        Raises:
            MessageTooLargeError: above ``max_message_size``; nothing sent.
            PipeTimeoutError: the buffer did not drain in time (the message is
                queued and will still go out; the connection stays usable).
            ConnectionClosedError: the connection is closed.
        """
        with_crc = self.crc if crc is None else crc
        parts = self._codec.encode(data, crc=with_crc, max_size=self.max_message_size)
        if self._closed or self._protocol.lost or self._transport.is_closing():
            raise self._fail(ConnectionClosedError("the connection is closed"))
        views = [memoryview(part).cast("B") for part in parts]
        if sum(view.nbytes for view in views) <= _JOIN_LIMIT:
            self._transport.write(b"".join(views))
        else:  # all parts now, with no await between them: frames never interleave
            for view in views:
                if view.nbytes:
                    self._transport.write(view)
        if self._transport.is_closing():  # the write failed at once: the peer is gone
            raise self._fail(ConnectionClosedError("the peer closed the connection"))
        await self._wait(self._protocol.drain(), timeout, "send")

    async def recv(self, timeout: float | None = None, *, crc: bool | None = None) -> bytes | str:
        """Receive the next message (``str`` for text, ``bytes`` for binary).

        Cancelling it, or a timeout, consumes nothing: the connection stays usable.

        Args:
            crc: require a CRC-32 on this message; None uses the connection's setting.
        Raises:
            As :meth:`npipes.Connection.recv`.
        """
        if crc and not self._codec.supports_crc:
            raise ValueError(
                f"the {self.framing} framing has no checksum: crc=True is not available"
            )
        frame = await self._wait(self._protocol.next_frame(), timeout, "recv")
        if not frame.crc and (self.crc if crc is None else crc):
            raise self._fail(
                ChecksumError(
                    "the peer sent a message without a CRC-32 but this side requires one"
                    " (crc=True); the message was dropped. Open the peer with crc=True too."
                )
            )
        return frame.message

    async def _wait(self, awaitable: Awaitable[_T], timeout: float | None, what: str) -> _T:
        try:
            if timeout is None:  # no timeout context on the hot path
                return await awaitable
            async with asyncio.timeout(Deadline(timeout).remaining()):
                return await awaitable
        except TimeoutError as exc:
            raise self._fail(
                PipeTimeoutError(f"{what} timed out after {timeout} s", timeout=timeout)
            ) from exc
        except NpipesError as exc:
            raise self._fail(exc) from None

    async def _handshake(self, exchange: Exchange, timeout: float | None) -> None:
        """Run a sans-I/O exchange (``_protocol``) over this connection; close on failure."""
        deadline = Deadline(timeout)
        try:
            to_peer = next(exchange)
            while True:
                if to_peer is None:
                    message = await self.recv(timeout=deadline.remaining())
                    if isinstance(message, str) or len(message) > MAX_HANDSHAKE_MESSAGE:
                        raise AuthenticationError("authentication failed: unexpected message")
                    to_peer = exchange.send(message)
                else:
                    await self.send(to_peer, timeout=deadline.remaining())
                    to_peer = exchange.send(None)
        except StopIteration:
            return
        except BaseException:
            await self.aclose()
            raise

    async def _authenticate(self, timeout: float | None) -> None:
        """Run the accept side of the authkey handshake if the listener has a key.

        Servers call it in the connection's own task, so a client that never
        answers holds up nobody else. Closes the connection on failure.
        """
        if self._authkey is not None:
            await self._handshake(accept_side(self._authkey), timeout)

    async def _wait_readable(self, timeout: float | None) -> bool:
        """Wait until the peer sent something or the connection ended; False on timeout.

        Consumes no message. Servers use it for ``idle_timeout``.
        """
        protocol = self._protocol
        try:
            async with asyncio.timeout(timeout):
                while not (
                    protocol._queue or protocol.lost or protocol.eof or not protocol._decoder.idle
                ):
                    protocol._waiter = asyncio.get_running_loop().create_future()
                    try:
                        await protocol._waiter
                    finally:
                        protocol._waiter = None
        except TimeoutError:
            return False
        return True

    def __aiter__(self) -> AsyncIterator[bytes | str]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[bytes | str]:
        while True:
            try:
                yield await self.recv()
            except ConnectionClosedError as exc:
                if type(exc) is ConnectionClosedError:
                    return
                raise

    async def aclose(self, flush_timeout: float | None = 10.0) -> None:
        """Close the connection (idempotent); what was sent is still delivered.

        Waits up to ``flush_timeout`` seconds for buffered data to reach a peer
        that stopped reading, then drops it (:meth:`abort`).
        """
        if self._closed:
            return
        self._closed = True
        self._transport.close()  # flushes what is buffered, then closes
        try:
            async with asyncio.timeout(flush_timeout):
                await asyncio.shield(self._protocol.lost_waiter)
        except TimeoutError:
            self._transport.abort()
        except asyncio.CancelledError:
            self._transport.abort()
            raise

    def abort(self) -> None:
        """Close at once, dropping anything not yet sent (idempotent)."""
        self._closed = True
        self._transport.abort()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _protocol_factory(codec: Codec, max_message_size: int | None) -> Callable[[], _FrameProtocol]:
    # The decoder verifies any CRC that is present; "required" is checked per recv.
    return lambda: _FrameProtocol(
        codec.decoder(max_message_size=max_message_size, require_crc=False, message_mode=False)
    )


def _codec(framing: str | Codec, crc: bool, authkey: bytes | None) -> Codec:
    codec = get_codec(framing, crc=crc, authkey=authkey)
    if codec.message_based and not READS_KEEP_MESSAGE_BOUNDARIES:
        raise ValueError(
            f"the {codec.name} framing needs pipe-message boundaries, which asyncio's"
            " proactor does not report: use the sync API for it on Windows"
        )
    return codec


@final
class Listener:
    """An asyncio listener; create it with :func:`listen`. Same behaviour as
    :class:`npipes.Listener`, with ``await accept()`` and ``await aclose()``."""

    def __init__(
        self,
        raw: AioListener,
        *,
        name: str,
        crc: bool,
        max_message_size: int | None,
        codec: Codec,
        authkey: bytes | None,
    ) -> None:
        self._raw = raw
        self._codec = codec
        self._authkey = authkey
        self.name: Final = name
        self.crc: Final = crc
        self.max_message_size: Final = max_message_size

    def __repr__(self) -> str:
        state = "closed" if self.closed else "listening"
        return f"<npipes.aio.Listener {self.address!r} {state}>"

    @property
    def address(self) -> str:
        """The OS address: socket path, or ``\\\\.\\pipe\\NAME`` on Windows."""
        return self._raw.address

    @property
    def closed(self) -> bool:
        return self._raw.closed

    async def accept(self, timeout: float | None = None) -> Connection:
        """Wait for the next client. Cancelling it leaves the listener serving.

        Raises:
            PipeTimeoutError: nobody came within ``timeout`` seconds.
            ConnectionClosedError: the listener was closed.
        """
        deadline = Deadline(timeout)
        conn = await self._accept_unauthenticated(timeout)
        await conn._authenticate(deadline.remaining())
        return conn

    async def _accept_unauthenticated(self, timeout: float | None) -> Connection:
        """Wait for the next client; the authkey handshake is left to
        :meth:`Connection._authenticate` (servers run it in the client's task)."""
        factory = _protocol_factory(self._codec, self.max_message_size)
        try:
            async with asyncio.timeout(timeout):
                transport, protocol, peer = await self._raw.accept(factory)
        except TimeoutError as exc:
            raise PipeTimeoutError(
                f"no client connected to {self.address} within {timeout} s",
                timeout=timeout,
                name=self.name,
                address=self.address,
            ) from exc
        conn = Connection(
            transport,
            protocol,
            peer,
            name=self.name,
            address=self.address,
            crc=self.crc,
            max_message_size=self.max_message_size,
            codec=self._codec,
            authkey=self._authkey,
        )
        return conn

    async def aclose(self) -> None:
        """Stop listening and remove the endpoint; idempotent."""
        self._raw.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def listen(
    name: str,
    *,
    crc: bool = False,
    framing: str | Codec = "npipes",
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
    allow_other_users: bool = False,
    backlog: int = 128,
    allow_remote: bool = False,
    allowed_users: Sequence[str] = (),
    security_descriptor: str | None = None,
    authkey: bytes | None = None,
) -> Listener:
    """Listen on ``name``; the options and errors are those of :func:`npipes.listen`."""
    codec = _codec(framing, crc, authkey)
    _check_limit(max_message_size)
    options = ListenOptions(
        allow_other_users=allow_other_users,
        backlog=backlog,
        allow_remote=allow_remote,
        allowed_users=tuple(allowed_users),
        security_descriptor=security_descriptor,
    )
    try:
        raw = AioListener(resolve(name), options)
    except NpipesError as exc:
        exc.name = name
        raise
    return Listener(
        raw,
        name=name,
        crc=crc,
        max_message_size=max_message_size,
        codec=codec,
        authkey=authkey,
    )


async def connect(
    name: str,
    *,
    timeout: float | None = None,
    crc: bool = False,
    framing: str | Codec = "npipes",
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
    wait_for_listener: bool = False,
    authkey: bytes | None = None,
) -> Connection:
    """Connect to ``name``; the options and errors are those of :func:`npipes.connect`."""
    codec = _codec(framing, crc, authkey)
    _check_limit(max_message_size)
    address = resolve(name)
    deadline = Deadline(timeout)
    try:
        transport, protocol, peer = await open_connection(
            address,
            deadline,
            wait_for_listener=wait_for_listener,
            protocol_factory=_protocol_factory(codec, max_message_size),
        )
    except NpipesError as exc:
        exc.name = name
        raise
    conn = Connection(
        transport,
        protocol,
        peer,
        name=name,
        address=address.path,
        crc=crc,
        max_message_size=max_message_size,
        codec=codec,
    )
    if authkey is not None:
        await conn._handshake(connect_side(authkey), deadline.remaining())
    return conn


from ._aio_server import Handler, Server, serve  # noqa: E402, F401
