"""npipes: message passing between processes on one machine.

Windows named pipes and Unix domain sockets behind one API, with a specified
wire format (docs/protocol.md) and an optional CRC-32::

    import npipes
    with npipes.listen("jobs") as listener, listener.accept() as conn:
        print(conn.recv())
    # elsewhere
    with npipes.connect("jobs") as conn:
        conn.send("hello")
"""

from __future__ import annotations

from ._backend import PeerInfo
from ._frame import DEFAULT_MAX_MESSAGE_SIZE, Frame
from ._framings import FRAMINGS, Codec, Decoder
from ._options import ConnectOptions, ListenOptions, Options
from ._wait import wait
from .connection import Connection, Listener, connect, listen
from .errors import (
    AuthenticationError,
    BufferTooSmallError,
    ChecksumError,
    ConnectionClosedError,
    IncompleteMessageError,
    InvalidPipeNameError,
    MessageTooLargeError,
    NpipesError,
    PickleNotAllowedError,
    PipeBusyError,
    PipeInUseError,
    PipeNotFoundError,
    PipeOSError,
    PipePermissionError,
    PipeTimeoutError,
    ProtocolError,
    RemoteError,
    SlowSubscriberError,
)
from .pubsub import Publisher, publish, subscribe
from .server import Server, serve

__version__ = "2.0.0.dev0"

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "FRAMINGS",
    "AuthenticationError",
    "BufferTooSmallError",
    "ChecksumError",
    "Codec",
    "ConnectOptions",
    "Connection",
    "ConnectionClosedError",
    "Decoder",
    "Frame",
    "IncompleteMessageError",
    "InvalidPipeNameError",
    "ListenOptions",
    "Listener",
    "MessageTooLargeError",
    "NpipesError",
    "Options",
    "PeerInfo",
    "PickleNotAllowedError",
    "PipeBusyError",
    "PipeInUseError",
    "PipeNotFoundError",
    "PipeOSError",
    "PipePermissionError",
    "PipeTimeoutError",
    "ProtocolError",
    "Publisher",
    "RemoteError",
    "Server",
    "SlowSubscriberError",
    "__version__",
    "connect",
    "listen",
    "publish",
    "serve",
    "subscribe",
    "wait",
]


def __getattr__(name: str) -> object:
    # npipes.aio imports asyncio: load it on first use, not with every `import npipes`.
    if name == "aio":
        import importlib

        return importlib.import_module(".aio", __name__)
    raise AttributeError(f"module 'npipes' has no attribute {name!r}")
