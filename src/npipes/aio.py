"""The asyncio front end: ``npipes.aio.connect``, ``listen``, ``serve``.

Same names, options, errors and wire format as the sync API, over the same
sans-I/O connection core (``_protocol``) and backends: this module only moves
bytes and waits. The transport feeds a ``BufferedProtocol`` whose
``get_buffer`` is the core's, so on POSIX the loop reads straight into the
decoder (large messages into one buffer of their exact size) and on Windows
the proactor copies each completed read in once.

Messages are decoded as they arrive, independently of ``recv`` calls, into
the core's queue, bounded in bytes (``_protocol.READ_AHEAD``): past it the
transport stops reading, so a fast sender against a slow reader is held back
by the OS. Taking a message from the queue is atomic, so cancelling ``recv``
(or its timeout) never consumes or tears a message, and concurrent ``recv``
calls each get their own. ``send`` hands the whole frame to the transport at
once (frames never interleave; bytes-like objects other than ``bytes`` are
copied, since on Python 3.12+ the transport would keep a view of them) and
then waits for the transport's buffer to drain below its high-water mark.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self, TypeVar, Unpack, cast, final

from ._backend.aio import MAX_WRITE, READS_KEEP_MESSAGE_BOUNDARIES, AioListener, open_connection
from ._deadline import NO_DEADLINE, Deadline
from ._options import (
    ConnectOptions,
    ListenOptions,
    Settings,
    connect_settings,
    listen_settings,
)
from ._protocol import (
    HANDSHAKE_TIMEOUT,
    PACK_LIMIT,
    ConnectionCore,
    Exchange,
    State,
    accept_side,
    connect_side,
)
from .connection import writable_view
from .errors import ConnectionClosedError, MessageTooLargeError, NpipesError, PipeTimeoutError

if TYPE_CHECKING:
    from ._backend import PeerInfo
    from ._frame import Frame
    from ._types import Buffer, Payload

__all__ = ["Connection", "Listener", "Server", "connect", "listen", "serve"]

_T = TypeVar("_T")


class _StreamProtocol(asyncio.BufferedProtocol):
    """Feeds the connection core as bytes arrive and wakes the calls waiting on it."""

    def __init__(self, core: ConnectionCore) -> None:
        self.core = core
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.lost_waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._recv_waiters: list[asyncio.Future[None]] = []
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._write_paused = False
        self._read_paused = False

    # -- asyncio callbacks ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No isinstance check: uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.core.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.core.buffer_updated(nbytes)  # each read is a chunk (for framing="raw")
        self._decode()

    def eof_received(self) -> bool:
        self.core.receive_eof()
        self._decode()
        # Where the transport can half-close (sockets, not Windows pipes), keep it
        # open: a peer that half-closed after sending still gets its reply, as with
        # the sync API. A peer that closed completely fails the next send (EPIPE).
        return self.transport is not None and self.transport.can_write_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.core.receive_eof()  # clean close, or IncompleteMessageError mid-frame
        self._decode()
        _wake(self._recv_waiters)
        _wake(self._drain_waiters)
        if not self.lost_waiter.done():
            self.lost_waiter.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        _wake(self._drain_waiters)

    def closed_locally(self) -> None:
        """The core was closed here: calls waiting to receive end now, not after the flush."""
        _wake(self._recv_waiters)

    # -- decoding ---------------------------------------------------------------

    def _decode(self) -> None:
        core = self.core
        core.decode_available()
        transport = self.transport
        if transport is not None:
            if core.state is State.BROKEN:
                transport.abort()  # framing is lost; the messages before it stay queued
            elif not self._read_paused and not self.lost and not core.wants_data():
                self._read_paused = True
                transport.pause_reading()
        _wake(self._recv_waiters)

    def took(self) -> None:
        """A call took a message from the queue: read on if the budget allows."""
        if self._read_paused and self.core.state is State.OPEN and self.core.wants_data():
            self._read_paused = False
            self._decode()  # bytes already read may complete more messages
            if not self._read_paused and self.transport is not None and not self.lost:
                self.transport.resume_reading()

    async def wait_readable(self) -> None:
        """Wait until something new may be decodable (cancelling consumes nothing)."""
        waiter = asyncio.get_running_loop().create_future()
        self._recv_waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._recv_waiters:
                self._recv_waiters.remove(waiter)

    async def drain(self) -> None:
        if not self._write_paused or self.lost:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._drain_waiters:  # cancelled or timed out
                self._drain_waiters.remove(waiter)


def _wake(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
    waiters.clear()


@final
class Connection:
    """An asyncio message connection; create it with :func:`connect` or
    :meth:`Listener.accept`. Same behaviour and errors as :class:`npipes.Connection`,
    except that a timeout or cancellation of ``recv`` never closes it (messages
    are taken whole from a queue) and ``send`` returns once its message is
    handed to the transport."""

    def __init__(
        self,
        transport: asyncio.BaseTransport,
        protocol: _StreamProtocol,
        peer: PeerInfo,
        settings: Settings,
        *,
        address: str | None = None,
        authkey_side: Callable[[bytes], Exchange] | None = None,
    ) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._protocol = protocol
        self._core = protocol.core
        self._peer = peer
        self._settings = settings
        self._authkey_side = authkey_side
        self._pid = os.getpid()
        self.name: Final = settings.name
        self.address: Final = address or settings.address.path
        self.crc: Final = settings.crc
        self.max_message_size: Final = settings.max_message_size
        self.framing: Final = settings.codec.name

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<npipes.aio.Connection {self.address!r} {state}>"

    @property
    def peer(self) -> PeerInfo:
        """The other process: ``pid``, and ``uid``/``gid`` (POSIX) or ``sid`` (Windows)."""
        return self._peer

    @property
    def closed(self) -> bool:
        """True once closed by :meth:`aclose`, by the peer (once its end was
        received), or after an error that lost framing."""
        return self._core.closed

    def _after_error(self) -> None:
        if self._core.state is not State.OPEN:
            if self._core.state is State.BROKEN:
                self._transport.abort()
            else:
                self._transport.close()  # flushes what is queued

    async def _wait(self, awaitable: Awaitable[_T], deadline: Deadline, what: str) -> _T:
        """Await ``awaitable`` within ``deadline``. Callers build the deadline first (it
        checks the timeout), so a bad timeout fails before anything is written or awaited."""
        if deadline.timeout is None:  # no timeout context on the hot path
            return await awaitable
        timeout = deadline.timeout
        try:
            async with asyncio.timeout(deadline.remaining()):
                return await awaitable
        except TimeoutError as exc:
            error = PipeTimeoutError(f"{what} timed out after {timeout} s", timeout=timeout)
            self._core.annotate(error)
            raise error from exc

    # -- sending ------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._protocol.lost or self._transport.is_closing():
            self._peer_gone()
        self._core.check_sending()

    def _core_error(self, exc: NpipesError) -> NpipesError:
        self._core.annotate(exc)
        return exc

    def _check_written(self) -> None:
        if self._transport.is_closing():  # the write failed at once: the peer is gone
            self._peer_gone()
            self._core.check_sending()

    def _peer_gone(self) -> None:
        # The core's rule: sending is over; what the peer sent before is still received.
        self._core.send_failed(ConnectionClosedError("the peer closed the connection"))

    def _write(self, parts: Sequence[Buffer]) -> None:
        # All parts now, with no await between them: frames never interleave.
        # Only bytes may be kept by the transport: other buffers could change
        # after the call (Python 3.12+ transports keep views), so they are copied.
        write = self._transport.write
        views = [memoryview(part) for part in parts]
        if MAX_WRITE is not None:
            for view in views:
                if view.nbytes > MAX_WRITE:  # checked before anything is written
                    raise self._core_error(
                        MessageTooLargeError(
                            f"cannot send a {view.nbytes}-byte part in one pipe write (at most"
                            f" {MAX_WRITE} bytes on this OS); split the message",
                            size=view.nbytes,
                            limit=MAX_WRITE,
                        )
                    )
        if sum(view.nbytes for view in views) <= PACK_LIMIT:  # one write, as send_many packs
            write(b"".join(views))
            return
        for part, view in zip(parts, views, strict=True):
            if view.nbytes:
                write(part if type(part) is bytes else view.tobytes())

    async def send(
        self, data: Payload, *, timeout: float | None = None, crc: bool | None = None
    ) -> None:
        """Send one message; waits while the transport's buffer is above its high-water mark.

        The payload is copied unless it is ``bytes``, so the caller may reuse
        its buffer as soon as this returns, times out or is cancelled.

        Raises:
            TypeError: ``data`` is not ``str`` or bytes-like; nothing sent.
            MessageTooLargeError: above ``max_message_size``; nothing sent.
            PipeTimeoutError: the buffer did not drain in time (the message is
                queued whole and will still go out; the connection stays usable).
            ConnectionClosedError: the connection is closed.
        """
        deadline = _deadline(timeout)  # a bad timeout fails before anything is written
        parts = self._core.encode(data, crc)
        self._check_writable()
        self._write(parts)
        self._check_written()
        await self._wait(self._protocol.drain(), deadline, "send")

    async def send_many(
        self,
        messages: Iterable[Payload],
        *,
        timeout: float | None = None,
        crc: bool | None = None,
    ) -> int:
        """Send several messages at once (small frames packed into one write).

        Returns:
            The number of messages sent. Raises as :meth:`send`; every message
            is checked before anything is written.
        """
        deadline = _deadline(timeout)  # a bad timeout fails before anything is written
        writes, count = self._core.encode_many(messages, crc)
        self._check_writable()
        for parts in writes:
            self._write(parts)
        self._check_written()
        await self._wait(self._protocol.drain(), deadline, "send")
        return count

    # -- receiving ----------------------------------------------------------

    async def _next_frame(self, crc: bool | None, *, resume: bool = True) -> Frame:
        """The next frame; ``resume=False`` leaves reading paused where the budget paused
        it (the handshake: what follows its last message is decoded under normal limits)."""
        core = self._core
        protocol = self._protocol
        while True:
            try:
                frame = core.next_frame(crc)
            except NpipesError:
                self._after_error()
                protocol.took()  # a dropped message frees its share of the budget too
                raise
            if frame is not None:
                if resume:
                    protocol.took()
                return frame
            await protocol.wait_readable()

    async def recv(self, timeout: float | None = None, *, crc: bool | None = None) -> bytes | str:
        """Receive the next message (``str`` for text, ``bytes`` for binary).

        Cancelling it, or a timeout, consumes nothing: the connection stays usable.

        Args:
            crc: require a CRC-32 on this message; None uses the connection's setting.
        Raises:
            As :meth:`npipes.Connection.recv`.
        """
        deadline = _deadline(timeout)
        return (await self._wait(self._next_frame(crc), deadline, "recv")).message

    async def recv_many(
        self, max_messages: int = 1024, timeout: float | None = None, *, crc: bool | None = None
    ) -> list[bytes | str]:
        """At least one message, plus every further one already received (see
        :meth:`npipes.Connection.recv_many`)."""
        if isinstance(max_messages, bool) or not isinstance(max_messages, int):
            raise TypeError(f"max_messages must be an int, not {type(max_messages).__name__}")
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        messages = [await self.recv(timeout, crc=crc)]
        if max_messages > 1:
            messages += self._core.take_ready(max_messages - 1, crc)
            self._protocol.took()
        return messages

    async def recv_into(
        self, buffer: Buffer, *, timeout: float | None = None, crc: bool | None = None
    ) -> int:
        """Receive the next message's payload into ``buffer``; return its size.

        ``buffer`` is written only when the message is complete, so a
        cancelled call leaves it and the connection untouched.

        Raises:
            BufferTooSmallError: the message is longer than ``buffer``; nothing
                consumed. Otherwise as :meth:`recv`.
        """
        deadline = _deadline(timeout)
        view = writable_view(buffer)
        return await self._wait(self._next_into(view, crc), deadline, "recv")

    async def _next_into(self, view: memoryview, crc: bool | None) -> int:
        core = self._core
        protocol = self._protocol
        while True:
            try:
                size = core.next_message_into(view, crc, direct=False)
            except NpipesError:
                self._after_error()
                protocol.took()  # a dropped message frees its share of the budget too
                raise
            if size is not None:
                protocol.took()
                return size
            await protocol.wait_readable()

    # -- the authkey handshake --------------------------------------------------

    async def _handshake(self, exchange: Exchange, timeout: float | None) -> None:
        """Run an authkey exchange with the core's limits; close on failure."""
        deadline = Deadline(HANDSHAKE_TIMEOUT if timeout is None else timeout)
        steps = self._core.handshake(exchange)
        try:
            step = next(steps)
            while True:
                if step is None:
                    # Taken without resuming reading: bytes after this message (an
                    # authenticated peer's first message may follow the last one in
                    # the same read) are decoded once the exchange has moved on.
                    frame = await self._wait(self._next_frame(None, resume=False), deadline, "recv")
                    step = steps.send(frame.message)
                    self._protocol.took()
                else:
                    await self.send(step, timeout=deadline.remaining())
                    step = steps.send(None)
        except StopIteration:
            self._protocol.took()  # the read-ahead budget is back to normal
            return
        except BaseException:
            steps.close()
            self.abort()
            raise

    async def _authenticate(self, timeout: float | None = None) -> None:
        """Run the accept side's authkey handshake, if the listener has a key (else nothing)."""
        authkey = self._settings.authkey
        if authkey is not None and self._authkey_side is not None:
            await self._handshake(self._authkey_side(authkey), timeout)

    async def _wait_readable(self, timeout: float | None) -> bool:
        """Wait until a whole message arrived or the connection ended; False on timeout.

        Consumes nothing. Servers use it for ``idle_timeout``: a first *message*,
        not a first byte, so a client dribbling a byte now and then loses its slot.
        """
        core = self._core
        protocol = self._protocol
        try:
            async with asyncio.timeout(Deadline(timeout).remaining()):
                while not (core.message_ready() or protocol.lost):
                    await protocol.wait_readable()
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

    # -- lifetime -----------------------------------------------------------

    async def aclose(self, flush_timeout: float | None = 10.0) -> None:
        """Close the connection (idempotent); what was sent is still delivered.

        Waits up to ``flush_timeout`` seconds for buffered data to reach a peer
        that stopped reading, then drops it (:meth:`abort`). Cancelling it
        aborts and lets the cancellation through.

        Raises:
            TypeError, ValueError: ``flush_timeout`` is not None or a number >= 0
                (checked before anything is closed).
        """
        flush = _deadline(flush_timeout)
        if self._closed_in_forked_child():
            return
        core = self._core
        was_open = core.state is State.OPEN
        core.close()
        self._protocol.closed_locally()
        if self._transport.is_closing() and not was_open and self._protocol.lost:
            return
        self._transport.close()  # flushes what is buffered, then closes
        try:
            async with asyncio.timeout(flush.remaining()):
                await asyncio.shield(self._protocol.lost_waiter)
        except TimeoutError:
            self._transport.abort()
        except asyncio.CancelledError:
            self._transport.abort()
            raise

    def abort(self) -> None:
        """Close at once, dropping anything not yet sent (idempotent)."""
        if self._closed_in_forked_child():
            return
        self._core.close()
        self._transport.abort()

    def _closed_in_forked_child(self) -> bool:
        """In a forked child, close only this process's descriptor; True if it did.

        The transport belongs to the parent's loop, whose epoll instance the child
        shares: closing it here would unregister the parent's socket (its pending
        recv would never wake). So the child's copy of the descriptor is pointed at
        /dev/null instead (the number stays valid for the transport to close).
        """
        if os.getpid() == self._pid:
            return False
        self._core.close()
        sock = self._transport.get_extra_info("socket")
        if sock is not None and sock.fileno() >= 0:
            devnull = os.open(os.devnull, os.O_RDWR)
            try:
                os.dup2(devnull, sock.fileno(), inheritable=False)  # as the socket was
            finally:
                os.close(devnull)
        return True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _protocol_factory(settings: Settings, address: str) -> Callable[[], _StreamProtocol]:
    return lambda: _StreamProtocol(
        ConnectionCore(
            settings.codec,
            crc=settings.crc,
            max_message_size=settings.max_message_size,
            message_mode=False,
            name=settings.name,
            address=address,
            authenticating=settings.authkey is not None,
        )
    )


def _check_framing(settings: Settings) -> Settings:
    codec = settings.codec
    if codec.message_based and not READS_KEEP_MESSAGE_BOUNDARIES:
        raise ValueError(
            f"the {codec.name} framing needs pipe-message boundaries, which asyncio's"
            " proactor does not report: use the sync API for it on Windows"
        )
    return settings


@final
class Listener:
    """An asyncio listener; create it with :func:`listen`. Same behaviour as
    :class:`npipes.Listener`, with ``await accept()`` and ``await aclose()``."""

    def __init__(self, raw: AioListener, settings: Settings) -> None:
        self._raw = raw
        self._settings = settings
        self.name: Final = settings.name
        self.crc: Final = settings.crc
        self.max_message_size: Final = settings.max_message_size

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
        """Wait for the next client. Cancelling it leaves the listener serving
        and loses no client.

        Raises:
            PipeTimeoutError: nobody came within ``timeout`` seconds.
            ConnectionClosedError: the listener was closed.
            AuthenticationError: the client failed the handshake (this accept only).
        """
        deadline = Deadline(timeout)
        conn = await self._accept_unauthenticated(timeout)
        await conn._authenticate(deadline.remaining())
        return conn

    async def _accept_unauthenticated(self, timeout: float | None = None) -> Connection:
        """Accept without the authkey handshake (servers run it in the client's task)."""
        factory = _protocol_factory(self._settings, self.address)
        deadline = Deadline(timeout)
        try:
            async with asyncio.timeout(deadline.remaining()):
                transport, protocol, peer = await self._raw.accept(factory)
        except TimeoutError as exc:
            raise PipeTimeoutError(
                f"no client connected to {self.address} within {timeout} s",
                timeout=timeout,
                name=self.name,
                address=self.address,
            ) from exc
        except NpipesError as exc:
            self._settings.annotate(exc, self.address)
            raise
        return Connection(
            transport,
            protocol,
            peer,
            self._settings,
            address=self.address,
            authkey_side=accept_side,
        )

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


async def listen(name: str, **options: Unpack[ListenOptions]) -> Listener:
    """Listen on ``name``; the options and errors are those of :func:`npipes.listen`."""
    settings = _check_framing(listen_settings(name, options))
    try:
        raw = AioListener(settings.address, settings.endpoint)
    except NpipesError as exc:
        settings.annotate(exc)
        raise
    return Listener(raw, settings)


async def connect(
    name: str, *, timeout: float | None = None, **options: Unpack[ConnectOptions]
) -> Connection:
    """Connect to ``name``; the options and errors are those of :func:`npipes.connect`."""
    settings = _check_framing(connect_settings(name, options))
    deadline = Deadline(timeout)
    try:
        transport, protocol, peer = await open_connection(
            settings.address,
            deadline,
            wait_for_listener=settings.wait_for_listener,
            protocol_factory=_protocol_factory(settings, settings.address.path),
            allowed_uids=settings.allowed_uids,
        )
    except NpipesError as exc:
        settings.annotate(exc)
        raise
    conn = Connection(transport, protocol, peer, settings)
    if settings.authkey is not None:
        await conn._handshake(connect_side(settings.authkey), deadline.remaining())
    return conn


def _deadline(timeout: float | None) -> Deadline:
    """The deadline of a call (checks ``timeout``: TypeError/ValueError for a bad one)."""
    return NO_DEADLINE if timeout is None else Deadline(timeout)


from ._aio_server import Server, serve  # noqa: E402 - it imports this module
