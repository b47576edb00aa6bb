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
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar, Unpack, cast, final

from . import _reconnect
from ._backend.aio import MAX_WRITE, READS_KEEP_MESSAGE_BOUNDARIES, AioListener, open_connection
from ._control import OwedReplies, check_reply, reply_consumed
from ._deadline import NO_DEADLINE, Deadline, seconds
from ._objects import check_pickle_allowed, decode_json, decode_pickle, encode_json, encode_pickle
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

log = logging.getLogger("npipes")

# A read into the core's buffer with less room than _SMALL_ROOM goes to a scratch buffer
# of _SCRATCH_SIZE bytes instead (then copied in): one loop iteration per read costs far
# more than the copy. POSIX selector loops only: the proactor copies into get_buffer anyway.
_SCRATCH_READS: Final = sys.platform != "win32"
_SMALL_ROOM: Final = 16 * 1024
_SCRATCH_SIZE: Final = 256 * 1024
# One scratch buffer per thread, shared by its connections: a loop reads into it and
# hands the bytes to the protocol in one go (get_buffer, recv_into, buffer_updated),
# so no other connection's read comes in between.
_scratch_buffers = threading.local()
# Frames up to this size are joined into one write (a copy, cheaper than a second
# system call and wake-up for the header); PACK_LIMIT where writes have a size limit.
_JOIN_LIMIT: Final = PACK_LIMIT if MAX_WRITE is not None else 256 * 1024


class _StreamProtocol(asyncio.BufferedProtocol):
    """Feeds the connection core as bytes arrive and wakes the calls waiting on it."""

    def __init__(self, core: ConnectionCore) -> None:
        self.core = core
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.loop = asyncio.get_running_loop()
        self.lost_waiter: asyncio.Future[None] = self.loop.create_future()
        self.recv_waiters: list[asyncio.Future[None]] = []
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._write_paused = False
        self._read_paused = False
        # Frames handed to the transport: a send waiting for the buffer to drain
        # tells from it whether its frame is still the buffer's tail.
        self.writes = 0
        self._scratch: memoryview | None = None  # the thread's scratch buffer, see get_buffer
        self._scratch_read = False
        # Not where a read is a message (framing="raw"): its room is the size limit.
        self._scratch_reads = _SCRATCH_READS and not core.codec.message_based

    # -- asyncio callbacks ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No isinstance check: uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        view = self.core.get_buffer()
        if len(view) >= _SMALL_ROOM or not self._scratch_reads:
            self._scratch_read = False
            return view
        # Little room left (the tail of a large payload): a read that small would cost
        # a whole loop iteration for a few bytes, so read up to _SCRATCH_SIZE bytes
        # (the tail and the frames behind it) here and copy them in.
        self._scratch_read = True
        scratch: memoryview | None = getattr(_scratch_buffers, "view", None)
        if scratch is None:
            scratch = _scratch_buffers.view = memoryview(bytearray(_SCRATCH_SIZE))
        self._scratch = scratch
        return scratch

    def buffer_updated(self, nbytes: int) -> None:
        # Each read is one chunk (for framing="raw"), whichever buffer it went to.
        if self._scratch_read and self._scratch is not None:
            self.core.receive_data(self._scratch[:nbytes])
        else:
            self.core.buffer_updated(nbytes)
        if self.recv_waiters and self.core.state is State.OPEN:
            # A call is waiting: it takes its message straight from the decoder when it
            # runs (on a selector loop, before the next read: its wake-up is queued first).
            # Undecoded bytes stay bounded: the waiters are cleared here, so the next read
            # decodes within the budget unless a call found nothing to take since.
            _wake(self.recv_waiters)
        else:
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
        _wake(self.recv_waiters)
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
        _wake(self.recv_waiters)

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
        if self.recv_waiters:
            _wake(self.recv_waiters)

    def took(self) -> None:
        """A call took a message from the queue: read on if the budget allows."""
        if self._read_paused and self.core.state is State.OPEN and self.core.wants_data():
            self._read_paused = False
            self._decode()  # bytes already read may complete more messages
            if not self._read_paused and self.transport is not None and not self.lost:
                self.transport.resume_reading()

    async def wait_readable(self) -> None:
        """Wait until something new may be decodable (cancelling consumes nothing)."""
        waiter = self.loop.create_future()
        self.recv_waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self.recv_waiters:
                self.recv_waiters.remove(waiter)

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
        self.reconnects = 0
        """How many times this connection reconnected (``reconnect=True``)."""
        self._closed_here = False
        # request(): one at a time, and the replies owed to callers that gave up.
        self._request_lock = asyncio.Lock()
        self._owed = OwedReplies()
        # reconnect=True: one reconnect at a time; the generation tells a task whose
        # call failed on an older transport that another task already reconnected.
        self._reconnect_lock = asyncio.Lock()
        self._generation = 0
        self._reconnecting: Final = settings.reconnect

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

    def _after_error(self, exc: BaseException) -> None:
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
            error = PipeTimeoutError(f"{what} timed out after {seconds(timeout)}", timeout=timeout)
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
        self._protocol.writes += 1
        write = self._transport.write
        if len(parts) == 1:  # the common case: a small frame, already one bytes object
            part = parts[0]
            if type(part) is bytes and (MAX_WRITE is None or len(part) <= MAX_WRITE):
                write(part)
                return
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
        if sum(view.nbytes for view in views) <= _JOIN_LIMIT:  # one write, as send_many packs
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
            ConnectionClosedError: the connection is closed (here, by ``abort()``
                or an ``aclose()`` whose flush timed out, or by the peer), or the
                peer went away while this message waited in the buffer (with
                ``reconnect=True`` it is sent again on the new connection instead).
        """
        deadline = _deadline(timeout)  # a bad timeout fails before anything is written
        if not self._reconnecting:  # the hot path: _write_now and _write, inline
            parts = self._core.encode(data, crc)
            transport = self._transport
            protocol = self._protocol
            if protocol.lost or transport.is_closing():
                self._peer_gone()
                self._core.check_sending()
            if len(parts) == 1 and type(part := parts[0]) is bytes and MAX_WRITE is None:
                transport.write(part)
                protocol.writes += 1
            else:
                self._write(parts)
            if transport.is_closing():
                self._check_written()
            if protocol._write_paused and not protocol.lost:  # else nothing to wait for
                await self._wait(self._drained(protocol, protocol.writes), deadline, "send")
            return
        generation = self._generation
        write = self._writer(lambda: (self._core.encode(data, crc),))
        try:
            await self._wait(write(), deadline, "send")
            return
        except ConnectionClosedError as exc:
            if not self._may_reconnect(exc):
                raise
        # The message did not go out: send it again once reconnected (at-least-once).
        await self._wait(self._retrying(write, deadline, generation), deadline, "send")

    def _write_now(self, writes: Iterable[Sequence[Buffer]]) -> None:
        """Hand whole frames to the transport (no await: frames never interleave).

        Callers encode right before (``core.encode``/``encode_many`` check the
        core's state), so only the transport is checked here."""
        if self._protocol.lost or self._transport.is_closing():
            self._peer_gone()
            self._core.check_sending()
        for parts in writes:
            self._write(parts)
        self._check_written()

    async def _drained(self, protocol: _StreamProtocol, mine: int) -> None:
        """Wait until the transport's buffer drained below its low-water mark.

        ``mine``: ``protocol.writes`` just after this call's frame was written.
        Raises ConnectionClosedError if the connection was lost first while
        that frame was still the buffer's tail (the transport sends in order):
        it never fully left this process, as when the sync send fails in its OS
        write. With a frame written after it (another task's), whether it went
        out is unknown: with ``reconnect=True`` it raises too, so the caller
        sends it again (at-least-once); without, the send returns, as it would
        have had the loss come a moment later (no error for a delivered message).
        """
        await protocol.drain()
        if (
            protocol.lost
            and protocol._write_paused
            and (protocol.writes == mine or self._reconnecting)
        ):
            core = protocol.core  # this connection's, or one a reconnect replaced
            core.send_failed(ConnectionClosedError("the peer closed the connection"))
            core.check_sending()

    def _writer(
        self, encode: Callable[[], Iterable[Sequence[Buffer]]]
    ) -> Callable[[], Awaitable[None]]:
        """One reconnectable attempt: write the frames, wait for them to leave
        this process (the caller's ``_wait`` bounds the time)."""

        async def write() -> None:
            self._write_now(encode())
            protocol = self._protocol
            if protocol._write_paused and not protocol.lost:
                await self._drained(protocol, protocol.writes)

        return write

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
        if not self._settings.reconnect:  # no await unless the transport's buffer is full
            writes, count = self._core.encode_many(messages, crc)
            self._write_now(writes)
        else:
            messages = list(messages)  # sent again whole after a reconnect
            counted: list[int] = []

            def encode() -> list[list[Buffer]]:
                writes, count = self._core.encode_many(messages, crc)
                counted[:] = [count]
                return writes

            await self._wait(self._retrying(self._writer(encode), deadline), deadline, "send")
            return counted[0]
        protocol = self._protocol
        if protocol._write_paused and not protocol.lost:
            await self._wait(self._drained(protocol, protocol.writes), deadline, "send")
        return count

    async def request(
        self, message: Payload, *, timeout: float | None = None, crc: bool | None = None
    ) -> bytes | str:
        """Send ``message`` and receive its reply, as one operation.

        The asyncio twin of :meth:`npipes.Connection.request`: for a peer that
        answers every message with exactly one reply, in order. Tasks sharing a
        connection each get their own reply; a request cancelled or timed out
        after it went out leaves its late reply to be skipped by the next one.
        With ``reconnect=True``, a request whose reply was lost with the peer is
        sent again on the new connection (at-least-once).

        Raises:
            RemoteError: the peer's respond function raised; the connection stays usable.
            PipeTimeoutError: no reply within ``timeout`` (the whole call).
            As :meth:`send` and :meth:`recv` otherwise.
        """
        deadline = _deadline(timeout)
        return await self._wait(self._request(message, deadline, crc), deadline, "request")

    async def _request(self, message: Payload, deadline: Deadline, crc: bool | None) -> bytes | str:
        async with self._request_lock:
            return await self._retrying(lambda: self._request_once(message, crc), deadline)

    async def _request_once(self, message: Payload, crc: bool | None) -> bytes | str:
        self._write_now((self._core.encode(message, crc),))
        owed = self._owed
        owed.sent()
        await self._protocol.drain()
        while True:
            stale = owed.stale()
            try:
                # A stale reply needs no CRC (one that is present is still checked).
                frame = await self._next_frame(False if stale else crc)
            except BaseException as exc:
                if not reply_consumed(exc):
                    raise
                owed.taken()  # an error in that reply's place used it up
                if stale and self._core.state is State.OPEN:
                    continue
                raise
            owed.taken()
            if not stale:
                return check_reply(frame.message)
            # A stale reply (an error reply included) is dropped unread.

    # -- receiving ----------------------------------------------------------

    def _take_frame(self, crc: bool | None) -> Frame | None:
        """The next frame if one is decoded (or decodable) now, else None; no await."""
        protocol = self._protocol
        try:
            frame = self._core.next_frame(crc)
        except NpipesError as exc:
            self._after_error(exc)
            protocol.took()  # a dropped message frees its share of the budget too
            raise
        if frame is not None and protocol._read_paused:
            protocol.took()
        return frame

    async def _next_frame(
        self, crc: bool | None, *, resume: bool = True, wait_first: bool = False
    ) -> Frame:
        """The next frame; ``resume=False`` leaves reading paused where the budget paused
        it (the handshake: what follows its last message is decoded under normal limits).
        ``wait_first``: the caller just found nothing ready (``_take_frame``)."""
        core = self._core
        protocol = self._protocol
        if wait_first:  # protocol.wait_readable(), inline: one coroutine less per wait
            waiter = protocol.loop.create_future()
            waiters = protocol.recv_waiters
            waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in waiters:
                    waiters.remove(waiter)
        while True:
            try:
                frame = core.next_frame(crc)
            except NpipesError as exc:
                self._after_error(exc)
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
        if not self._reconnecting:
            # A message already decoded is taken without an await (nothing to cancel
            # or time out: a timeout only fires once the call waits).
            frame = self._take_frame(crc)
            if frame is None:
                waiting = self._next_frame(crc, wait_first=True)
                if timeout is None:  # no timeout context on the hot path
                    frame = await waiting
                else:
                    frame = await self._wait(waiting, deadline, "recv")
            return frame.message
        frame = await self._wait(
            self._retrying(lambda: self._next_frame(crc), deadline), deadline, "recv"
        )
        return frame.message

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
        if not self._settings.reconnect:
            size = self._take_into(view, crc)  # a message already here: no await
            if size is not None:
                return size
        return await self._wait(
            self._retrying(lambda: self._next_into(view, crc), deadline), deadline, "recv"
        )

    def _take_into(self, view: memoryview, crc: bool | None) -> int | None:
        """Copy the next message into ``view`` if it is here; its size, or None (no await)."""
        protocol = self._protocol
        try:
            size = self._core.next_message_into(view, crc, direct=False)
        except NpipesError as exc:
            self._after_error(exc)
            protocol.took()  # a dropped message frees its share of the budget too
            raise
        if size is not None:
            protocol.took()
        return size

    async def _next_into(self, view: memoryview, crc: bool | None) -> int:
        protocol = self._protocol
        while True:
            size = self._take_into(view, crc)
            if size is not None:
                return size
            await protocol.wait_readable()

    # -- reconnecting (reconnect=True; rules in _reconnect) ----------------------

    async def _retrying(
        self,
        call: Callable[[], Awaitable[_T]],
        deadline: Deadline,
        generation: int | None = None,
    ) -> _T:
        """Await ``call()``; with ``reconnect=True``, reconnect and await it again while
        it fails because the peer is gone. ``generation``: a first attempt already
        failed on that connection (reconnect before calling)."""
        backoff = _reconnect.Backoff()
        if generation is not None:
            backoff.pause()  # the first reconnect is at once
            await self._reconnect(deadline, generation)
        while True:
            generation = self._generation
            try:
                return await call()
            except ConnectionClosedError as exc:
                if not self._may_reconnect(exc):
                    raise
                last = exc
            pause, left = backoff.pause(), deadline.remaining()
            if pause:
                await asyncio.sleep(pause if left is None else max(0.0, min(pause, left)))
            late = _reconnect.out_of_time(deadline, last)
            if late is not None:
                raise self._core_error(late) from last
            await self._reconnect(deadline, generation)

    def _may_reconnect(self, exc: BaseException) -> bool:
        return _reconnect.may_reconnect(
            self._settings.reconnect, self._closed_here, self._core, exc
        )

    async def _reconnect(self, deadline: Deadline, generation: int) -> None:
        """Connect again and swap the new transport in, unless another task already
        did since ``generation``. The caller's timeout bounds the whole wait."""
        async with self._reconnect_lock:
            if self._generation != generation:
                return  # another task reconnected since this call's attempt
            fresh = await self._connect_again(deadline)
            # No await from here on: the swap is atomic for the other tasks.
            old_transport, old_protocol, old_core = self._transport, self._protocol, self._core
            self._transport, self._protocol = fresh._transport, fresh._protocol
            self._core, self._peer = fresh._core, fresh._peer
            self._owed.reset()
            self._generation += 1
            self.reconnects += 1
            old_core.close("the connection was replaced by a reconnect")
            old_protocol.closed_locally()
            old_transport.abort()  # wakes calls still waiting on it: they retry
            if self._closed_here:  # aclose() from another task while reconnecting
                self.abort()
                raise self._core.closed_error()
            log.info(
                "reconnected to %r (%s); reconnect number %d",
                self.name,
                self.address,
                self.reconnects,
            )

    async def _connect_again(self, deadline: Deadline) -> Connection:
        """A new connection to the same listener, tried with backoff until ``deadline``."""
        last: BaseException | None = None
        for delay in _reconnect.delays():
            if self._closed_here:
                raise self._core.closed_error()
            try:
                return await _open(_reconnect.attempt_settings(self._settings), deadline)
            except _reconnect.RETRY_ERRORS as exc:
                last = exc
            except PipeTimeoutError as exc:
                raise self._core_error(_reconnect.gave_up(deadline.timeout, last)) from exc
            left = deadline.remaining()
            if left is not None and left <= 0:
                raise self._core_error(_reconnect.gave_up(deadline.timeout, last)) from last
            await asyncio.sleep(delay if left is None else min(delay, left))
        raise AssertionError("unreachable")  # pragma: no cover - delays() never ends

    # -- objects: JSON text and pickles ----------------------------------------

    @property
    def allow_pickle(self) -> bool:
        """Whether :meth:`recv_pyobj` may unpickle (``allow_pickle=True`` at connect/listen)."""
        return self._settings.allow_pickle

    async def send_json(
        self, obj: object, *, timeout: float | None = None, crc: bool | None = None
    ) -> None:
        """Send ``obj`` as one JSON text message (UTF-8; any language can read it).

        Raises:
            TypeError: ``obj`` holds something JSON cannot express; nothing sent.
            As :meth:`send` otherwise.
        """
        await self.send(encode_json(obj), timeout=timeout, crc=crc)

    async def recv_json(self, timeout: float | None = None, *, crc: bool | None = None) -> Any:
        """Receive one message and return its JSON value (text, or UTF-8 bytes).

        Raises:
            ProtocolError: the message was not JSON (that message only; the
                connection stays usable). As :meth:`recv` otherwise.
        """
        return decode_json(await self.recv(timeout, crc=crc))

    async def send_pyobj(
        self,
        obj: object,
        *,
        timeout: float | None = None,
        crc: bool | None = None,
        protocol: int | None = None,
    ) -> None:
        """Send ``obj`` pickled, as one binary message (``protocol``: the pickle
        protocol, default the highest). The receiver needs ``allow_pickle=True``.

        Raises:
            TypeError: ``obj`` cannot be pickled; nothing sent. As :meth:`send` otherwise.
        """
        await self.send(encode_pickle(obj, protocol), timeout=timeout, crc=crc)

    async def recv_pyobj(self, timeout: float | None = None, *, crc: bool | None = None) -> Any:
        """Receive one pickled message and return the object.

        Unpickling runs code the sender chose, so this works only on a connection
        opened with ``allow_pickle=True``; use it with a peer you trust (your own
        user, ``allowed_uids``, an ``authkey``).

        Raises:
            PickleNotAllowedError: no ``allow_pickle=True``; nothing was received.
            ProtocolError: the message was not a pickle (that message only).
            As :meth:`recv` otherwise.
        """
        check_pickle_allowed(self._settings.allow_pickle)
        return decode_pickle(await self.recv(timeout, crc=crc))

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
        if not self._closed_here:
            log.debug("closed a connection on %s", self.address)
        self._closed_here = True
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
        self._closed_here = True
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
            subscription=settings.subscription,
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
                f"no client connected to {self.address} within {seconds(timeout)}",
                timeout=timeout,
                name=self.name,
                address=self.address,
            ) from exc
        except NpipesError as exc:
            self._settings.annotate(exc, self.address)
            raise
        log.debug("accepted a client on %s (pid %s)", self.address, peer.pid)
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
    return await _open(_check_framing(connect_settings(name, options)), Deadline(timeout))


async def _open(settings: Settings, deadline: Deadline) -> Connection:
    """Connect with checked ``settings`` (also how a reconnect connects again)."""
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
    log.debug("connected to %s (pid %s)", settings.address.path, peer.pid)
    if settings.authkey is not None:
        await conn._handshake(connect_side(settings.authkey), deadline.remaining())
    return conn


def _deadline(timeout: float | None) -> Deadline:
    """The deadline of a call (checks ``timeout``: TypeError/ValueError for a bad one)."""
    return NO_DEADLINE if timeout is None else Deadline(timeout)


from ._aio_pubsub import Publisher, publish, subscribe  # noqa: E402 - it imports this module
from ._aio_server import Server, serve  # noqa: E402 - it imports this module

__all__ += ["Publisher", "publish", "subscribe"]
