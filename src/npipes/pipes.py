"""The seed's low-level layer: :class:`Pipes`, raw bytes on a pipe endpoint.

npipes 1.x exposed ``Pipes`` with ``open``/``read``/``write``/``close`` as a
thin skin over the OS calls. This keeps that shape over the same backend the
rest of npipes uses: no framing at all, so ``read`` returns bytes as they
arrive (a byte stream on POSIX). Use :class:`npipes.ipc.IPC` or
:func:`npipes.connect` for messages.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Self, final

from . import _backend
from ._deadline import Deadline
from ._names import resolve
from .errors import ConnectionClosedError
from .ipc import DEFAULT_NAME, rendezvous

if TYPE_CHECKING:
    from ._backend import RawStream
    from ._types import Buffer

__all__ = ["Pipes"]

_READ_SIZE = 65536


@final
class Pipes:
    """Raw byte I/O on the endpoint ``pipe``; either side may open first.

    Args:
        name: the pipe name (default ``"IPC_PIPE_DEFAULT"``).
        timeout: seconds ``open``/``read``/``write`` may wait; None: no limit.
    """

    def __init__(self, name: str = DEFAULT_NAME, *, timeout: float | None = None) -> None:
        self._pipe = name
        self.timeout = timeout
        self._stream: RawStream | None = None
        self._listener: _backend.RawListener | None = None

    @property
    def pipe(self) -> str:
        """The pipe name; settable while closed."""
        return self._pipe

    @pipe.setter
    def pipe(self, name: str) -> None:
        if self._stream is not None or self._listener is not None:
            raise ValueError("close the pipe before renaming it")
        resolve(name)  # fail early on a bad name
        self._pipe = name

    @property
    def fifo(self) -> RawStream | None:
        """The open OS stream, or None while closed (the 1.x attribute name)."""
        return self._stream

    def open(self, mode: str = "read", pipe_wait: bool = True) -> bool:
        """Connect to the peer, listening first if nobody is there yet.

        Args:
            mode: ``"read"`` or ``"write"``; both ends are duplex, kept for 1.x
                compatibility.
            pipe_wait: wait for a peer (up to ``timeout``); False fails at once
                with ``PipeTimeoutError`` if no peer is ready.
        Returns:
            True (errors raise; nothing is printed or swallowed).
        """
        if mode not in ("read", "write"):
            raise ValueError(f"mode must be 'read' or 'write', not {mode!r}")
        if self._stream is not None:
            return True
        deadline = Deadline(self.timeout if pipe_wait else 0.0)
        address = resolve(self._pipe)
        if self._listener is None:
            got = rendezvous(
                deadline,
                lambda timeout, wait: _backend.connect(
                    address, Deadline(timeout), wait_for_listener=wait
                ),
                lambda: _backend.listen(address, _backend.ListenOptions()),
            )
            if isinstance(got, _backend.RawListener):
                self._listener = got
            else:
                self._stream = got
                return True
        assert self._listener is not None
        self._stream = self._listener.accept(deadline)
        return True

    def write(self, data: Buffer) -> None:
        """Write all of ``data`` (opening the pipe first if needed)."""
        self.open("write")
        assert self._stream is not None
        self._stream.send([data], Deadline(self.timeout))

    def read(self, size: int = _READ_SIZE) -> bytes:
        """Read up to ``size`` bytes as they arrive (opening the pipe first if needed).

        Raises:
            ConnectionClosedError: the peer closed the pipe and nothing is left.
        """
        self.open("read")
        assert self._stream is not None
        buf = bytearray(size)
        count = self._stream.recv_into(memoryview(buf), Deadline(self.timeout))
        if count == 0:
            raise ConnectionClosedError("the peer closed the pipe", name=self._pipe)
        return bytes(buf[:count])

    def close(self) -> None:
        """Close the stream and stop listening; idempotent."""
        stream, self._stream = self._stream, None
        listener, self._listener = self._listener, None
        if stream is not None:
            stream.close()
        if listener is not None:
            listener.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
