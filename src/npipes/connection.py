"""The sync front end: ``connect``, ``listen``, :class:`Connection`, :class:`Listener`.

This module only moves bytes between a backend stream and the sans-I/O codec
(``_frame``) and waits; every framing decision lives in the codec. One lock
per direction: one thread may send while another receives, and concurrent
sends never interleave frames.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self, final

from . import _backend
from ._deadline import NO_DEADLINE, Deadline
from ._frame import DEFAULT_MAX_MESSAGE_SIZE
from ._framings import Codec, get_codec
from ._names import resolve
from ._protocol import MAX_HANDSHAKE_MESSAGE, Exchange, accept_side, connect_side
from .errors import (
    AuthenticationError,
    ConnectionClosedError,
    NpipesError,
    PipeTimeoutError,
)

if TYPE_CHECKING:
    from ._backend import PeerInfo, RawListener, RawStream
    from ._types import Buffer, Payload

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "Connection", "Listener", "connect", "listen"]

_PACK_LIMIT: Final = 64 * 1024  # send_many packs parts smaller than this into one write


def _check_limit(max_message_size: int | None) -> None:
    if max_message_size is not None and max_message_size < 0:
        raise ValueError("max_message_size must be None or >= 0 bytes")


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
        *,
        name: str,
        address: str,
        crc: bool = False,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        codec: Codec | None = None,
        authkey: bytes | None = None,
    ) -> None:
        self._stream = stream
        self._authkey = authkey  # the listener's key, for _authenticate (accept side)
        self._closed = False
        self._codec = codec or get_codec("npipes")
        self.name: Final = name
        """The name given to connect/listen."""
        self.address: Final = address
        """The OS address (socket path or ``\\\\.\\pipe\\NAME``)."""
        self.crc: Final = crc
        """Whether this side sends a CRC-32 with every message and requires one."""
        self.max_message_size: Final = max_message_size
        """Largest message this side sends or accepts, in bytes (None: no limit)."""
        self.framing: Final = self._codec.name
        self._message_based = self._codec.message_based
        """The wire format's name (``"npipes"``, ``"multiprocessing"``, ...)."""
        self._decoder = self._codec.decoder(
            max_message_size=max_message_size,
            require_crc=crc,
            message_mode=stream.message_mode,
        )
        self._send_lock = threading.Lock()
        self._pending_error: NpipesError | None = None
        self._recv_lock = threading.Lock()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<npipes.Connection {self.address!r} {state}>"

    @property
    def peer(self) -> PeerInfo:
        """The other process: ``pid`` and, on POSIX, ``uid``/``gid``; ``sid`` on Windows."""
        return self._stream.peer

    @property
    def closed(self) -> bool:
        """True once closed, by :meth:`close` or after an error that lost framing."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionClosedError(
                "the connection is closed; connect again to send or receive",
                name=self.name,
                address=self.address,
            )

    # -- sending ------------------------------------------------------------

    def send(self, data: Payload, *, timeout: float | None = None, crc: bool | None = None) -> None:
        """Send one message.

        Args:
            data: ``str`` (sent as UTF-8 text, received as ``str``) or any
                bytes-like object (received as ``bytes``). The payload is not copied.
            timeout: seconds to wait for room in the pipe, or None to wait as long
                as it takes.
            crc: add a CRC-32 to this message; None uses the connection's setting.
        Raises:
            MessageTooLargeError: above this side's ``max_message_size``; nothing sent.
            PipeTimeoutError: the deadline passed; if part of the frame went out
                (``partial``), the connection is closed.
            ConnectionClosedError: the peer is gone, or this connection is closed.
        """
        deadline = NO_DEADLINE if timeout is None else Deadline(timeout)
        with_crc = self.crc if crc is None else crc
        parts = self._codec.encode(data, crc=with_crc, max_size=self.max_message_size)
        self._send_buffers(parts, deadline)

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
            As :meth:`send`; a message above ``max_message_size`` fails the whole
            batch before anything is written.
        """
        deadline = NO_DEADLINE if timeout is None else Deadline(timeout)
        with_crc = self.crc if crc is None else crc
        limit = self.max_message_size
        if self._message_based and self._stream.message_mode:
            # One pipe message per message: nothing may be packed together.
            encoded = [self._codec.encode(m, crc=with_crc, max_size=limit) for m in messages]
            for parts in encoded:
                self._send_buffers(parts, deadline)
            return len(encoded)
        buffers: list[Buffer] = []
        pending: list[Buffer] = []  # small parts waiting to be packed together
        pending_size = count = 0
        for data in messages:
            for part in self._codec.encode(data, crc=with_crc, max_size=limit):
                size = memoryview(part).nbytes
                if size >= _PACK_LIMIT:
                    if pending:
                        buffers.append(b"".join(pending))
                        pending, pending_size = [], 0
                    buffers.append(part)
                elif size:
                    pending.append(part)
                    pending_size += size
                    if pending_size >= _PACK_LIMIT:
                        buffers.append(b"".join(pending))
                        pending, pending_size = [], 0
            count += 1
        if pending:
            buffers.append(b"".join(pending))
        if buffers:
            self._send_buffers(buffers, deadline)
        return count

    def _send_buffers(self, buffers: Sequence[Buffer], deadline: Deadline) -> None:
        with self._send_lock:
            self._check_open()
            try:
                self._stream.send(buffers, deadline)
            except PipeTimeoutError as exc:
                if exc.partial:
                    self.close()
                raise
            except ConnectionClosedError:
                self.close()
                raise

    # -- receiving ----------------------------------------------------------

    def recv(self, timeout: float | None = None, *, crc: bool | None = None) -> bytes | str:
        """Receive the next message: ``str`` for text, ``bytes`` for binary.

        Args:
            timeout: seconds until the whole message must have arrived, or None.
            crc: require a CRC-32 on this message; None uses the connection's
                setting. A CRC that is present is always verified.
        Raises:
            PipeTimeoutError: the deadline passed. If part of a message had been
                read, the connection is closed (it would be out of step).
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
        if crc and not self._codec.supports_crc:
            raise ValueError(
                f"the {self.framing} framing has no checksum: crc=True is not available"
            )
        with self._recv_lock:
            if crc is None or crc == self.crc:
                frame = self._receive(deadline, None)
            else:
                decoder = self._decoder
                decoder.require_crc = crc
                try:
                    frame = self._receive(deadline, None)
                finally:
                    decoder.require_crc = self.crc
        assert not isinstance(frame, int)
        return frame

    def recv_many(
        self, max_messages: int = 1024, timeout: float | None = None
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
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        deadline = NO_DEADLINE if timeout is None else Deadline(timeout)
        with self._recv_lock:
            first = self._receive(deadline, None)
            assert not isinstance(first, int)
            messages = [first]
            decoder = self._decoder
            while len(messages) < max_messages:
                try:
                    frame = decoder.next_frame()
                except NpipesError as exc:
                    self._pending_error = exc  # raised by the next call
                    break
                if frame is None:
                    break
                messages.append(frame.message)
        return messages

    def recv_into(self, buffer: Buffer, *, timeout: float | None = None) -> int:
        """Receive the next message's payload into ``buffer``; return its size.

        The payload is read straight into ``buffer`` (text messages as their
        UTF-8 bytes). Errors as :meth:`recv`, plus:

        Raises:
            BufferTooSmallError: the message is longer than ``buffer``; nothing
                was consumed, so ``recv()`` can still take it.
        """
        view = memoryview(buffer).cast("B")
        with self._recv_lock:
            size = self._receive(Deadline(timeout), view)
        assert isinstance(size, int)
        return size

    def _receive(self, deadline: Deadline, into: memoryview | None) -> bytes | str | int:
        pending = self._pending_error
        if pending is not None:
            self._pending_error = None
            if self._decoder.broken:
                self.close()
            raise pending
        self._check_open()
        decoder = self._decoder
        try:
            while True:
                if into is None:
                    frame = decoder.next_frame()
                    if frame is not None:
                        return frame.message
                else:
                    got = decoder.next_frame_into(into)
                    if got is not None:
                        return got[0]
                count = self._stream.recv_into(decoder.get_buffer(), deadline)
                if count:
                    decoder.buffer_updated(count)
                    if self._message_based and self._stream.message_end:
                        decoder.message_end()
                else:
                    decoder.feed_eof()
        except PipeTimeoutError as exc:
            if not decoder.idle:
                exc.partial = True
                self.close()
            exc.name, exc.address = self.name, self.address
            raise
        except NpipesError as exc:
            if decoder.broken or isinstance(exc, ConnectionClosedError):
                self.close()
            exc.name, exc.address = self.name, self.address
            raise

    def _handshake(self, exchange: Exchange, timeout: float | None) -> None:
        """Run a sans-I/O exchange (``_protocol``) over this connection; close on failure."""
        deadline = Deadline(timeout)
        try:
            to_peer = next(exchange)
            while True:
                if to_peer is None:
                    message = self.recv(timeout=deadline.remaining())
                    if isinstance(message, str) or len(message) > MAX_HANDSHAKE_MESSAGE:
                        raise AuthenticationError("authentication failed: unexpected message")
                    to_peer = exchange.send(message)
                else:
                    self.send(to_peer, timeout=deadline.remaining())
                    to_peer = exchange.send(None)
        except StopIteration:
            return
        except BaseException:
            self.close()
            raise

    def _authenticate(self, timeout: float | None) -> None:
        """Run the accept side of the authkey handshake if the listener has a key.

        Servers call it in the connection's own worker, so a client that never
        answers holds up nobody else. Closes the connection on failure.
        """
        if self._authkey is not None:
            self._handshake(accept_side(self._authkey), timeout)

    def _wait_readable(self, timeout: float | None) -> bool:
        """Wait until the peer sent something or the connection ended; False on timeout.

        Consumes no message: what arrived stays in the decoder for the next
        ``recv``. Servers use it for ``idle_timeout``.
        """
        deadline = Deadline(timeout)
        with self._recv_lock:
            decoder = self._decoder
            if self._closed or self._pending_error is not None or not decoder.idle:
                return True
            try:
                count = self._stream.recv_into(decoder.get_buffer(), deadline)
            except PipeTimeoutError:
                return False
            except NpipesError as exc:
                exc.name, exc.address = self.name, self.address
                self._pending_error = exc  # raised by the next recv
                return True
            if count:
                decoder.buffer_updated(count)
                if self._message_based and self._stream.message_end:
                    decoder.message_end()
            else:
                decoder.feed_eof()
            return True

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
        """Close the connection; idempotent. A message already sent is still delivered."""
        if self._closed:
            return
        self._closed = True
        self._stream.close()

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


@final
class Listener:
    """A named endpoint that accepts connections. Create it with :func:`listen`."""

    def __init__(
        self,
        raw: RawListener,
        *,
        name: str,
        crc: bool,
        max_message_size: int | None,
        codec: Codec,
        authkey: bytes | None = None,
    ) -> None:
        self._raw = raw
        self._closed = False
        self._codec = codec
        self._authkey = authkey
        self.name: Final = name
        self.crc: Final = crc
        self.max_message_size: Final = max_message_size

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

        ``close()`` from another thread, or Ctrl+C, ends the wait.

        Raises:
            PipeTimeoutError: no client came within ``timeout`` seconds.
            ConnectionClosedError: the listener was closed.
        """
        deadline = Deadline(timeout)
        conn = self._accept_unauthenticated(timeout)
        # A client failing authentication is an error for this accept only.
        conn._authenticate(deadline.remaining())
        return conn

    def _accept_unauthenticated(self, timeout: float | None) -> Connection:
        """Wait for the next client; the authkey handshake is left to
        :meth:`Connection._authenticate` (servers run it in the client's worker)."""
        if self._closed:
            raise ConnectionClosedError("the listener is closed", name=self.name)
        try:
            stream = self._raw.accept(Deadline(timeout))
        except NpipesError as exc:
            exc.name = self.name
            raise
        return Connection(
            stream,
            name=self.name,
            address=self.address,
            crc=self.crc,
            max_message_size=self.max_message_size,
            codec=self._codec,
            authkey=self._authkey,
        )

    def __iter__(self) -> Iterator[Connection]:
        """Accept connections until the listener is closed."""
        while True:
            try:
                yield self.accept()
            except ConnectionClosedError:
                if self._closed:
                    return
                raise

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


def listen(
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
    """Listen on ``name`` for connections.

    Args:
        name: a bare name (``"jobs"``: portable), an absolute socket path
            (POSIX) or ``\\\\.\\pipe\\NAME`` (Windows).
        crc: send a CRC-32 with every message and require one on every message received.
        framing: the wire format: ``"npipes"`` (docs/protocol.md), ``"multiprocessing"``,
            ``"npipes1"``, ``"raw"``, ``"lines"``, ``"dotnet"``, or a codec object
            (docs/framings.md).
        max_message_size: largest message accepted or sent, in bytes (default
            1 GiB); None for no limit.
        allow_other_users: accept peers running as other users (off: the
            endpoint is owner-only and other uids are rejected).
        backlog: connections the OS queues until :meth:`Listener.accept` (POSIX).
        allow_remote: Windows: accept clients from other machines (SMB); off,
            the pipe has ``PIPE_REJECT_REMOTE_CLIENTS``.
        allowed_users: Windows: accounts (names or SID strings) let in besides you
            and LocalSystem.
        security_descriptor: Windows: an SDDL string used instead of the default
            owner-only DACL.
        authkey: require clients to prove they know this key (the HMAC
            challenge of ``multiprocessing.connection``) before ``accept`` returns.
    Raises:
        InvalidPipeNameError: ``name`` breaks a naming rule.
        PipeInUseError: a live listener already owns ``name``.
        PipePermissionError: the private directory is not safe, or access was denied.
    """
    codec = get_codec(framing, crc=crc, authkey=authkey)
    _check_limit(max_message_size)
    address = resolve(name)
    options = _backend.ListenOptions(
        allow_other_users=allow_other_users,
        backlog=backlog,
        allow_remote=allow_remote,
        allowed_users=tuple(allowed_users),
        security_descriptor=security_descriptor,
    )
    try:
        raw = _backend.listen(address, options)
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


def connect(
    name: str,
    *,
    timeout: float | None = None,
    crc: bool = False,
    framing: str | Codec = "npipes",
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
    wait_for_listener: bool = False,
    authkey: bytes | None = None,
) -> Connection:
    """Connect to the listener on ``name``.

    Args:
        name: as for :func:`listen`.
        timeout: seconds for the whole connect (including waiting), or None.
        crc, framing, max_message_size: as for :func:`listen`.
        wait_for_listener: if nobody listens yet, keep trying until someone
            does or ``timeout`` passes (instead of failing at once).
        authkey: authenticate with the listener's key (both sides prove it).
    Raises:
        PipeNotFoundError: nobody listens on ``name`` (and not waiting).
        PipeTimeoutError: the timeout passed while waiting.
        PipeBusyError: the listener could not take the connection in time.
        PipePermissionError: access denied (another user's endpoint).
        InvalidPipeNameError: ``name`` breaks a naming rule.
        AuthenticationError: the keys did not match (a ``PermissionError``).
    """
    codec = get_codec(framing, crc=crc, authkey=authkey)
    _check_limit(max_message_size)
    address = resolve(name)
    deadline = Deadline(timeout)
    try:
        stream = _backend.connect(address, deadline, wait_for_listener=wait_for_listener)
    except NpipesError as exc:
        exc.name = name
        raise
    conn = Connection(
        stream,
        name=name,
        address=address.path,
        crc=crc,
        max_message_size=max_message_size,
        codec=codec,
    )
    if authkey is not None:
        conn._handshake(connect_side(authkey), deadline.remaining())
    return conn
