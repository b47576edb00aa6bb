"""The sync front end: ``connect``, ``listen``, :class:`Connection`, :class:`Listener`.

A thin driver: it moves bytes between a backend stream and the sans-I/O
connection core (``_protocol``) and waits. What the bytes mean, and what an
error, timeout or interruption does to the connection, is decided by the core.
One lock per direction: one thread may send while another receives, and
concurrent sends never interleave frames; a call's timeout also bounds its
wait for that lock.
"""

from __future__ import annotations

import io
import logging
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar, Unpack, final

from . import _backend, _reconnect
from ._control import OwedReplies, check_reply, reply_consumed
from ._deadline import NO_DEADLINE, Deadline, seconds
from ._frame import DEFAULT_MAX_MESSAGE_SIZE
from ._objects import check_pickle_allowed, decode_json, decode_pickle, encode_json, encode_pickle
from ._options import (
    ConnectOptions,
    ListenOptions,
    Settings,
    connect_settings,
    listen_settings,
)
from ._protocol import HANDSHAKE_TIMEOUT, ConnectionCore, Exchange, State, accept_side, connect_side
from .errors import ConnectionClosedError, NpipesError, PipeTimeoutError

if TYPE_CHECKING:
    from ._backend import PeerInfo, RawListener, RawStream
    from ._frame import Frame
    from ._types import Buffer, Payload

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "Connection", "Listener", "connect", "listen"]

log = logging.getLogger("npipes")

_T = TypeVar("_T")


def _lock_timeout(what: str, deadline: Deadline) -> PipeTimeoutError:
    return PipeTimeoutError(
        f"{what} timed out after {seconds(deadline.timeout)} waiting for another thread's {what}",
        timeout=deadline.timeout,
    )


def _acquire(lock: threading.Lock, deadline: Deadline) -> bool:
    """Take ``lock`` within ``deadline``; False once it passed.

    A wait longer than ``threading.TIMEOUT_MAX`` (about 49.7 days on Windows)
    raises OverflowError, so a long deadline is waited for in slices.
    """
    if deadline is NO_DEADLINE:
        return lock.acquire()
    while True:
        left = deadline.remaining_lock()
        if left < 0:
            return lock.acquire()
        if left <= threading.TIMEOUT_MAX:
            return lock.acquire(True, left)
        if lock.acquire(True, threading.TIMEOUT_MAX):
            return True


def writable_view(buffer: Buffer) -> memoryview:
    """``buffer`` as a writable byte view, or a TypeError saying what is accepted."""
    try:
        view = memoryview(buffer)
    except TypeError:
        raise TypeError(
            f"recv_into needs a writable bytes-like object (bytearray, memoryview,"
            f" array, numpy array), not {type(buffer).__name__}"
        ) from None
    if view.readonly:
        raise TypeError("recv_into needs a writable buffer (bytes is read-only; use bytearray)")
    if not view.c_contiguous:
        raise TypeError(
            "recv_into needs a C-contiguous buffer; pass numpy.ascontiguousarray(x) or a bytearray"
        )
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


@final
class Connection:
    """A message connection to one peer. Create it with :func:`connect` or
    :meth:`Listener.accept`.

    Messages keep their type: ``send(str)`` arrives as ``str``, bytes-like as
    ``bytes``. A connection is a context manager; ``close()`` is idempotent.
    """

    def __init__(
        self,
        stream: RawStream,
        settings: Settings,
        *,
        address: str | None = None,
        authkey_side: Callable[[bytes], Exchange] | None = None,
    ) -> None:
        self._stream = stream
        self._settings = settings
        self._closed_here = False
        self.name: Final = settings.name
        """The name given to connect/listen."""
        self.address: Final = address or settings.address.path
        """The OS address (socket path or ``\\\\.\\pipe\\NAME``)."""
        self.crc: Final = settings.crc
        """Whether this side sends a CRC-32 with every message and requires one."""
        self.max_message_size: Final = settings.max_message_size
        """Largest message this side sends or accepts, in bytes (None: no limit)."""
        self.framing: Final = settings.codec.name
        """The wire format's name (``"npipes"``, ``"multiprocessing"``, ...)."""
        self._core = ConnectionCore(
            settings.codec,
            crc=settings.crc,
            max_message_size=settings.max_message_size,
            message_mode=stream.message_mode,
            name=settings.name,
            address=self.address,
            authenticating=settings.authkey is not None,
            subscription=settings.subscription,
        )
        self._authkey_side = authkey_side
        self._auto_reconnect: Final = settings.reconnect
        self.reconnects = 0
        """How many times this connection reconnected (``reconnect=True``)."""
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        # request(): one at a time, and the replies owed to callers that gave up.
        self._request_lock = threading.Lock()
        self._owed = OwedReplies()
        # reconnect=True: one reconnect at a time; the generation tells a thread whose
        # call failed on an older stream that another thread already reconnected.
        self._reconnect_lock = threading.Lock()
        self._generation = 0
        self._closing = threading.Event()  # close() ends a reconnect's backoff wait

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<npipes.Connection {self.address!r} {state}>"

    @property
    def peer(self) -> PeerInfo:
        """The other process: ``pid`` and, on POSIX, ``uid``/``gid``; ``sid`` on Windows."""
        return self._stream.peer

    @property
    def closed(self) -> bool:
        """True once closed: by :meth:`close`, by the peer (once its end was
        received), or after an error that lost framing."""
        return self._core.closed

    # -- error handling: the core decides, the driver closes the stream ------------

    def _io_failed(self, exc: BaseException, rule: Callable[[BaseException], None]) -> None:
        """After an exception out of the stream: let the core apply ``rule`` and close
        the stream if the core says so. Raises a replacement error if the caller should
        see another one; the caller re-raises ``exc`` otherwise."""
        core = self._core
        rule(exc)
        if core.state is not State.OPEN:
            self._stream.close()
        if (
            self._closed_here
            and type(exc) is not ConnectionClosedError
            and isinstance(exc, Exception)
        ):
            # close() from another thread ended this call: say so, whatever the OS said.
            raise core.closed_error() from exc

    def _decoded_error(self, exc: BaseException) -> None:
        if self._core.state is not State.OPEN:
            self._stream.close()

    # -- sending ------------------------------------------------------------

    def send(self, data: Payload, *, timeout: float | None = None, crc: bool | None = None) -> None:
        """Send one message.

        Args:
            data: ``str`` (sent as UTF-8 text, received as ``str``) or any
                C-contiguous bytes-like object (received as ``bytes``). The
                payload is not copied, and not kept after the call.
            timeout: seconds to wait for room in the pipe (and for another
                thread's send), or None to wait as long as it takes.
            crc: add a CRC-32 to this message; None uses the connection's setting.
        Raises:
            TypeError: ``data`` is not ``str`` or bytes-like; nothing sent.
            MessageTooLargeError: above this side's ``max_message_size``; nothing sent.
            PipeTimeoutError: the deadline passed. If part of the frame went out
                (``partial``) the connection is closed; otherwise it is usable.
            ConnectionClosedError: the peer is gone, or this connection is closed.
        """
        deadline = NO_DEADLINE if timeout is None else Deadline(timeout)
        if not self._auto_reconnect:
            self._write_one(self._core.encode(data, crc), deadline)
            return
        # A send that did not complete is sent again once reconnected (at-least-once).
        self._retrying(lambda: self._write((self._core.encode(data, crc),), deadline), deadline)

    def send_many(
        self,
        messages: Iterable[Payload],
        *,
        timeout: float | None = None,
        crc: bool | None = None,
    ) -> int:
        """Send several messages at once, with as few system calls as possible.

        Small frames are packed together into one write (large payloads still
        go out without a copy), so a burst of small messages costs about one
        system call instead of one each. The peer receives them one by one, in
        order, exactly as if sent with :meth:`send`.

        Returns:
            The number of messages sent.
        Raises:
            As :meth:`send`. Every message is checked before anything is
            written; a timeout after some of the batch went out closes the
            connection (``partial``).
        """
        deadline = NO_DEADLINE if timeout is None else Deadline(timeout)
        if self._settings.reconnect:
            messages = list(messages)  # sent again whole after a reconnect

        def send_batch() -> int:
            writes, count = self._core.encode_many(messages, crc)
            if writes:
                self._write(writes, deadline)
            return count

        if not self._auto_reconnect:
            return send_batch()
        return self._retrying(send_batch, deadline)

    def request(
        self, message: Payload, *, timeout: float | None = None, crc: bool | None = None
    ) -> bytes | str:
        """Send ``message`` and receive its reply, as one operation.

        For a peer that answers every message with exactly one reply, in order
        (``npipes.serve(..., respond=func)``, an echo server). Threads sharing a
        connection may call it at once: requests take turns and each caller gets
        its own reply. A caller that gives up after its request went out (a
        timeout, Ctrl+C) leaves the connection consistent: its reply, when it
        comes, is skipped by the next request instead of being handed to it. Do
        not mix ``request`` with ``recv`` on the same connection.

        With ``reconnect=True``, a request whose reply did not arrive because the
        peer went away is sent again on the new connection (at-least-once: the
        peer may have handled it before it died).

        Args:
            message: as for :meth:`send`.
            timeout: seconds for the whole call (waiting for other threads'
                requests, sending, reconnecting, the reply), or None.
            crc: send the request with a CRC-32 and require one on the reply;
                None uses the connection's setting.
        Returns:
            The reply: ``str`` for text, ``bytes`` for binary.
        Raises:
            RemoteError: the peer's respond function raised; the connection stays usable.
            PipeTimeoutError: no reply within ``timeout``. If the request went out,
                its late reply is skipped by the next request.
            ChecksumError: the reply's CRC-32 was wrong, or missing with ``crc=True``
                (that reply is used up; the connection stays usable).
            As :meth:`send` and :meth:`recv` otherwise.
        """
        deadline = NO_DEADLINE if timeout is None else Deadline(timeout)
        lock = self._request_lock
        if not _acquire(lock, deadline):
            raise self._core_annotated(_lock_timeout("request", deadline))
        try:
            return self._retrying(lambda: self._request_once(message, deadline, crc), deadline)
        finally:
            lock.release()

    def _request_once(self, message: Payload, deadline: Deadline, crc: bool | None) -> bytes | str:
        owed = self._owed
        self._write((self._core.encode(message, crc),), deadline, owed)  # counts it as sent
        lock = self._recv_lock
        if not _acquire(lock, deadline):
            raise self._core_annotated(_lock_timeout("recv", deadline))
        try:
            while True:
                stale = owed.stale()
                try:
                    # A stale reply needs no CRC (one that is present is still checked).
                    reply = self._receive(deadline, False if stale else crc)
                except BaseException as exc:
                    if not reply_consumed(exc):
                        raise
                    owed.taken()  # an error in that reply's place used it up
                    if stale and self._core.state is State.OPEN:
                        continue
                    raise
                owed.taken()
                if not stale:
                    return check_reply(reply)
                # A stale reply (an error reply included) is dropped unread.
        finally:
            lock.release()

    def _write_one(self, buffers: Sequence[Buffer], deadline: Deadline) -> None:
        """Write one frame: :meth:`_write`'s rules, without its batch bookkeeping (the hot path)."""
        lock = self._send_lock
        if deadline is NO_DEADLINE:
            lock.acquire()
        elif not _acquire(lock, deadline):
            raise self._core_annotated(_lock_timeout("send", deadline))
        try:
            core = self._core
            if core.state is not State.OPEN or core.send_ended or core.subscription:
                core.check_sending()
            try:
                self._stream.send(buffers, deadline)
            except BaseException as exc:
                self._io_failed(exc, core.send_failed)
                raise
        finally:
            lock.release()

    def _write(
        self,
        writes: Iterable[Sequence[Buffer]],
        deadline: Deadline,
        owed: OwedReplies | None = None,
    ) -> None:
        """Write the frames in ``writes``; each that went out whole counts in ``owed`` (request)."""
        lock = self._send_lock
        if not _acquire(lock, deadline):
            raise self._core_annotated(_lock_timeout("send", deadline))
        try:
            core = self._core
            core.check_sending()
            send = self._stream.send
            started = False
            for buffers in writes:
                try:
                    send(buffers, deadline)
                    if owed is not None:
                        # No call in between: a Ctrl+C lands before (the send counts as
                        # interrupted: the connection closes) or after it is counted.
                        owed.owed += 1
                except BaseException as exc:
                    if started and isinstance(exc, PipeTimeoutError):
                        exc.partial = True  # earlier messages of the batch went out
                    self._io_failed(exc, core.send_failed)
                    raise
                started = True
        finally:
            lock.release()

    def _core_annotated(self, exc: NpipesError) -> NpipesError:
        self._core.annotate(exc)
        return exc

    # -- receiving ----------------------------------------------------------

    def recv(self, timeout: float | None = None, *, crc: bool | None = None) -> bytes | str:
        """Receive the next message: ``str`` for text, ``bytes`` for binary.

        Args:
            timeout: seconds until the whole message must have arrived, or None.
            crc: require a CRC-32 on this message; None uses the connection's
                setting. A CRC that is present is always verified.
        Raises:
            PipeTimeoutError: the deadline passed. If part of a message had been
                read, the connection is closed (``partial``); otherwise usable.
            ChecksumError: that message's CRC-32 was wrong or missing (with
                ``crc=True``); the connection stays usable.
            ProtocolError: framing broke (connection closed), or a text message
                was not UTF-8 (that message only).
            MessageTooLargeError: the message is above ``max_message_size``;
                connection closed.
            ConnectionClosedError: the peer closed the connection;
                :class:`IncompleteMessageError` if it did so mid-message.
        """
        if timeout is None and not self._auto_reconnect:  # the hot path
            lock = self._recv_lock
            lock.acquire()
            try:
                return self._receive(NO_DEADLINE, crc)
            finally:
                lock.release()
        deadline = NO_DEADLINE if timeout is None else Deadline(timeout)
        if not self._auto_reconnect:
            return self._recv_locked(deadline, crc)
        return self._retrying(lambda: self._recv_locked(deadline, crc), deadline)

    def _recv_locked(self, deadline: Deadline, crc: bool | None) -> bytes | str:
        lock = self._recv_lock
        if not _acquire(lock, deadline):
            raise self._core_annotated(_lock_timeout("recv", deadline))
        try:
            return self._receive(deadline, crc)
        finally:
            lock.release()

    def _next_frame(self, crc: bool | None) -> Frame | None:
        """The core's general path: the next frame, None if more bytes are needed, or
        its error (closing the stream if the error broke the connection)."""
        try:
            return self._core.next_frame(crc)
        except NpipesError as exc:
            self._decoded_error(exc)
            raise

    def _receive_frame(self, deadline: Deadline, crc: bool | None) -> Frame:
        """The next message as a Frame (its CRC flag too: ``serve(respond=)`` replies alike)."""
        while (frame := self._next_frame(crc)) is None:
            self._read_once(deadline)
        return frame

    def _receive(self, deadline: Deadline, crc: bool | None) -> bytes | str:
        """The next message: the core's fast path for whole simple frames, its general
        one (errors, large or partial frames) otherwise, reading as needed."""
        core = self._core
        message = core.take_message(crc)
        while message is None:
            frame = self._next_frame(crc)
            if frame is not None:
                return frame.message
            self._read_once(deadline)
            message = core.take_message(crc)
        return message

    def _read_once(self, deadline: Deadline) -> None:
        """One read from the stream into the core; errors go through the core's rule."""
        core = self._core
        stream = self._stream
        try:
            buffer = core.get_buffer()
            if core.state is not State.OPEN:
                return  # the decoder refused room: its error is queued, raised next
            count = stream.recv_into(buffer, deadline)
        except BaseException as exc:
            self._io_failed(exc, core.recv_failed)
            raise
        core.buffer_updated(count, stream.message_end)

    def recv_many(
        self, max_messages: int = 1024, timeout: float | None = None, *, crc: bool | None = None
    ) -> list[bytes | str]:
        """Receive at least one message, plus every further one already received.

        The batching twin of :meth:`send_many`: one call (and usually one system
        call) returns a burst of small messages. Errors as :meth:`recv`; an error
        in a later message of the burst is raised by the next call instead, so
        the messages before it are not lost.

        Args:
            max_messages: return at most this many.
            timeout: seconds to wait for the first message, or None.
        """
        if isinstance(max_messages, bool) or not isinstance(max_messages, int):
            raise TypeError(f"max_messages must be an int, not {type(max_messages).__name__}")
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        deadline = NO_DEADLINE if timeout is None else Deadline(timeout)

        def receive() -> list[bytes | str]:
            lock = self._recv_lock
            if not _acquire(lock, deadline):
                raise self._core_annotated(_lock_timeout("recv", deadline))
            try:
                messages = [self._receive(deadline, crc)]
                if max_messages > 1:
                    messages += self._core.take_ready(max_messages - 1, crc)
                return messages
            finally:
                lock.release()

        if not self._auto_reconnect:
            return receive()
        return self._retrying(receive, deadline)

    def recv_into(
        self, buffer: Buffer, *, timeout: float | None = None, crc: bool | None = None
    ) -> int:
        """Receive the next message's payload into ``buffer``; return its size.

        The payload is read straight into ``buffer`` (text messages as their
        UTF-8 bytes). ``buffer`` is only used during the call. Errors as
        :meth:`recv`, plus:

        Raises:
            TypeError: ``buffer`` is not a writable, C-contiguous bytes-like object.
            BufferTooSmallError: the message is longer than ``buffer``; nothing
                was consumed, so ``recv()`` can still take it.
        """
        view = writable_view(buffer)
        if timeout is None and not self._auto_reconnect:  # the hot path
            lock = self._recv_lock
            lock.acquire()
            try:
                size = self._core.take_message_into(view, crc)
            finally:
                lock.release()
            if size is not None:
                return size
        deadline = NO_DEADLINE if timeout is None else Deadline(timeout)
        if not self._auto_reconnect:
            return self._recv_into_locked(view, deadline, crc)
        return self._retrying(lambda: self._recv_into_locked(view, deadline, crc), deadline)

    def _recv_into_locked(self, view: memoryview, deadline: Deadline, crc: bool | None) -> int:
        lock = self._recv_lock
        if not _acquire(lock, deadline):
            raise self._core_annotated(_lock_timeout("recv", deadline))
        core = self._core
        stream = self._stream
        try:
            while True:
                try:
                    size = core.next_message_into(view, crc)
                except NpipesError as exc:
                    self._decoded_error(exc)
                    raise
                if size is not None:
                    return size
                self._read_once(deadline)
        finally:
            core.release_buffer()  # the caller's buffer is borrowed for this call only
            if core.state is not State.OPEN:
                stream.close()
            lock.release()

    # -- reconnecting (reconnect=True; rules in _reconnect) ----------------------

    def _retrying(self, call: Callable[[], _T], deadline: Deadline) -> _T:
        """Run ``call``; with ``reconnect=True``, reconnect and run it again while
        it fails because the peer is gone (within ``deadline``)."""
        backoff = _reconnect.Backoff()
        while True:
            generation = self._generation
            try:
                return call()
            except ConnectionClosedError as exc:
                if not self._may_reconnect(exc):
                    raise
                last = exc
            pause, left = backoff.pause(), deadline.remaining()
            if pause:
                self._closing.wait(pause if left is None else max(0.0, min(pause, left)))
            late = _reconnect.out_of_time(deadline, last)
            if late is not None:
                raise self._core_annotated(late) from last
            self._reconnect(deadline, generation)

    def _may_reconnect(self, exc: BaseException) -> bool:
        return _reconnect.may_reconnect(
            self._settings.reconnect, self._closed_here, self._core, exc
        )

    def _reconnect(self, deadline: Deadline, generation: int) -> None:
        """Connect again and swap the new stream in, unless another thread already did
        since ``generation``. Called with no direction lock held (it takes both)."""
        if not _acquire(self._reconnect_lock, deadline):
            raise self._core_annotated(_lock_timeout("reconnect", deadline))
        try:
            if self._generation != generation:
                return  # another thread reconnected since this call's attempt
            fresh = self._connect_again(deadline)
            try:
                if not _acquire(self._send_lock, deadline):
                    raise self._core_annotated(_lock_timeout("send", deadline))
                try:
                    if not _acquire(self._recv_lock, deadline):
                        raise self._core_annotated(_lock_timeout("recv", deadline))
                    try:
                        old = self._stream
                        self._stream, self._core = fresh._stream, fresh._core
                        fresh._closed_here = True  # its stream is ours now
                        self._owed.reset()
                        self._generation += 1
                        self.reconnects += 1
                    finally:
                        self._recv_lock.release()
                finally:
                    self._send_lock.release()
            except BaseException:
                if not fresh._closed_here:
                    fresh.close()
                raise
            old.close()
            if self._closed_here:  # close() from another thread while reconnecting
                self._core.close()
                self._stream.close()
                raise self._core.closed_error()
            log.info(
                "reconnected to %r (%s); reconnect number %d",
                self.name,
                self.address,
                self.reconnects,
            )
        finally:
            self._reconnect_lock.release()

    def _connect_again(self, deadline: Deadline) -> Connection:
        """A new connection to the same listener, tried with backoff until ``deadline``."""
        last: BaseException | None = None
        for delay in _reconnect.delays():
            if self._closed_here:
                raise self._core.closed_error()
            try:
                return _open(_reconnect.attempt_settings(self._settings), deadline)
            except _reconnect.RETRY_ERRORS as exc:
                last = exc
            except PipeTimeoutError as exc:
                raise self._core_annotated(_reconnect.gave_up(deadline.timeout, last)) from exc
            left = deadline.remaining()
            if left is not None and left <= 0:
                raise self._core_annotated(_reconnect.gave_up(deadline.timeout, last)) from last
            self._closing.wait(delay if left is None else min(delay, left))
        raise AssertionError("unreachable")  # pragma: no cover - delays() never ends

    # -- objects: JSON text and pickles ----------------------------------------

    @property
    def allow_pickle(self) -> bool:
        """Whether :meth:`recv_pyobj` may unpickle (``allow_pickle=True`` at connect/listen)."""
        return self._settings.allow_pickle

    def send_json(
        self, obj: object, *, timeout: float | None = None, crc: bool | None = None
    ) -> None:
        """Send ``obj`` as one JSON text message (UTF-8; any language can read it).

        Raises:
            TypeError: ``obj`` holds something JSON cannot express; nothing sent.
            As :meth:`send` otherwise.
        """
        self.send(encode_json(obj), timeout=timeout, crc=crc)

    def recv_json(self, timeout: float | None = None, *, crc: bool | None = None) -> Any:
        """Receive one message and return its JSON value (text, or UTF-8 bytes).

        Raises:
            ProtocolError: the message was not JSON (that message only; the
                connection stays usable). As :meth:`recv` otherwise.
        """
        return decode_json(self.recv(timeout, crc=crc))

    def send_pyobj(
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
        self.send(encode_pickle(obj, protocol), timeout=timeout, crc=crc)

    def recv_pyobj(self, timeout: float | None = None, *, crc: bool | None = None) -> Any:
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
        return decode_pickle(self.recv(timeout, crc=crc))

    # -- the authkey handshake --------------------------------------------------

    def _handshake(self, exchange: Exchange, timeout: float | None) -> None:
        """Run an authkey exchange with the core's limits; close on failure."""
        deadline = Deadline(HANDSHAKE_TIMEOUT if timeout is None else timeout)
        steps = self._core.handshake(exchange)
        try:
            step = next(steps)
            while True:
                if step is None:
                    step = steps.send(self.recv(timeout=deadline.remaining()))
                else:
                    self.send(step, timeout=deadline.remaining())
                    step = steps.send(None)
        except StopIteration:
            return
        except BaseException:
            steps.close()
            self.close()
            raise

    def _authenticate(self, timeout: float | None = None) -> None:
        """Run the accept side's authkey handshake, if the listener has a key (else nothing).

        ``timeout`` None means the default handshake deadline (``HANDSHAKE_TIMEOUT``).
        """
        authkey = self._settings.authkey
        if authkey is not None and self._authkey_side is not None:
            self._handshake(self._authkey_side(authkey), timeout)

    def _wait_readable(self, timeout: float | None) -> bool:
        """Wait until a whole message arrived or the connection ended; False on timeout.

        Consumes nothing (what it reads stays queued in the core). Servers use it
        for ``idle_timeout``: a first *message*, not a first byte, so a client
        dribbling a byte now and then still loses its slot.
        """
        core = self._core
        deadline = Deadline(timeout)
        lock = self._recv_lock
        if not _acquire(lock, deadline):
            return False
        try:
            while not core.message_ready():
                try:
                    self._read_once(deadline)
                except PipeTimeoutError:
                    return False
            return True
        finally:
            lock.release()

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Whether :meth:`recv` would return without blocking, waiting up to ``timeout``.

        True for a whole message (already decoded, or arrived), the end of the
        stream, an error to report, or a closed connection: the rule of
        :func:`npipes.wait`, which this calls. A partial message is not enough;
        what arrived stays queued for ``recv``. False at once while another
        thread is in ``recv`` and nothing is queued (``timeout`` 0).

        Args:
            timeout: seconds to wait, 0 (the default) to check, None to wait for ever.
        """
        from ._wait import wait  # _wait imports this module

        return bool(wait((self,), timeout))

    def fileno(self) -> int:
        """The socket's file descriptor (POSIX), for ``selectors`` and other event loops.

        Readable means bytes (or the end of the stream) arrived, not that a
        whole message did: call :meth:`poll` to know whether ``recv`` would
        block. Do not read from it yourself.

        Raises:
            io.UnsupportedOperation: on Windows (named pipes have no descriptor;
                use :func:`npipes.wait`), and for FIFO connections.
            ConnectionClosedError: the connection's stream is closed.
        """
        stream = self._stream
        if not isinstance(stream, _backend.WaitableStream):
            raise io.UnsupportedOperation(
                "a FIFO connection has no single descriptor to watch; use its reader's"
                " recv(timeout=...)"
            )
        fd = stream.fileno()
        if fd < 0:
            raise self._core.closed_error()
        return fd

    def __iter__(self) -> Iterator[bytes | str]:
        """Yield messages until the peer closes the connection cleanly."""
        while True:
            try:
                yield self.recv()
            except ConnectionClosedError as exc:
                if type(exc) is ConnectionClosedError:
                    return
                raise

    # -- lifetime -----------------------------------------------------------

    def close(self) -> None:
        """Close the connection; idempotent, safe from another thread (a blocked
        call there ends with ConnectionClosedError). A message already sent is
        still delivered."""
        if self._closed_here:
            return
        self._closed_here = True
        self._closing.set()
        self._core.close()
        self._stream.close()
        log.debug("closed a connection on %s", self.address)

    def abort(self) -> None:
        """Close at once. Sync sends finish before they return, so nothing of
        npipes' is dropped; same as :meth:`close` (the twin of the asyncio ``abort``)."""
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed_here", True):
            if not self._core.closed:  # not ended by the peer or an error either
                warnings.warn(f"unclosed {self!r}", ResourceWarning, 2)
            self.close()


@final
class Listener:
    """A named endpoint that accepts connections. Create it with :func:`listen`."""

    def __init__(self, raw: RawListener, settings: Settings) -> None:
        self._raw = raw
        self._settings = settings
        self._closed = False
        self.name: Final = settings.name
        self.crc: Final = settings.crc
        self.max_message_size: Final = settings.max_message_size

    def __repr__(self) -> str:
        state = "closed" if self._closed else "listening"
        return f"<npipes.Listener {self.address!r} {state}>"

    @property
    def address(self) -> str:
        """The OS address: the socket file path, or ``\\\\.\\pipe\\NAME`` on Windows."""
        return self._raw.address

    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        """The listening socket's file descriptor (POSIX): readable when a client
        is queued, for ``selectors`` and other event loops (then call :meth:`accept`).

        Raises:
            io.UnsupportedOperation: on Windows (use :func:`npipes.wait`).
            ConnectionClosedError: the listener is closed.
        """
        if self._closed:
            raise self._settings.annotate(ConnectionClosedError("the listener is closed"))
        raw = self._raw
        if not isinstance(raw, _backend.WaitableListener):
            raise io.UnsupportedOperation("this listener has no descriptor; use npipes.wait")
        return raw.fileno()

    def accept(self, timeout: float | None = None) -> Connection:
        """Wait for the next client and return its connection.

        With an ``authkey``, the client must pass the handshake within what is
        left of ``timeout`` (or ``HANDSHAKE_TIMEOUT`` s without one).
        ``close()`` from another thread, or Ctrl+C, ends the wait.

        Raises:
            PipeTimeoutError: no client came within ``timeout`` seconds.
            ConnectionClosedError: the listener was closed.
            AuthenticationError: the client failed the handshake (this accept only).
        """
        deadline = Deadline(timeout)
        conn = self._accept_unauthenticated(timeout)
        conn._authenticate(deadline.remaining())
        return conn

    def _accept_unauthenticated(self, timeout: float | None = None) -> Connection:
        """Accept the next client without running the authkey handshake (servers run it
        in the client's worker: :meth:`Connection._authenticate`)."""
        if self._closed:
            raise self._settings.annotate(ConnectionClosedError("the listener is closed"))
        try:
            stream = self._raw.accept(Deadline(timeout))
        except NpipesError as exc:
            self._settings.annotate(exc, self.address)
            raise
        conn = Connection(stream, self._settings, address=self.address, authkey_side=accept_side)
        if log.isEnabledFor(logging.DEBUG):  # the peer's pid may cost a system call
            log.debug("accepted a client on %s (pid %s)", self.address, conn.peer.pid)
        return conn

    def __iter__(self) -> Iterator[Connection]:
        """Accept connections until the listener is closed; a client that fails
        the authkey handshake is skipped (logged at debug level)."""
        while True:
            conn = self._accept_next()
            if conn is None:
                return
            yield conn
            del conn  # keep no finished connection alive while waiting for the next one

    def _accept_next(self) -> Connection | None:
        """The next authenticated client, or None once the listener is closed."""
        while True:
            try:
                conn = self._accept_unauthenticated()
            except ConnectionClosedError:
                if self._closed:
                    return None
                raise
            try:
                conn._authenticate()
            except NpipesError as exc:
                log.debug("client on %s failed the handshake: %s", self.address, exc)
                continue
            return conn

    def close(self) -> None:
        """Stop listening and remove the endpoint; idempotent, safe from another thread."""
        if self._closed:
            return
        self._closed = True
        self._raw.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"unclosed {self!r}", ResourceWarning, 2)
            self.close()


def listen(name: str, **options: Unpack[ListenOptions]) -> Listener:
    """Listen on ``name`` for connections.

    Args:
        name: a bare name (``"jobs"``: portable), an absolute socket path
            (POSIX) or ``\\\\.\\pipe\\NAME`` (Windows).
        options: see :class:`npipes.ListenOptions`: ``crc``, ``framing``,
            ``max_message_size``, ``authkey``, ``allow_other_users``,
            ``backlog``, ``allow_remote``, ``allowed_users``, ``security_descriptor``.
    Raises:
        TypeError, ValueError: a bad option, at once.
        InvalidPipeNameError: ``name`` breaks a naming rule.
        PipeInUseError: a live listener already owns ``name``.
        PipePermissionError: the private directory is not safe, or access was denied.
    """
    settings = listen_settings(name, options)
    try:
        raw = _backend.listen(settings.address, settings.endpoint)
    except NpipesError as exc:
        settings.annotate(exc)
        raise
    return Listener(raw, settings)


def connect(
    name: str, *, timeout: float | None = None, **options: Unpack[ConnectOptions]
) -> Connection:
    """Connect to the listener on ``name``.

    Args:
        name: as for :func:`listen`.
        timeout: seconds for the whole connect (including waiting for the
            listener and the authkey handshake), or None.
        options: see :class:`npipes.ConnectOptions`: ``crc``, ``framing``,
            ``max_message_size``, ``authkey``, ``wait_for_listener``, ``allowed_uids``,
            ``reconnect``.

    With ``reconnect=True``, when the peer goes away (its process ended, or it
    closed the connection) the next ``send``/``recv``/``request`` connects again,
    trying with backoff (10 ms doubling to 1 s) for as long as that call's
    timeout allows (None: as long as it takes), and runs the authkey handshake
    again. A send that did not complete is sent again (at-least-once); a request
    whose reply did not come is sent again. Not covered: a message that a send
    completed (it sat in the OS buffer) is lost if the peer dies before reading
    it, and a send that reconnects drops what the old peer sent that was not
    received yet. :attr:`Connection.reconnects` counts reconnections; each is
    logged at INFO on the ``npipes`` logger. ``close()`` never reconnects, nor
    does an error that is not "peer gone" (ProtocolError, ChecksumError,
    MessageTooLargeError, a timeout): a connection such an error broke stays closed.

    Raises:
        TypeError, ValueError: a bad option, at once.
        PipeNotFoundError: nobody listens on ``name`` (and not waiting).
        PipeTimeoutError: the timeout passed while waiting.
        PipeBusyError: the listener could not take the connection in time.
        PipePermissionError: access denied, or the listener runs as another user.
        InvalidPipeNameError: ``name`` breaks a naming rule.
        AuthenticationError: the keys did not match (a ``PermissionError``).
    """
    return _open(connect_settings(name, options), Deadline(timeout))


def _open(settings: Settings, deadline: Deadline) -> Connection:
    """Connect with checked ``settings`` (also how a reconnect connects again)."""
    try:
        stream = _backend.connect(
            settings.address,
            deadline,
            wait_for_listener=settings.wait_for_listener,
            allowed_uids=settings.allowed_uids,
        )
    except NpipesError as exc:
        settings.annotate(exc)
        raise
    conn = Connection(stream, settings)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("connected to %s (pid %s)", settings.address.path, conn.peer.pid)
    if settings.authkey is not None:
        conn._handshake(connect_side(settings.authkey), deadline.remaining())
    return conn
