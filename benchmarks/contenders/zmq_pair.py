"""``pyzmq``: a PAIR socket over ``ipc://``; copy=False (zero-copy) from 64 KiB on."""

from __future__ import annotations

import functools
import importlib
import os
from typing import TYPE_CHECKING, Any, ClassVar, final

from .base import SyncContender, SyncEnd, SyncServer

if TYPE_CHECKING:
    from .base import Recv, Send

__all__ = ["Pyzmq"]

_ZERO_COPY_MIN = 64 * 1024  # pyzmq's copy_threshold: below it copy=False copies anyway


def _zmq() -> Any:
    return importlib.import_module("zmq")


@final
class _End(SyncEnd):
    def __init__(self, context: Any, sock: Any) -> None:
        self._context = context
        self._sock = sock

    def sender(self, size: int) -> Send:
        if size < _ZERO_COPY_MIN:
            send: Send = self._sock.send
            return send
        return functools.partial(self._sock.send, copy=False)

    def receiver(self, size: int) -> Recv:
        if size < _ZERO_COPY_MIN:
            recv: Recv = self._sock.recv
            return recv
        return functools.partial(self._sock.recv, copy=False)

    def close(self) -> None:
        self._sock.close(linger=0)
        self._context.term()


@final
class _Server(SyncServer):
    def __init__(self, context: Any, sock: Any) -> None:
        self._context = context
        self._sock = sock
        self._accepted = False

    def accept(self) -> SyncEnd:
        self._accepted = True  # PAIR: the bound socket is the connection; the end closes it
        return _End(self._context, self._sock)

    def close(self) -> None:
        if not self._accepted:
            self._sock.close(linger=0)
            self._context.term()


@final
class Pyzmq(SyncContender):
    name: ClassVar[str] = "pyzmq"
    summary: ClassVar[str] = "zmq.PAIR over ipc://, send / recv (copy=False from 64 KiB)"
    platforms: ClassVar[frozenset[str]] = frozenset({"posix"})

    def unavailable(self) -> str | None:
        try:
            _zmq()
        except ImportError:
            return "pyzmq is not installed (pip install pyzmq)"
        return super().unavailable()

    def versions(self) -> dict[str, str]:
        zmq = _zmq()
        return {"pyzmq": str(zmq.__version__), "libzmq": str(zmq.zmq_version())}

    def address(self, tag: str, tmpdir: str) -> str:
        return "ipc://" + os.path.join(tmpdir, f"{tag}.zmq")

    def _socket(self) -> tuple[Any, Any]:
        zmq = _zmq()
        context = zmq.Context()
        return context, context.socket(zmq.PAIR)

    def listen(self, address: str) -> SyncServer:
        context, sock = self._socket()
        sock.bind(address)
        return _Server(context, sock)

    def connect(self, address: str) -> SyncEnd:
        context, sock = self._socket()
        sock.connect(address)
        return _End(context, sock)
