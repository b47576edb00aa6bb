"""The small interface every platform backend implements.

Backends move bytes and wait; they never frame. Front ends (connection.py,
aio.py, ipc.py) see only these names, so they never branch on the platform.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, final, runtime_checkable

if TYPE_CHECKING:
    from npipes._deadline import Deadline
    from npipes._names import Address
    from npipes._types import Buffer

__all__ = [
    "ListenOptions",
    "PeerInfo",
    "RawListener",
    "RawStream",
    "WaitableListener",
    "WaitableStream",
]


@final
@dataclass(frozen=True, slots=True)
class PeerInfo:
    """Who is on the other end of a connection, as the OS reports it.

    Attributes:
        pid: the peer's process id, when the OS tells.
        uid: the peer's user id (POSIX).
        gid: the peer's primary group id (POSIX).
        sid: the peer's user SID as a string (Windows), when readable.
    """

    pid: int | None
    uid: int | None = None
    gid: int | None = None
    sid: str | None = None


@final
@dataclass(frozen=True, slots=True)
class ListenOptions:
    """Backend settings of a listener.

    Attributes:
        allow_other_users: accept peers running as another user (POSIX: skip
            the uid check, socket file 0666; Windows: Authenticated Users in the DACL).
        backlog: connections the OS queues before ``accept`` (POSIX).
        allow_remote: accept SMB clients from other machines (Windows).
        allowed_users: further accounts (names or SID strings) the DACL lets in (Windows).
        security_descriptor: a full SDDL string replacing the default DACL (Windows).
    """

    allow_other_users: bool = False
    backlog: int = 128
    allow_remote: bool = False
    allowed_users: tuple[str, ...] = ()
    security_descriptor: str | None = None


class RawStream(Protocol):
    """One connected, duplex byte stream.

    Attributes:
        message_mode: reads keep the sender's message boundaries (Windows pipes).
        message_end: whether the last read ended a message (always True on a
            byte stream, where each read is a chunk).
    """

    message_mode: bool
    message_end: bool

    @property
    def peer(self) -> PeerInfo: ...

    def recv_into(self, buffer: memoryview, deadline: Deadline) -> int:
        """Read at least one byte into ``buffer``; 0 means end of stream.

        Raises:
            PipeTimeoutError: the deadline passed with nothing read.
            ConnectionClosedError: the stream broke or was closed locally.
        """
        ...

    def send(self, buffers: Sequence[Buffer], deadline: Deadline) -> None:
        """Write all ``buffers`` in order, as one unit if the OS allows.

        Raises:
            PipeTimeoutError: the deadline passed; ``partial`` says whether
                some bytes went out.
            ConnectionClosedError: the peer is gone.
        """
        ...

    def close(self) -> None:
        """Close; idempotent. Wakes a ``recv_into`` blocked in another thread."""
        ...


@runtime_checkable
class RawListener(Protocol):
    """A bound, listening endpoint."""

    @property
    def address(self) -> str: ...

    def accept(self, deadline: Deadline) -> RawStream:
        """Wait for the next peer.

        Raises:
            PipeTimeoutError: nobody came before the deadline.
            ConnectionClosedError: the listener was closed (also from another thread).
        """
        ...

    def close(self) -> None:
        """Stop listening and remove the endpoint; idempotent, thread-safe."""
        ...


@runtime_checkable
class WaitableStream(Protocol):
    """A stream ``npipes.wait`` can watch (Unix sockets, Windows pipes; not FIFOs).

    ``npipes.wait`` decides readiness with the connection core; the stream
    only says when bytes may have arrived and reads what is there without waiting.
    """

    def fileno(self) -> int:
        """The descriptor to watch (POSIX); io.UnsupportedOperation on Windows."""
        ...

    def read_available(self, buffer: memoryview) -> int | None:
        """Read what has arrived into ``buffer`` without waiting.

        Returns:
            The byte count, 0 at end of stream, None when nothing is there now.
        Raises:
            As ``recv_into`` (ConnectionClosedError, translated OS errors).
        """
        ...


@runtime_checkable
class WaitableListener(Protocol):
    """A listener ``npipes.wait`` can watch."""

    def fileno(self) -> int:
        """The descriptor to watch (POSIX); io.UnsupportedOperation on Windows."""
        ...

    def client_waiting(self) -> bool:
        """Whether ``accept`` would find a client now (without waiting)."""
        ...


class Backend(Protocol):
    """What ``npipes._backend`` exports for the current platform."""

    def listen(self, address: Address, options: ListenOptions) -> RawListener: ...

    def connect(
        self,
        address: Address,
        deadline: Deadline,
        *,
        wait_for_listener: bool,
        allowed_uids: frozenset[int] = frozenset(),
    ) -> RawStream:
        """Open the client end; POSIX refuses a listener whose uid is not ours,
        root's or in ``allowed_uids`` (Windows ignores it: its DACL decides)."""
        ...
