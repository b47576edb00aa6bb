"""``raw-socket``: the best plain-Python loop over a Unix socket (the POSIX baseline).

Wire: an 8-byte little-endian length, then the payload. Sending: small
messages as one ``sendall(header + payload)`` (a copy of a few bytes beats a
second iovec), larger ones as ``sendmsg([header, payload])`` with no copy.
Receiving: small messages are parsed out of one 64 KiB buffer, many per
``recv_into``; a message too big for it is read with ``recv_into`` straight
into one reusable buffer, sized to the largest message seen.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
from typing import TYPE_CHECKING, ClassVar, final

from .base import SyncContender, SyncEnd, SyncServer

if TYPE_CHECKING:
    from .base import Data, Recv, Send

assert sys.platform != "win32"

__all__ = ["RawSocket"]

_HEADER = struct.Struct("<Q")
_CHUNK = 64 * 1024
_JOIN_MAX = 1024  # up to this payload size, header + payload is one copied bytes


@final
class RawSocketEnd(SyncEnd):
    """Length-prefixed messages over a connected stream socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray(_CHUNK)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._big = memoryview(bytearray(0))

    def sender(self, size: int) -> Send:
        return self.send_small if size <= _JOIN_MAX else self.send_large

    def receiver(self, size: int) -> Recv:
        return self.recv

    def send_small(self, payload: Data) -> None:
        self._sock.sendall(_HEADER.pack(len(payload)) + payload)

    def send_large(self, payload: Data) -> None:
        header = _HEADER.pack(len(payload))
        sent = self._sock.sendmsg([header, payload])
        if sent < len(header) + len(payload):  # only on a signal
            rest = memoryview(header + bytes(payload))[sent:]
            self._sock.sendall(rest)

    def recv(self) -> bytes | bytearray | memoryview:
        start, end = self._start, self._end
        if end - start >= 8:
            (size,) = _HEADER.unpack_from(self._buf, start)
            stop = start + 8 + size
            if stop <= end:
                self._start = stop
                return self._buf[start + 8 : stop]
        return self._recv_more()

    def _recv_more(self) -> bytes | bytearray | memoryview:
        while True:
            start, end = self._start, self._end
            if end - start >= 8:
                (size,) = _HEADER.unpack_from(self._buf, start)
                if size + 8 > _CHUNK:
                    return self._recv_big(size)
                if start + 8 + size <= end:
                    return self.recv()
                if start + 8 + size > _CHUNK:  # no room behind: move the tail to the front
                    self._compact()
            elif start == end:
                self._start = self._end = 0
            elif _CHUNK - start < 8:
                self._compact()
            count = self._sock.recv_into(self._view[self._end :])
            if not count:
                raise EOFError("the peer closed the connection")
            self._end += count

    def _compact(self) -> None:
        count = self._end - self._start
        self._buf[:count] = self._buf[self._start : self._end]
        self._start, self._end = 0, count

    def _recv_big(self, size: int) -> memoryview:
        if len(self._big) < size:
            self._big = memoryview(bytearray(size))
        big = self._big
        begin = self._start + 8
        have = self._end - begin
        big[:have] = self._view[begin : self._end]
        self._start = self._end = 0
        recv_into = self._sock.recv_into
        while have < size:
            count = recv_into(big[have:size])
            if not count:
                raise EOFError("the peer closed the connection mid-message")
            have += count
        return big[:size]

    def close(self) -> None:
        self._sock.close()


@final
class _Server(SyncServer):
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def accept(self) -> SyncEnd:
        conn, _ = self._sock.accept()
        return RawSocketEnd(conn)

    def close(self) -> None:
        self._sock.close()


@final
class RawSocket(SyncContender):
    name: ClassVar[str] = "raw-socket"
    summary: ClassVar[str] = (
        "AF_UNIX stream, 8-byte length + sendmsg; recv_into 64 KiB chunks / an exact-size buffer"
    )
    platforms: ClassVar[frozenset[str]] = frozenset({"posix"})
    baseline: ClassVar[bool] = True

    def address(self, tag: str, tmpdir: str) -> str:
        return os.path.join(tmpdir, f"{tag}.sock")

    def listen(self, address: str) -> SyncServer:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # noqa: TID251 - a contender
        sock.bind(address)
        sock.listen(1)
        return _Server(sock)

    def connect(self, address: str) -> SyncEnd:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # noqa: TID251 - a contender
        sock.connect(address)
        return RawSocketEnd(sock)
