"""The seed's facade: ``IPC().send_message(...)`` / ``IPC().receive_message()``.

npipes 1.x users wrote one line on each side and let the library sort out who
serves. :class:`IPC` keeps that: whichever side comes first listens, the
second connects (a race between two starters ends with one listener, thanks
to the backend's endpoint lock), and the connection then persists so both
sides can send and receive in any order. It is built on the public
:func:`npipes.connect`/:func:`npipes.listen`, not on private I/O.

If the peer goes away cleanly, the next call waits for a new peer on the same
name (a listening side accepts again; a connecting side meets whoever comes
next), so a long-running receiver keeps working across short-lived senders.
"""

from __future__ import annotations

import time
import weakref
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self, TypeVar, final

from ._deadline import Deadline
from ._frame import DEFAULT_MAX_MESSAGE_SIZE
from .connection import Connection, Listener, connect, listen
from .errors import (
    ConnectionClosedError,
    IncompleteMessageError,
    PipeInUseError,
    PipeNotFoundError,
    PipeTimeoutError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._framings import Codec
    from ._types import Payload

__all__ = ["DEFAULT_NAME", "IPC", "rendezvous"]

DEFAULT_NAME: Final = "IPC_PIPE_DEFAULT"
"""The pipe name npipes 1.x used when none was given."""

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


def _close_all(state: dict[str, Connection | Listener | None]) -> None:
    for key in ("conn", "listener"):
        obj = state.pop(key, None)
        if obj is not None:
            obj.close()


@final
class IPC:
    """Talk to one peer over ``name``; either side may start first.

    Args:
        name: pipe name shared by both sides (default ``"IPC_PIPE_DEFAULT"``, as in 1.x).
        timeout: seconds each ``send_message``/``receive_message`` may take,
            including waiting for the peer; None waits as long as it takes.
        max_message_size: largest message sent or accepted, in bytes.
        framing: the wire format (``"npipes1"`` talks to npipes 1.x programs,
            including their one-message-per-connection senders).
    """

    def __init__(
        self,
        name: str = DEFAULT_NAME,
        *,
        timeout: float | None = None,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        framing: str | Codec = "npipes",
    ) -> None:
        self.name: Final = name
        self.framing: Final = framing
        self.timeout: Final = timeout
        self.max_message_size: Final = max_message_size
        self._message: bytes | str | None = None
        # Shared with the finalizer, so objects are closed at exit without warnings.
        self._state: dict[str, Connection | Listener | None] = {}
        self._finalizer = weakref.finalize(self, _close_all, self._state)
        self._meet(Deadline(timeout))

    # -- the seed's API -------------------------------------------------------

    @property
    def message(self) -> bytes | str | None:
        """The last message received (None before the first)."""
        return self._message

    def send_message(self, message: Payload, crc: bool = False) -> None:
        """Send ``message`` (``str`` arrives as ``str``, bytes as ``bytes``).

        When this returns, the message is handed to the OS and is delivered
        even if this process exits right away.

        Args:
            crc: add a CRC-32 that the receiver verifies.
        Raises:
            PipeTimeoutError: no peer came, or it did not take the message, in time.
            MessageTooLargeError: above ``max_message_size``.
        """
        deadline = Deadline(self.timeout)
        conn = self._connection(deadline)
        try:
            conn.send(message, crc=crc, timeout=deadline.remaining())
        except ConnectionClosedError:
            # The peer we had left; the message did not go out. Meet the next one.
            self._drop()
            conn = self._connection(deadline)
            conn.send(message, crc=crc, timeout=deadline.remaining())

    def receive_message(self, crc: bool = False) -> bytes | str:
        """Wait for the next message and return it (also kept in :attr:`message`).

        Args:
            crc: require a CRC-32 on the message (``ChecksumError`` if absent or wrong).
        Raises:
            PipeTimeoutError: nothing arrived in time.
            ChecksumError: the CRC was wrong or missing; the connection stays usable.
            IncompleteMessageError: the peer died in the middle of the message.
        """
        deadline = Deadline(self.timeout)
        while True:
            conn = self._connection(deadline)
            try:
                message = conn.recv(timeout=deadline.remaining(), crc=crc)
            except IncompleteMessageError:
                self._drop()
                raise
            except ConnectionClosedError:
                self._drop()  # the peer left between messages: wait for the next one
                continue
            self._message = message
            return message

    # -- lifetime -------------------------------------------------------------

    def close(self) -> None:
        """Close the connection and stop listening; idempotent."""
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

    # -- internals ------------------------------------------------------------

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
        key = "conn" if isinstance(got, Connection) else "listener"
        self._state[key] = got

    def _connection(self, deadline: Deadline) -> Connection:
        conn = self._state.get("conn")
        if conn is not None and not conn.closed:
            assert isinstance(conn, Connection)
            return conn
        if self._state.get("listener") is None:
            self._meet(deadline)
            conn = self._state.get("conn")
            if conn is not None:
                assert isinstance(conn, Connection)
                return conn
        listener = self._state["listener"]
        assert isinstance(listener, Listener)
        conn = listener.accept(timeout=deadline.remaining())
        self._state["conn"] = conn
        return conn

    def _drop(self) -> None:
        conn = self._state.pop("conn", None)
        if conn is not None:
            conn.close()
        if self._state.get("listener") is None:
            return
        # A listening side keeps its listener and accepts the next peer.
