"""The sans-I/O connection core: every rule of one connection, and no I/O.

Like websockets' ``protocol.py`` or h11's ``Connection``: the sync
``Connection`` and ``npipes.aio`` only move bytes between a stream and this
object and wait; what the bytes mean and what an error does to the connection
is decided here, once.

Rules (docs/api.md "Errors, timeouts and interruptions"):
- States: ``OPEN``; ``BROKEN`` (framing lost, or a frame half-sent or
  half-received: the stream must be closed); ``CLOSED`` (closed locally, or the
  peer's clean end of stream was delivered).
- Messages are decoded in order into a small queue (``decode_available``,
  used by the asyncio driver as bytes arrive) or on demand
  (``next_message``). Errors take their place in that order: messages
  received before a broken frame are delivered first, then the error, then
  ``ConnectionClosedError`` for ever.
- A clean end of stream ends receiving only when it is delivered, so a side
  may still reply to a peer that half-closed after sending.
- Read-ahead is bounded in bytes (``READ_AHEAD`` of decoded messages waiting,
  each also counting ``ITEM_COST``, so empty messages and errors are bounded
  too, plus one frame); before authentication a peer may send at most
  ``MAX_HANDSHAKE_MESSAGE`` bytes per message and one message ahead.
- An exception or cancellation that leaves a frame half-sent
  (:meth:`send_failed`) or half-received (:meth:`recv_failed`) breaks the
  connection; one that touched nothing leaves it usable.
- A per-call ``crc=True`` requirement is checked here, not in the decoder, so
  the asyncio driver can decode before the call that asks.
- A subscription (``subscription=True``, publish/subscribe) is receive-only:
  sending is refused (``io.UnsupportedOperation``); its first message must be
  the publisher's ``SUBSCRIBED``, and a later control message becomes its
  typed error in stream order (``SlowSubscriberError``), which closes it.
"""

from __future__ import annotations

import collections
import enum
import io
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import TYPE_CHECKING, Final, final

from . import _control
from ._auth import MAX_HANDSHAKE_MESSAGE, Exchange, accept_side, connect_side
from ._frame import Frame
from ._options import annotate
from .errors import (
    AuthenticationError,
    BufferTooSmallError,
    ChecksumError,
    ConnectionClosedError,
    IncompleteMessageError,
    MessageTooLargeError,
    NpipesError,
    PipeTimeoutError,
    ProtocolError,
)

if TYPE_CHECKING:
    from ._framings import Codec
    from ._types import Buffer, Payload

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "MAX_HANDSHAKE_MESSAGE",
    "PACK_LIMIT",
    "READ_AHEAD",
    "ConnectionCore",
    "Exchange",
    "State",
    "accept_side",
    "connect_side",
]

READ_AHEAD: Final = 256 * 1024
"""Bytes of decoded messages that may wait for ``recv`` before reading pauses."""
ITEM_COST: Final = 256
"""Bytes each queued message or error counts for besides its payload (its objects),
so empty messages and errors (bad CRCs) fill the read-ahead budget too."""
PACK_LIMIT: Final = 64 * 1024
"""``send_many`` packs frame parts smaller than this into one write."""
HANDSHAKE_TIMEOUT: Final = 5.0
"""Seconds a peer has for the authkey handshake when the call sets no timeout."""


class State(enum.Enum):
    OPEN = "open"
    BROKEN = "broken"
    CLOSED = "closed"


Item = Frame | NpipesError


def _cost(item: Item) -> int:
    return ITEM_COST if isinstance(item, NpipesError) else item.size + ITEM_COST


@final
class ConnectionCore:
    """The state of one connection.

    Args:
        codec: the framing.
        crc: send a CRC-32 and require one, unless a call says otherwise.
        max_message_size: largest message sent or accepted (None: no limit).
        message_mode: the stream keeps message boundaries (Windows pipes).
        name, address: for error messages.
        authenticating: an authkey handshake comes first: the pre-authentication
            limits hold from the first byte, whatever order the driver runs in.
    """

    def __init__(
        self,
        codec: Codec,
        *,
        crc: bool,
        max_message_size: int | None,
        message_mode: bool,
        name: str | None,
        address: str | None,
        authenticating: bool = False,
        subscription: bool = False,
    ) -> None:
        self.codec: Final = codec
        self.subscription: Final = subscription  # a receive-only publish/subscribe end
        self._subscribed = False  # a subscription's SUBSCRIBED arrived
        self.crc: Final = crc
        self.max_message_size: Final = max_message_size
        self.name = name
        self.address = address
        self.state = State.OPEN
        self.reason = ""  # why the connection broke or closed, for later errors
        self.broken_by: BaseException | None = None  # the error that broke it, if one did
        self.message_mode: Final = message_mode
        self._message_ends = codec.message_based  # reads end messages for this framing
        self._unended = 0  # bytes of a pipe message whose end has not arrived yet
        # The decoder verifies any CRC that is present; "required" is checked per call.
        self._decoder = codec.decoder(
            max_message_size=max_message_size, require_crc=False, message_mode=message_mode
        )
        # The codec's fast paths (v1 frames), used when no other rule applies.
        self._encode_small: Callable[[object, bool, int | None], bytes | None] | None = getattr(
            codec, "encode_small", None
        )
        take: Callable[[bool], bytes | str | None] | None = getattr(
            self._decoder, "take_message", None
        )
        self._take_message = None if subscription or authenticating else take
        self._ready: collections.deque[Item] = collections.deque()
        self._ready_bytes = 0
        self._handshaking = authenticating
        if authenticating:
            self._decoder.max_message_size = MAX_HANDSHAKE_MESSAGE
        self.receive_ended = False  # the peer's clean end was delivered; sending may go on
        self.send_ended = ""  # why sending is over (the peer left); receiving may go on
        self._scratch: memoryview | None = None  # where bytes go once framing is lost

    # -- state ----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Closed or broken, or the peer's end was delivered; and no message is left."""
        if self.state is State.OPEN and not self.receive_ended:
            return False
        return all(isinstance(item, NpipesError) for item in self._ready)

    def message_ready(self) -> bool:
        """Whether a receive would return at once: a whole message, an error or the end is in.

        Decodes what has arrived (within the read-ahead budget). Servers wait for
        this, not for a first byte, so a client that dribbles part of a message
        cannot hold a slot past ``idle_timeout``.
        """
        self.decode_available()
        return bool(self._ready) or self.state is not State.OPEN or self.receive_ended

    def close(self, reason: str = "the connection was closed") -> None:
        """Mark closed locally (the driver closes the stream)."""
        if self.state is State.OPEN:
            self.reason = reason
        self.state = State.CLOSED

    def break_(self, reason: str, cause: BaseException | None = None) -> None:
        """Framing is lost (a frame torn in either direction): the stream must be closed.

        ``cause``: the received error that broke it (the peer leaving mid-message is
        told apart from a protocol error by it: see ``_reconnect.may_reconnect``)."""
        if self.state is State.OPEN:
            self.state = State.BROKEN
            self.reason = reason
            self.broken_by = cause

    def annotate(self, exc: BaseException) -> None:
        """Give an npipes error this connection's name and address (if it has none)."""
        annotate(exc, self.name, self.address)

    def closed_error(self) -> ConnectionClosedError:
        """The error for using a connection that is not open."""
        exc = ConnectionClosedError(
            f"{self.reason or 'the connection is closed'}; connect again to send or receive"
        )
        self.annotate(exc)
        return exc

    def check_open(self) -> None:
        if self.state is not State.OPEN:
            raise self.closed_error()

    def check_sending(self) -> None:
        """Raise ConnectionClosedError unless a message may be sent now.

        On a subscription, io.UnsupportedOperation (but for the authkey handshake).
        """
        if self.subscription and not self._handshaking:
            raise io.UnsupportedOperation(
                "a subscription is receive-only: it cannot send; the publisher's"
                " messages arrive with recv()"
            )
        if self.state is not State.OPEN:
            raise self.closed_error()
        if self.send_ended:
            exc = ConnectionClosedError(f"{self.send_ended}; connect again to send")
            self.annotate(exc)
            raise exc

    def _check_receiving(self) -> None:
        if self.state is not State.OPEN:
            raise self.closed_error()
        if self.receive_ended:
            exc = ConnectionClosedError("the peer closed the connection")
            self.annotate(exc)
            raise exc

    # -- sending --------------------------------------------------------------

    def _with_crc(self, crc: bool | None) -> bool:
        if crc is None:
            return self.crc
        if not isinstance(crc, bool):
            raise TypeError(f"crc must be True, False or None, not {crc!r}")
        if crc and not self.codec.supports_crc:
            raise ValueError(
                f"the {self.codec.name} framing has no checksum: crc=True is not available"
            )
        return crc

    def encode(self, data: Payload, crc: bool | None = None) -> Sequence[Buffer]:
        """The buffers to write for one message (the payload is not copied).

        Raises:
            TypeError, ValueError: bad argument; MessageTooLargeError: above the limit.
            ConnectionClosedError: the connection is not open.
        """
        small = self._encode_small
        if small is not None and crc is None:  # the hot path: one small message, one bytes
            frame = small(data, self.crc, self.max_message_size)
            if frame is not None:
                if self.state is not State.OPEN or self.send_ended or self.subscription:
                    self.check_sending()
                return (frame,)
        with_crc = self.crc if crc is None else self._with_crc(crc)
        parts = self.codec.encode(data, crc=with_crc, max_size=self.max_message_size)
        if self.state is not State.OPEN or self.send_ended or self.subscription:
            self.check_sending()
        return parts

    def encode_many(
        self, messages: Iterable[Payload], crc: bool | None = None
    ) -> tuple[list[list[Buffer]], int]:
        """Encode a batch: ``(writes, count)``, each write a list of buffers sent as one unit.

        On a stream, small parts are packed into as few buffers as possible
        (large payloads still go out without a copy); on a message pipe with a
        message-based framing every message is its own write. Everything is
        encoded (and checked) before anything is written.
        """
        with_crc = self._with_crc(crc)
        limit = self.max_message_size
        encode = self.codec.encode
        batch = getattr(self.codec, "encode_batch", None)
        if batch is not None and not (self._message_ends and self.message_mode):
            if not isinstance(messages, list):
                messages = list(messages)
            joined = batch(messages, crc=with_crc, max_size=limit)
            if joined is not None:  # every message small: one buffer, one pass
                self.check_sending()
                return ([[joined]] if joined else []), len(messages)
        if self._message_ends and self.message_mode:
            units = [list(encode(m, crc=with_crc, max_size=limit)) for m in messages]
            self.check_sending()
            return units, len(units)
        buffers: list[Buffer] = []
        pending: list[Buffer] = []  # small parts waiting to be packed together
        pending_size = count = 0
        for data in messages:
            for part in encode(data, crc=with_crc, max_size=limit):
                size = len(part) if isinstance(part, bytes) else memoryview(part).nbytes
                if size >= PACK_LIMIT:
                    if pending:
                        buffers.append(b"".join(pending))
                        pending, pending_size = [], 0
                    buffers.append(part)
                elif size:
                    pending.append(part)
                    pending_size += size
                    if pending_size >= PACK_LIMIT:
                        buffers.append(b"".join(pending))
                        pending, pending_size = [], 0
            count += 1
        if pending:
            buffers.append(b"".join(pending))
        self.check_sending()
        return ([buffers] if buffers else []), count

    def send_failed(self, exc: BaseException, *, started: bool = True) -> None:
        """Apply the rule for an exception out of a write.

        Only a timeout that says nothing went out (``partial=False``), or a
        ``MessageTooLargeError`` a backend raises before writing (a size the OS
        cannot write in one go), leaves the connection usable; anything else (a
        partial timeout, Ctrl+C or a cancellation mid-write) may have torn a
        frame. A peer that is gone ends sending only: what it sent before it
        left is still received.
        """
        self.annotate(exc)
        if not started or isinstance(exc, MessageTooLargeError):
            return
        if isinstance(exc, PipeTimeoutError) and not exc.partial:
            return
        if isinstance(exc, PipeTimeoutError):
            self.break_("a send timed out after part of a message went out")
        elif isinstance(exc, ConnectionClosedError):
            if self.state is State.OPEN and not self.send_ended:
                self.send_ended = "the peer closed the connection"
        else:
            self.break_(f"a send was interrupted ({type(exc).__name__})")

    # -- receiving ------------------------------------------------------------

    def get_buffer(self) -> memoryview:
        """Where the driver should read the next bytes to (never empty, never raises).

        Once the framing is lost, bytes still arriving (asyncio feeds the rest
        of a read after the protocol aborted) go to a scratch buffer and are dropped.
        """
        if self.state is not State.BROKEN:
            try:
                return self._decoder.get_buffer()
            except NpipesError as exc:
                self._refused(exc)
        if self._scratch is None:
            self._scratch = memoryview(bytearray(64 * 1024))
        return self._scratch

    def buffer_updated(self, nbytes: int, message_end: bool = True) -> None:
        """``nbytes`` were read into the last ``get_buffer()``; 0 means end of stream.

        A decoder may refuse bytes as they arrive (a message without its own
        length passing ``max_message_size``): that error takes its place in
        the stream and breaks the connection, like one found while decoding.
        """
        if self.state is State.BROKEN and nbytes:
            return  # into the scratch buffer: framing is lost, the bytes mean nothing
        decoder = self._decoder
        try:
            if nbytes:
                decoder.buffer_updated(nbytes)
                if message_end and self._message_ends:
                    decoder.message_end()
                    self._unended = 0
                elif self._message_ends:
                    self._unended += nbytes
            elif self._unended:
                # The peer died in the middle of a pipe message (Windows): what arrived
                # of it is not a message, whatever the framing's decoder would say.
                raise IncompleteMessageError(
                    "the peer closed the connection in the middle of a message"
                    f" ({self._unended} bytes of it were received)"
                )
            else:
                decoder.feed_eof()
        except NpipesError as exc:
            self._refused(exc)

    def receive_data(self, data: Buffer) -> None:
        """Copy ``data`` in (for callers without a buffer-aware transport)."""
        decoder = self._decoder
        try:
            if data:
                decoder.feed_data(data)
                if self._message_ends:
                    decoder.message_end()
            else:
                decoder.feed_eof()
        except NpipesError as exc:
            self._refused(exc)

    def _refused(self, exc: NpipesError) -> None:
        if self.state is State.OPEN:
            # Drivers decode every complete message before reading more, so
            # nothing complete is behind this error; the queue keeps its order.
            self._decode_failed(exc)
            self.break_(str(exc))
            self._push(exc)

    def receive_eof(self) -> None:
        """The stream ended (idempotent)."""
        self._decoder.feed_eof()

    def _decode(self) -> Item | None:
        """The next frame or error out of the decoder; updates the state on fatal errors."""
        if self.state is not State.OPEN or self.receive_ended:
            return None  # closed, broken or ended: nothing more is decoded
        try:
            frame = self._decoder.next_frame()
        except NpipesError as exc:
            self._decode_failed(exc)
            return exc
        if frame is not None and self.subscription and not self._handshaking:
            return self._subscription_item(frame)
        return frame

    def _subscription_item(self, frame: Frame) -> Item:
        """A subscription's frame as delivered: the message, or the error a control
        message stands for (which ends the subscription, after the messages before it)."""
        message = frame.message
        if not self._subscribed:
            if message == _control.SUBSCRIBED:
                self._subscribed = True
                return frame  # subscribe() takes it; the user never sees it
            exc: NpipesError = ProtocolError(
                "the listener is not an npipes publisher (its first message was not the"
                " subscription confirmation); use connect() for it, or check the name"
            )
        elif not isinstance(message, bytes) or not _control.is_subscription_control(message):
            return frame
        else:
            try:
                _control.raise_subscription_control(message)
            except NpipesError as error:
                exc = error
        self.annotate(exc)
        if isinstance(exc, ConnectionClosedError):
            self.close(str(exc))  # the publisher's last word: a clean end
        else:
            self.break_(str(exc))
        return exc

    def _decode_failed(self, exc: NpipesError) -> None:
        self.annotate(exc)
        if isinstance(exc, IncompleteMessageError) or self._decoder.broken:
            self.break_(str(exc), exc)

    def decode_available(self) -> None:
        """Decode what has arrived into the queue, within the read-ahead budget."""
        while self.wants_data():
            item = self._decode()
            if item is None:
                return
            self._push(item)
            if isinstance(item, NpipesError) and (
                self.state is not State.OPEN or isinstance(item, ConnectionClosedError)
            ):
                return  # nothing after a fatal error or the end

    def _push(self, item: Item) -> None:
        self._ready.append(item)
        self._ready_bytes += _cost(item)

    def _pop(self) -> Item:
        item = self._ready.popleft()
        self._ready_bytes -= _cost(item)
        return item

    def wants_data(self) -> bool:
        """Whether the driver should keep reading (the read-ahead budget is not used up)."""
        if self._handshaking:
            return not self._ready  # one message ahead: limits change after the handshake
        return self._ready_bytes < READ_AHEAD

    def _deliver(self, item: Item, require_crc: bool) -> Frame:
        if not isinstance(item, NpipesError):
            if require_crc and not item.crc:
                exc = ChecksumError(
                    "the peer sent a message without a CRC-32 but this side requires one"
                    " (crc=True); the message was dropped. Open the peer with crc=True too."
                )
                self.annotate(exc)
                raise exc
            return item
        if type(item) is ConnectionClosedError:
            # Receiving is over; sending goes on until the peer is gone (half-close).
            self.receive_ended = True
        raise item

    def next_frame(self, crc: bool | None = None) -> Frame | None:
        """The next message as a :class:`Frame`, or None if more bytes are needed.

        Raises:
            The decoder's errors, in stream order; ConnectionClosedError when
            the connection is not open and nothing is left to deliver.
        """
        require = self.crc if crc is None else self._with_crc(crc)
        if self._ready:
            return self._deliver(self._pop(), require)
        if self.state is not State.OPEN or self.receive_ended:
            self._check_receiving()
        if self.subscription:  # control messages become errors in _decode
            item = self._decode()
            return None if item is None else self._deliver(item, require)
        try:  # the hot path: straight from the decoder
            frame = self._decoder.next_frame()
        except NpipesError as exc:
            self._decode_failed(exc)
            return self._deliver(exc, require)
        if frame is not None and require and not frame.crc:
            return self._deliver(frame, require)
        return frame

    def take_message(self, crc: bool | None = None) -> bytes | str | None:
        """The next message if it can be taken at once and needs no other rule (nothing
        queued, open, a decoder with a fast path), else None: call :meth:`next_frame`."""
        take = self._take_message
        if take is None or self._ready or self.state is not State.OPEN or self.receive_ended:
            return None
        return take(self.crc if crc is None else self._with_crc(crc))

    def take_message_into(self, view: memoryview, crc: bool | None = None) -> int | None:
        """:meth:`take_message` into ``view``: its size, or None (use :meth:`next_message_into`)."""
        if self._take_message is None or self._ready or self.state is not State.OPEN:
            return None
        take = getattr(self._decoder, "take_message_into", None)
        if take is None or self.receive_ended:
            return None
        return take(view, self.crc if crc is None else self._with_crc(crc))  # type: ignore[no-any-return]

    def next_message(self, crc: bool | None = None) -> bytes | str | None:
        """The next message, or None if more bytes are needed (see :meth:`next_frame`)."""
        frame = self.next_frame(crc)
        return None if frame is None else frame.message

    def next_message_into(
        self, view: memoryview, crc: bool | None = None, *, direct: bool = True
    ) -> int | None:
        """Write the next message's payload into ``view``; its size, or None if more is needed.

        With ``direct``, a message not yet decoded is read straight into
        ``view`` (the caller then reads into :meth:`get_buffer` and must call
        :meth:`release_buffer` when the call ends). Without it, the message is
        decoded as usual and copied, so ``view`` is never touched by a read
        that outlives the call (asyncio: a cancelled call consumes nothing).

        Raises:
            BufferTooSmallError: the message is longer than ``view``; nothing consumed.
            As :meth:`next_frame` otherwise.
        """
        require = self._with_crc(crc)
        ready = self._ready
        direct = direct and not self.subscription  # a control message must not land in view
        if not ready and not direct and self.state is State.OPEN and not self.receive_ended:
            item = self._decode()
            if item is None:
                return None
            self._push(item)
        if ready:
            item = ready[0]
            if not isinstance(item, NpipesError):
                data = item.message
                payload = data.encode("utf-8") if isinstance(data, str) else data
                if len(payload) > len(view):
                    raise BufferTooSmallError(
                        f"the next message is {len(payload)} bytes; the buffer holds {len(view)}",
                        size=len(payload),
                    )
                self._pop()
                self._deliver(item, require)
                view[: len(payload)] = payload
                return len(payload)
            self._pop()
            self._deliver(item, require)
        self._check_receiving()
        try:
            got = self._decoder.next_frame_into(view)
        except BufferTooSmallError as exc:
            self.annotate(exc)
            raise
        except NpipesError as exc:
            self._decode_failed(exc)
            self._deliver(exc, require)
            raise  # pragma: no cover - _deliver raised
        if got is None:
            return None
        size, _text, has_crc = got
        if require and not has_crc:
            self._deliver(Frame(b"", size, False), require)
        return size

    def release_buffer(self) -> None:
        """End a ``next_message_into`` call: the decoder must not keep the caller's buffer."""
        release = getattr(self._decoder, "release_buffer", None)
        if release is not None and release():
            self.break_("a receive into a caller's buffer stopped in the middle of a message")

    def take_ready(self, limit: int, crc: bool | None = None) -> list[bytes | str]:
        """Up to ``limit`` further messages that need no waiting; errors stay queued."""
        require = self._with_crc(crc)
        out: list[bytes | str] = []
        ready = self._ready
        take = getattr(self._decoder, "take_messages", None)
        if (
            take is not None
            and not ready
            and self.state is State.OPEN
            and not self.receive_ended
            and not self.subscription
            and not self._handshaking
        ):
            out = take(limit, require)  # whole frames straight from the decoder, one pass
        while len(out) < limit:
            if not ready:
                if self.state is not State.OPEN or self.receive_ended:
                    break
                item = self._decode()
                if item is None:
                    break
                self._push(item)
            item = ready[0]
            if isinstance(item, NpipesError) or (require and not item.crc):
                break  # raised by the next call, so the messages before it are not lost
            self._pop()
            out.append(item.message)
        return out

    def recv_failed(self, exc: BaseException) -> None:
        """Apply the rule for an exception out of a read (timeout, Ctrl+C, cancel, I/O error).

        Bytes that a read delivered before it was interrupted (a backend sets
        ``exc.npipes_received``) are kept: a message they complete is delivered
        by the next call. If a frame is left half-received, the connection breaks.
        """
        self.annotate(exc)
        received = getattr(exc, "npipes_received", 0)
        if received:
            self.buffer_updated(received, getattr(exc, "npipes_message_end", True))
        if self.state is not State.OPEN:
            return
        # Complete frames are kept for the next call: all of them, past the read-ahead
        # budget (their bytes are read already), so what is left is a torn frame or nothing.
        while (item := self._decode()) is not None:
            self._push(item)
            if self.state is not State.OPEN or isinstance(item, ConnectionClosedError):
                break
        if isinstance(exc, ConnectionClosedError):
            self.close(str(exc))
        elif not self._decoder.idle and self.state is State.OPEN:
            if isinstance(exc, PipeTimeoutError):
                exc.partial = True
            self.break_(
                f"a receive stopped in the middle of a message ({type(exc).__name__});"
                " the rest of it would be read as a new message"
            )

    # -- the authkey handshake -----------------------------------------------------

    def handshake(self, exchange: Exchange) -> Generator[bytes | None, bytes | str | None, None]:
        """Wrap an authkey exchange (``_auth``) with the pre-authentication limits.

        Yields a message to send, or None to receive one (send it in). While it
        runs, a peer's message may be at most ``MAX_HANDSHAKE_MESSAGE`` bytes
        (refused from its header, before the payload is read) and at most one
        message is decoded ahead.
        """
        decoder = self._decoder
        decoder.max_message_size = MAX_HANDSHAKE_MESSAGE
        self._handshaking = True
        fast, self._take_message = self._take_message, None  # one message ahead, no more
        try:
            to_peer = next(exchange)
            while True:
                if to_peer is None:
                    message = yield None
                    if not isinstance(message, bytes) or len(message) > MAX_HANDSHAKE_MESSAGE:
                        raise AuthenticationError("authentication failed: unexpected message")
                    to_peer = exchange.send(message)
                else:
                    yield to_peer
                    to_peer = exchange.send(None)
        except StopIteration:
            return
        except BaseException as exc:
            self.annotate(exc)
            self.break_(f"authentication failed ({exc})")
            raise
        finally:
            decoder.max_message_size = self.max_message_size
            self._handshaking = False
            if not self.subscription:
                self._take_message = fast or getattr(decoder, "take_message", None)
