"""The seed's facade: ``IPC().send_message(...)`` / ``IPC().receive_message()``.

npipes 1.x users wrote one line on each side and let the library sort out who
serves. :class:`IPC` keeps that: whichever side comes first listens, the
second connects (a race between two starters ends with one listener, thanks
to the backend's endpoint lock), and the connection then persists so both
sides can send and receive in any order. It is built on the public
:func:`npipes.connect`/:func:`npipes.listen`, not on private I/O.

Delivery rule (``framing="npipes"``, the default): the receiving side
acknowledges each message before ``receive_message`` returns it, and
``send_message`` returns only once that acknowledgement arrived. So a message
that ``send_message`` returned from has reached a ``receive_message``, and two
*senders* that meet (both sides calling ``send_message`` first) do not
"succeed" into each other's unread buffers: both wait, or time out. Acks were
chosen over a role exchange at the rendezvous because they also cover the rest
of a persistent conversation (a side that sends and then exits while the other
only sends too), not just its start. The wire: each message travels as a small
header frame and the message frame; each acknowledgement is one small frame
(see ``_DATA``/``_ACK`` below), all ordinary npipes frames.

Other framings (``npipes1`` for 1.x programs, ``lines`` for shells...) talk to
programs that cannot acknowledge, and so does ``acknowledge=False`` (for a
plain ``npipes.connect``/``listen`` peer): there ``send_message`` returns once
the message is handed to the OS, as in 1.x.

If the peer goes away cleanly, the next call waits for a new peer on the same
name (a listening side accepts again; a connecting side meets whoever comes
next), so a long-running receiver keeps working across short-lived senders.
This is ``connect(reconnect=True)``'s rule (wait with the call's deadline, send
an unacknowledged message again to the next peer; ``reconnects`` counts, INFO on
the ``npipes`` logger) done here rather than by the connection, because the
acknowledgements must know when the peer changed, and because the side that
waits for the new peer may be the listening one.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self, TypeVar, final

from ._backend import PeerInfo
from ._deadline import Deadline, seconds
from ._frame import DEFAULT_MAX_MESSAGE_SIZE
from ._framings import get_codec
from ._protocol import ITEM_COST, READ_AHEAD
from .connection import Connection, Listener, connect, listen
from .errors import (
    ChecksumError,
    ConnectionClosedError,
    IncompleteMessageError,
    PipeInUseError,
    PipeNotFoundError,
    PipeTimeoutError,
    ProtocolError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ._framings import Codec
    from ._types import Payload

__all__ = ["DEFAULT_NAME", "IPC", "rendezvous"]

DEFAULT_NAME: Final = "IPC_PIPE_DEFAULT"
"""The pipe name npipes 1.x used when none was given."""

log = logging.getLogger("npipes")

_Stream = TypeVar("_Stream")
_Listening = TypeVar("_Listening")


def rendezvous(
    deadline: Deadline,
    try_connect: Callable[[float | None, bool], _Stream],
    try_listen: Callable[[], _Listening],
) -> _Stream | _Listening:
    """Connect if someone listens, else listen; settle races between two starters.

    Args:
        try_connect: ``(timeout, wait_for_listener) -> stream``.
        try_listen: ``() -> listener``.
    Returns:
        The connected stream, or the listener this side now owns.
    """
    while True:
        try:
            return try_connect(deadline.remaining(), False)
        except PipeNotFoundError:
            pass
        try:
            return try_listen()
        except PipeInUseError:
            # Another starter won the name and is about to bind: give it a moment.
            left = deadline.remaining()
            try:
                return try_connect(0.5 if left is None else min(0.5, left), True)
            except (PipeTimeoutError, PipeNotFoundError):
                if deadline.expired():
                    raise PipeTimeoutError(
                        "could not meet a peer before the deadline",
                        timeout=deadline.timeout,
                    ) from None
                time.sleep(0.001)


_DATA: Final = b"\x00npipes-ipc/1 message"
"""Header frame: the next frame is a message without a CRC-32."""
_DATA_CRC: Final = b"\x00npipes-ipc/1 message+crc"
"""Header frame: the next frame is a message with a CRC-32."""
_ACK: Final = b"\x00npipes-ipc/1 ack"
"""A ``receive_message`` took the oldest message not yet acknowledged."""
_ACK_GRACE: Final = 1.0
"""Seconds an ack may take to go out even when the call's own time is used up."""


def _close_all(state: dict[str, Connection | Listener | None]) -> None:
    for key in ("conn", "listener"):
        obj = state.pop(key, None)
        if obj is not None:
            obj.close()


def _check_crc(crc: object, codec: Codec) -> None:
    if not isinstance(crc, bool):
        raise TypeError(f"crc must be True or False, not {crc!r}")
    if crc and not codec.supports_crc:
        raise ValueError(
            f"the {codec.name} framing has no checksum: crc=True is not available"
            " (use framing='npipes' or 'npipes1', or leave crc off)"
        )


def _check_message(message: object) -> None:
    if isinstance(message, str):
        return
    try:
        view = memoryview(message)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"a message is a str or a bytes-like object (bytes, bytearray, memoryview...),"
            f" not {type(message).__name__}"
        ) from None
    with view:
        if not view.contiguous:
            raise ValueError(
                "a message must be one contiguous buffer; copy it first"
                " (bytes(view), or numpy.ascontiguousarray(array))"
            )


@dataclass(frozen=True, slots=True)
class _Arrived:
    """A message read from the peer (during a send or a receive), for ``receive_message``."""

    conn: Connection
    message: bytes | str | None
    has_crc: bool
    error: ChecksumError | None = None


@final
class IPC:
    """Talk to one peer over ``name``; either side may start first.

    With the default framing a message that :meth:`send_message` returned
    from has been taken by the peer's :meth:`receive_message` (see the module
    docstring); two sides that both send first wait, or time out.

    Args:
        name: pipe name shared by both sides (default ``"IPC_PIPE_DEFAULT"``, as in 1.x).
        timeout: seconds each ``send_message``/``receive_message`` may take,
            including waiting for the peer; None waits as long as it takes.
        max_message_size: largest message sent or accepted, in bytes.
        framing: the wire format (``"npipes1"`` talks to npipes 1.x programs,
            including their one-message-per-connection senders).
        acknowledge: the delivery rule above; the default is on for
            ``framing="npipes"``. Off (and always with other framings, whose
            peers cannot acknowledge), ``send_message`` returns once the
            message is handed to the OS, as in 1.x: the peer gets it if it
            receives, and two senders that meet can each "send" into the other.
            Turn it off to talk to a plain :func:`npipes.connect`/:func:`npipes.listen`
            peer on the default framing.
    Raises:
        ValueError: an unknown framing, or ``acknowledge=True`` with a framing other
            than ``"npipes"``.
    """

    def __init__(
        self,
        name: str = DEFAULT_NAME,
        *,
        timeout: float | None = None,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        framing: str | Codec = "npipes",
        acknowledge: bool | None = None,
    ) -> None:
        codec = get_codec(framing)  # an unknown framing fails here, before any waiting
        can_ack = isinstance(framing, str) and framing == "npipes"
        if acknowledge is None:
            acknowledge = can_ack
        elif not isinstance(acknowledge, bool):
            raise TypeError(f"acknowledge must be True, False or None, not {acknowledge!r}")
        elif acknowledge and not can_ack:
            raise ValueError(
                f"acknowledge=True needs framing='npipes'; a {codec.name} peer cannot"
                " acknowledge (leave acknowledge unset)"
            )
        self.name: Final = name
        self.framing: Final = framing
        self.timeout: Final = timeout
        self.max_message_size: Final = max_message_size
        self._codec: Final = codec
        self._acknowledged: Final = acknowledge
        self._message: bytes | str | None = None
        self._closed = False
        # One call at a time: a message is two frames and its ack comes back on the
        # same connection, so two threads reading it at once would mix them up.
        self._call_lock = threading.Lock()
        # Per connection (reset when the peer changes): messages sent and not yet
        # acknowledged, and the CRC flag of a header whose message is still to come.
        self._unacked = 0
        self._header: bool | None = None
        self._arrived: deque[_Arrived] = deque()
        self._peers_met = 0
        self._sending = False  # the call under way is a send_message (for the log level)
        # Shared with the finalizer, so objects are closed at exit without warnings.
        self._state: dict[str, Connection | Listener | None] = {}
        self._finalizer = weakref.finalize(self, _close_all, self._state)
        self._meet(Deadline(timeout))

    # -- the seed's API -------------------------------------------------------

    @property
    def message(self) -> bytes | str | None:
        """The last message received (None before the first)."""
        return self._message

    @property
    def peer(self) -> PeerInfo | None:
        """Who is at the other end now (pid, uid, gid where the OS tells), or None
        while no peer is connected (the IPC connects or listens again as needed)."""
        conn = self._state.get("conn")
        return conn.peer if isinstance(conn, Connection) else None

    @property
    def reconnects(self) -> int:
        """How many times this IPC met a new peer after losing one (the other side
        restarted or went away), like :attr:`Connection.reconnects`. Logged on the
        ``npipes`` logger: at INFO when a ``send_message`` met the new peer, at DEBUG
        when a ``receive_message`` did (a receiver taking its next sender)."""
        return max(0, self._peers_met - 1)

    def send_message(self, message: Payload, crc: bool = False) -> None:
        """Send ``message`` (``str`` arrives as ``str``, bytes as ``bytes``).

        With the default framing this returns once the peer's
        ``receive_message`` has taken the message (it acknowledges it), so the
        message is delivered even if this process exits right away. If the
        peer leaves without taking it, it goes to the next peer on the name.

        Args:
            crc: add a CRC-32 that the receiver verifies.
        Raises:
            TypeError: ``message`` is not ``str`` or bytes-like, or ``crc`` not a bool.
            ValueError: ``crc=True`` with a framing that has no checksum, or a
                non-contiguous buffer.
            ConnectionClosedError: this IPC was closed.
            PipeTimeoutError: no ``receive_message`` took it in time (its
                ``timeout`` is this IPC's). A message already handed over may
                still be received by the peer's next ``receive_message``.
            MessageTooLargeError: above ``max_message_size``.
        """
        _check_message(message)
        _check_crc(crc, self._codec)
        self._check_open()
        deadline = Deadline(self.timeout)
        with self._one_call(deadline):
            self._sending = True
            try:
                if self._acknowledged:
                    self._send_acknowledged(message, crc, deadline)
                else:
                    self._send_unacknowledged(message, crc, deadline)
            except PipeTimeoutError as exc:
                raise self._timed_out(
                    exc, "no peer took the message", "is a receive_message running there?"
                ) from exc
            finally:
                self._sending = False

    def receive_message(self, crc: bool = False) -> bytes | str:
        """Wait for the next message and return it (also kept in :attr:`message`).

        With the default framing the sender is told the message arrived
        before this returns (its ``send_message`` then returns too).

        Args:
            crc: require a CRC-32 on the message (``ChecksumError`` if absent or wrong).
        Raises:
            TypeError: ``crc`` is not a bool.
            ValueError: ``crc=True`` with a framing that has no checksum.
            ConnectionClosedError: this IPC was closed.
            PipeTimeoutError: nothing arrived in time (its ``timeout`` is this IPC's).
            ChecksumError: the CRC was wrong or missing; the connection stays usable.
            IncompleteMessageError: the peer died in the middle of the message.
            ProtocolError: the peer does not speak the IPC protocol (a plain
                :func:`npipes.connect` peer on the default framing).
        """
        _check_crc(crc, self._codec)
        self._check_open()
        deadline = Deadline(self.timeout)
        with self._one_call(deadline):
            try:
                message = self._receive(crc, deadline)
            except PipeTimeoutError as exc:
                raise self._timed_out(exc, "no message arrived", "is a sender running?") from exc
        self._message = message
        return message

    # -- lifetime -------------------------------------------------------------

    def close(self) -> None:
        """Close the connection and stop listening; idempotent.

        Later calls raise :class:`ConnectionClosedError`: make a new ``IPC`` to
        talk again.
        """
        self._closed = True
        self._arrived.clear()
        _close_all(self._state)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- acknowledged delivery ------------------------------------------------

    def _send_acknowledged(self, message: Payload, crc: bool, deadline: Deadline) -> None:
        while True:
            conn = self._connection(deadline)
            try:
                # One call: a message above the limit fails before the header goes out.
                conn.send_many(
                    [_DATA_CRC if crc else _DATA, message], crc=crc, timeout=deadline.remaining()
                )
                self._unacked += 1
                while self._unacked:  # acks come in order: the last one is ours
                    if self._arrived_cost(conn) >= READ_AHEAD:
                        self._wait_out(deadline)  # the peer floods us: read no further
                    self._read(conn, deadline)
                return
            except IncompleteMessageError:
                self._drop()  # the peer died mid-way through its own message
            except ConnectionClosedError:
                # The peer left without acknowledging: it never returned the message
                # from receive_message (an ack precedes that). Give it to the next peer.
                self._drop()

    def _arrived_cost(self, conn: Connection) -> int:
        """Bytes of ``conn``'s messages read and not yet taken, besides the largest one
        (one message of any size up to the limit is always read: the ack may be next)."""
        costs = [
            ITEM_COST + (0 if a.message is None else len(a.message))
            for a in self._arrived
            if a.conn is conn
        ]
        return sum(costs) - max(costs, default=0)

    def _wait_out(self, deadline: Deadline) -> None:
        """Wait for the deadline (or close()) without reading, then raise PipeTimeoutError.

        An honest peer has one unacknowledged message at a time (a few more after
        its own sends timed out): one that keeps sending past the read-ahead budget
        while this side waits for its ack must not fill this process's memory. The
        ack may be behind its messages: this send is then not confirmed (it timed out).
        """
        while not deadline.expired():
            self._check_open()
            left = deadline.remaining()
            time.sleep(0.05 if left is None else min(0.05, left))
        raise PipeTimeoutError(
            f"the peer sent more than {READ_AHEAD} bytes of messages while this side waited"
            " for its acknowledgement; they are kept for receive_message, the rest is not read",
            timeout=deadline.timeout,
        )

    def _send_unacknowledged(self, message: Payload, crc: bool, deadline: Deadline) -> None:
        conn = self._connection(deadline)
        try:
            conn.send(message, crc=crc, timeout=deadline.remaining())
        except ConnectionClosedError:
            # The peer we had left; the message did not go out. Meet the next one.
            self._drop()
            conn = self._connection(deadline)
            conn.send(message, crc=crc, timeout=deadline.remaining())

    def _receive(self, crc: bool, deadline: Deadline) -> bytes | str:
        while True:
            if self._arrived:
                return self._take(self._arrived.popleft(), crc, deadline)
            conn = self._connection(deadline)
            try:
                if self._acknowledged:
                    self._read(conn, deadline)
                    continue  # an ack of ours, or the message now waits in _arrived
                return conn.recv(timeout=deadline.remaining(), crc=crc)
            except IncompleteMessageError:
                self._drop()
                raise
            except ConnectionClosedError:
                self._drop()  # the peer left between messages: wait for the next one

    def _read(self, conn: Connection, deadline: Deadline) -> None:
        """Read one unit from the peer: an ack (counted) or a message (kept in order).

        A CRC-32 that is present is verified here; whether one was required is
        decided when ``receive_message`` takes the message (:meth:`_take`), so
        a message is judged the same whether it arrived during a send or a receive.
        """
        if self._header is None:
            frame = conn.recv(timeout=deadline.remaining())
            if frame == _ACK and self._unacked:
                self._unacked -= 1
                return
            if frame not in (_DATA, _DATA_CRC):
                conn.close()
                raise ProtocolError(
                    f"the peer on {self.name!r} does not speak the IPC protocol (it sent"
                    f" {'an unexpected ack' if frame == _ACK else 'a message without its header'});"
                    " use IPC on both sides, or IPC(..., acknowledge=False) with a plain"
                    " npipes.connect/listen peer",
                    name=self.name,
                )
            self._header = frame == _DATA_CRC
        has_crc = self._header
        try:
            message = conn.recv(timeout=deadline.remaining())
        except ChecksumError as exc:
            self._header = None
            self._arrived.append(_Arrived(conn, None, has_crc, exc))
            return
        self._header = None
        self._arrived.append(_Arrived(conn, message, has_crc))

    def _take(self, arrived: _Arrived, crc: bool, deadline: Deadline) -> bytes | str:
        """Acknowledge a message (so its sender returns), then hand it over or raise."""
        conn = self._state.get("conn")
        if arrived.conn is conn and not arrived.conn.closed:
            left = deadline.remaining()
            try:
                # A little grace past the deadline: an ack that cannot go out costs
                # the connection (the count of acks would be off by one).
                arrived.conn.send(_ACK, timeout=None if left is None else max(left, _ACK_GRACE))
            except (ConnectionClosedError, PipeTimeoutError):
                # The sender is gone or stuck; the message is here all the same, and
                # its sender learns from the missing ack (it timed out or will).
                self._drop()
        if arrived.error is not None:
            raise arrived.error
        if crc and not arrived.has_crc:
            raise ChecksumError(
                "the message has no CRC-32 but crc=True requires one;"
                " send it with crc=True, or receive with crc=False",
                name=self.name,
            )
        assert arrived.message is not None
        return arrived.message

    # -- internals ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionClosedError(
                f"this IPC on {self.name!r} is closed; create a new IPC to talk again",
                name=self.name,
            )

    @contextmanager
    def _one_call(self, deadline: Deadline) -> Iterator[None]:
        left = deadline.remaining()
        if not self._call_lock.acquire(timeout=-1 if left is None else left):
            raise PipeTimeoutError(
                "another thread's call on this IPC still runs", timeout=self.timeout
            )
        try:
            yield
        finally:
            self._call_lock.release()

    def _timed_out(self, exc: PipeTimeoutError, what: str, hint: str) -> PipeTimeoutError:
        return PipeTimeoutError(
            f"{what} on {self.name!r} within the IPC's timeout of {seconds(self.timeout)} ({hint})",
            timeout=self.timeout,
            partial=exc.partial,
            name=self.name,
            address=exc.address,
        )

    def _meet(self, deadline: Deadline) -> None:
        got = rendezvous(
            deadline,
            lambda timeout, wait: connect(
                self.name,
                timeout=timeout,
                wait_for_listener=wait,
                max_message_size=self.max_message_size,
                framing=self.framing,
            ),
            lambda: listen(self.name, max_message_size=self.max_message_size, framing=self.framing),
        )
        if isinstance(got, Connection):
            self._met(got)
        else:
            self._state["listener"] = got

    def _connection(self, deadline: Deadline) -> Connection:
        self._check_open()  # close() from another thread: do not meet a new peer
        conn = self._state.get("conn")
        if conn is not None and not conn.closed:
            assert isinstance(conn, Connection)
            return conn
        self._drop()
        if self._state.get("listener") is None:
            self._meet(deadline)
            conn = self._state.get("conn")
            if conn is not None:
                assert isinstance(conn, Connection)
                return conn
        listener = self._state["listener"]
        assert isinstance(listener, Listener)
        conn = listener.accept(timeout=deadline.remaining())
        self._met(conn)
        return conn

    def _met(self, conn: Connection) -> None:
        """``conn`` is the new peer's connection: keep it, count a reconnect after the first.

        A sender that had to meet a new receiver logs it at INFO (as ``reconnect=True``
        does); a receiver taking its next sender is its normal life (one per message with
        1.x senders), logged at DEBUG."""
        if self._closed:  # close() from another thread while this call met the peer
            conn.close()
            self._check_open()
        self._state["conn"] = conn
        self._peers_met += 1
        if self._peers_met > 1:
            log.log(
                logging.INFO if self._sending else logging.DEBUG,
                "IPC %r met a new peer (pid %s); reconnect number %d",
                self.name,
                conn.peer.pid,
                self.reconnects,
            )

    def _drop(self) -> None:
        """Forget the current peer (a listening side keeps its listener for the next)."""
        conn = self._state.pop("conn", None)
        if conn is not None:
            conn.close()
        self._unacked = 0
        self._header = None
