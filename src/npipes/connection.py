"""The sync front end: ``connect``, ``listen``, :class:`Connection`, :class:`Listener`.

A thin driver: it moves bytes between a backend stream and the sans-I/O
connection core (``_protocol``) and waits. What the bytes mean, and what an
error, timeout or interruption does to the connection, is decided by the core.
One lock per direction: one thread may send while another receives, and
concurrent sends never interleave frames; a call's timeout also bounds its
wait for that lock.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self, Unpack, final

from . import _backend
from ._deadline import NO_DEADLINE, Deadline
from ._frame import DEFAULT_MAX_MESSAGE_SIZE
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


def _lock_timeout(what: str, deadline: Deadline) -> PipeTimeoutError:
    return PipeTimeoutError(
        f"{what} timed out after {deadline.timeout} s waiting for another thread's {what}",
        timeout=deadline.timeout,
    )


def _acquire(lock: threading.Lock, deadline: Deadline) -> bool:
    """Take ``lock`` within ``deadline``; False once it passed.

    A wait longer than ``threading.TIMEOUT_MAX`` (about 49.7 days on Windows)
    raises OverflowError, so a long deadline is waited for in slices.
    """
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
        )
        self._authkey_side = authkey_side
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()

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

    def _decoded_error(self) -> None:
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
        self._write((self._core.encode(data, crc),), deadline)

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
        writes, count = self._core.encode_many(messages, crc)
        if writes:
            self._write(writes, deadline)
        return count

    def _write(self, writes: Iterable[Sequence[Buffer]], deadline: Deadline) -> None:
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
        deadline = NO_DEADLINE if timeout is None else Deadline(timeout)
        lock = self._recv_lock
        if not _acquire(lock, deadline):
            raise self._core_annotated(_lock_timeout("recv", deadline))
        try:
            return self._receive(deadline, crc).message
        finally:
            lock.release()

    def _receive(self, deadline: Deadline, crc: bool | None) -> Frame:
        core = self._core
        while True:
            try:
                frame = core.next_frame(crc)
            except NpipesError:
                self._decoded_error()
                raise
            if frame is not None:
                return frame
            self._read_once(deadline)

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
        lock = self._recv_lock
        if not _acquire(lock, deadline):
            raise self._core_annotated(_lock_timeout("recv", deadline))
        try:
            messages = [self._receive(deadline, crc).message]
            if max_messages > 1:
                messages += self._core.take_ready(max_messages - 1, crc)
            return messages
        finally:
            lock.release()

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
        deadline = NO_DEADLINE if timeout is None else Deadline(timeout)
        lock = self._recv_lock
        if not _acquire(lock, deadline):
            raise self._core_annotated(_lock_timeout("recv", deadline))
        core = self._core
        stream = self._stream
        try:
            while True:
                try:
                    size = core.next_message_into(view, crc)
                except NpipesError:
                    self._decoded_error()
                    raise
                if size is not None:
                    return size
                self._read_once(deadline)
        finally:
            core.release_buffer()  # the caller's buffer is borrowed for this call only
            if core.state is not State.OPEN:
                stream.close()
            lock.release()

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
        self._core.close()
        self._stream.close()

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
        return Connection(stream, self._settings, address=self.address, authkey_side=accept_side)

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
            ``max_message_size``, ``authkey``, ``wait_for_listener``, ``allowed_uids``.
    Raises:
        TypeError, ValueError: a bad option, at once.
        PipeNotFoundError: nobody listens on ``name`` (and not waiting).
        PipeTimeoutError: the timeout passed while waiting.
        PipeBusyError: the listener could not take the connection in time.
        PipePermissionError: access denied, or the listener runs as another user.
        InvalidPipeNameError: ``name`` breaks a naming rule.
        AuthenticationError: the keys did not match (a ``PermissionError``).
    """
    settings = connect_settings(name, options)
    deadline = Deadline(timeout)
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
    if settings.authkey is not None:
        conn._handshake(connect_side(settings.authkey), deadline.remaining())
    return conn
