"""The npipes exception tree, and the one place OS errors are translated.

Every npipes error derives from :class:`NpipesError` *and* from the builtin
exception a caller would naturally catch, so ``except TimeoutError`` or
``except ConnectionError`` works without knowing npipes::

    NpipesError
    ├── ProtocolError            (ConnectionError)  bytes on the wire break the format
    ├── ChecksumError            (ValueError)       CRC-32 mismatch; that message only
    ├── MessageTooLargeError     (ValueError)       above max_message_size
    ├── BufferTooSmallError      (ValueError)       recv_into() buffer shorter than the message
    ├── ConnectionClosedError    (ConnectionError)  the peer, or you, closed it
    │   ├── IncompleteMessageError                  closed in the middle of a frame
    │   └── SlowSubscriberError                     dropped by a publisher: fell behind
    ├── PipeTimeoutError         (TimeoutError)     a deadline passed
    ├── PipeNotFoundError        (FileNotFoundError) nobody listens on that name
    ├── PipeInUseError           (FileExistsError)  somebody already listens on that name
    ├── PipeBusyError            (ConnectionError)  the listener cannot take a connection now
    ├── InvalidPipeNameError     (ValueError)       the name breaks a naming rule
    ├── PipePermissionError      (PermissionError)  the OS or the peer check said no
    │   └── AuthenticationError                     a handshake key did not match
    ├── PipeOSError              (OSError)          any other OS error (EMFILE, ...)
    ├── RemoteError              (RuntimeError)     the peer's respond function raised
    └── PickleNotAllowedError    (PermissionError)  recv_pyobj without allow_pickle=True

Errors translated from an OS error (every ``OSError`` subclass above) keep its
``errno``, ``strerror`` and ``filename``, and ``winerror`` for a Windows error,
so ``except OSError as exc: exc.errno`` works as for the builtin error.

Whether an error left the connection usable is documented per error and
exposed as ``Connection.closed``: a framing error closes it, a bad checksum
or bad UTF-8 in one message does not.
"""

from __future__ import annotations

import errno as _errno

__all__ = [
    "AuthenticationError",
    "BufferTooSmallError",
    "ChecksumError",
    "ConnectionClosedError",
    "IncompleteMessageError",
    "InvalidPipeNameError",
    "MessageTooLargeError",
    "NpipesError",
    "PickleNotAllowedError",
    "PipeBusyError",
    "PipeInUseError",
    "PipeNotFoundError",
    "PipeOSError",
    "PipePermissionError",
    "PipeTimeoutError",
    "ProtocolError",
    "RemoteError",
    "SlowSubscriberError",
    "translate_os_error",
    "translate_winerror",
]


class NpipesError(Exception):
    """Base class of every error npipes raises.

    Attributes:
        name: the pipe name the operation used, when known.
        address: the OS path (socket file or ``\\\\.\\pipe\\...``), when known.
    """

    name: str | None = None
    address: str | None = None

    def __init__(self, message: str, *, name: str | None = None, address: str | None = None):
        super().__init__(message)
        self.name = name
        self.address = address

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ProtocolError(NpipesError, ConnectionError):
    """The peer sent bytes that break the wire format.

    For a broken header (magic, version, reserved bits) the connection is
    closed, since frame boundaries are lost. For invalid UTF-8 in a TEXT frame
    only that message fails and the connection stays usable.
    """


class ChecksumError(NpipesError, ValueError):
    """A message's CRC-32 did not match, or a ``crc=True`` side got a frame
    without one. That message is dropped; the connection stays usable."""


class MessageTooLargeError(NpipesError, ValueError):
    """A message is larger than ``max_message_size``.

    On receive the connection is closed (the payload was not read). On send,
    nothing was written and the connection stays usable.

    Attributes:
        size: the message size in bytes.
        limit: the limit it exceeded, in bytes.
    """

    def __init__(
        self,
        message: str,
        *,
        size: int,
        limit: int,
        name: str | None = None,
        address: str | None = None,
    ):
        super().__init__(message, name=name, address=address)
        self.size = size
        self.limit = limit


class BufferTooSmallError(NpipesError, ValueError):
    """``recv_into`` got a buffer shorter than the next message.

    Nothing was consumed: call ``recv()`` or ``recv_into`` with a buffer of at
    least ``size`` bytes to get the message.
    """

    def __init__(self, message: str, *, size: int, name: str | None = None):
        super().__init__(message, name=name)
        self.size = size


class ConnectionClosedError(NpipesError, ConnectionError):
    """The connection is closed: the peer closed it or went away, or you did."""


class IncompleteMessageError(ConnectionClosedError):
    """The peer went away in the middle of a message; that message is lost."""


class SlowSubscriberError(ConnectionClosedError):
    """The publisher disconnected this subscriber because it fell behind: its
    queue at the publisher passed ``max_queue`` bytes. Messages published after
    that are lost to it; subscribe again, and read faster (or raise the
    publisher's ``max_queue``, or publish with ``on_slow="block"``)."""


class PipeTimeoutError(NpipesError, TimeoutError):
    """A deadline passed before the operation finished.

    Attributes:
        timeout: the timeout in seconds that expired.
        partial: True if the operation had moved part of a frame; the
            connection was then closed, since the stream is out of step.
    """

    def __init__(
        self,
        message: str,
        *,
        timeout: float | None = None,
        partial: bool = False,
        name: str | None = None,
        address: str | None = None,
    ):
        super().__init__(message, name=name, address=address)
        self.timeout = timeout
        self.partial = partial


class PipeNotFoundError(NpipesError, FileNotFoundError):
    """Nobody listens on that name. Start the listener first, or connect with
    ``wait_for_listener=True`` and a timeout."""


class PipeInUseError(NpipesError, FileExistsError):
    """Another live listener already owns that name."""


class PipeBusyError(NpipesError, ConnectionError):
    """The listener exists but cannot take another connection right now."""


class InvalidPipeNameError(NpipesError, ValueError):
    """The name breaks a naming rule; the message says which."""


class PipePermissionError(NpipesError, PermissionError):
    """The OS refused access, or the endpoint failed an ownership check."""


class AuthenticationError(PipePermissionError):
    """The peer failed the authentication handshake."""


class PipeOSError(NpipesError, OSError):
    """An OS error with no more specific class above, e.g. ``EMFILE`` on accept.

    It keeps the OS error's ``errno``, ``strerror`` (and ``winerror`` on a
    Windows error), so a caller can still tell the causes apart; the original
    exception is also its ``__cause__``.
    """


class RemoteError(NpipesError, RuntimeError):
    """The peer's ``respond`` function raised while handling this request.

    The server logged it and kept the connection open: the next request works.

    Attributes:
        remote_type: the name of the exception class raised on the peer's side.
        remote_message: its message.
    """

    def __init__(
        self,
        message: str,
        *,
        remote_type: str = "",
        remote_message: str = "",
        name: str | None = None,
        address: str | None = None,
    ):
        super().__init__(message, name=name, address=address)
        self.remote_type = remote_type
        self.remote_message = remote_message


class PickleNotAllowedError(NpipesError, PermissionError):
    """``recv_pyobj`` on a connection made without ``allow_pickle=True``.

    Unpickling runs code chosen by the sender, so it is off unless you trust
    the peer (same user, ``allowed_uids``, ``authkey``) and opt in. Nothing
    was received: use ``recv()`` or ``recv_json()``, or connect/listen with
    ``allow_pickle=True``.
    """


def _keep_os_fields(
    err: NpipesError,
    *,
    errno: int | None,
    strerror: str | None,
    filename: object = None,
    winerror: int | None = None,
) -> NpipesError:
    """Copy an OS error's fields onto the npipes error for it, if that is an OSError."""
    if isinstance(err, OSError):  # every class the tables below map to is one
        err.errno = errno
        err.strerror = strerror
        err.filename = filename
        if winerror is not None:
            # OSError.winerror exists (and typeshed declares it) only on Windows builds.
            setattr(err, "winerror", winerror)  # noqa: B010
    return err


# errno -> (error class, what to do). One table, used by every POSIX backend.
_ERRNO_TABLE: dict[int, tuple[type[NpipesError], str]] = {
    _errno.ENOENT: (
        PipeNotFoundError,
        "nobody listens there; start the listener first"
        " or pass wait_for_listener=True with a timeout",
    ),
    _errno.ECONNREFUSED: (
        PipeNotFoundError,
        "nobody listens there (a stale socket file);"
        " start the listener first or pass wait_for_listener=True",
    ),
    _errno.EACCES: (
        PipePermissionError,
        "the OS denied access; the endpoint belongs to another user",
    ),
    _errno.EPERM: (PipePermissionError, "the OS denied access"),
    _errno.EADDRINUSE: (PipeInUseError, "another listener owns that address"),
    _errno.EAGAIN: (PipeBusyError, "the listener's backlog is full; retry later"),
    _errno.EPIPE: (ConnectionClosedError, "the peer closed the connection"),
    _errno.ECONNRESET: (ConnectionClosedError, "the peer closed the connection"),
    _errno.ENOTCONN: (ConnectionClosedError, "the connection is not connected"),
    _errno.EBADF: (ConnectionClosedError, "the connection was closed"),
}


def translate_os_error(
    exc: OSError, what: str, *, name: str | None = None, address: str | None = None
) -> NpipesError:
    """Map an ``OSError`` from a backend to the npipes error for it.

    Args:
        exc: the OS error; callers ``raise translate_os_error(...) from exc``.
        what: the operation that failed, e.g. ``"connect to 'jobs'"``.
    Returns:
        The npipes error to raise: the table's class, or :class:`PipeOSError`
        carrying the OS message when no entry fits. Either is an ``OSError``
        with the same ``errno``, ``strerror``, ``filename`` (and ``winerror``).
    """
    where = f" ({address})" if address else ""
    entry = _ERRNO_TABLE.get(exc.errno or 0)
    if entry is None:
        cls: type[NpipesError] = PipeOSError
        hint = exc.strerror or str(exc)
        code_name = _errno.errorcode.get(exc.errno or -1)
        if code_name:
            hint += f" ({code_name})"
    else:
        cls, hint = entry
    return _keep_os_fields(
        cls(f"{what}{where} failed: {hint}", name=name, address=address),
        errno=exc.errno,
        strerror=exc.strerror,
        filename=exc.filename,
        winerror=getattr(exc, "winerror", None),
    )


# Win32 error code -> (error class, what to do). Used by the Windows backend;
# pywin32's ``pywintypes.error`` is not an OSError (pywin32 #486), so the code
# comes in as a number.
_WINERROR_TABLE: dict[int, tuple[type[NpipesError], str]] = {
    2: (
        PipeNotFoundError,
        "no such pipe (ERROR_FILE_NOT_FOUND); start the listener first"
        " or pass wait_for_listener=True with a timeout",
    ),
    3: (PipeNotFoundError, "no such pipe (ERROR_PATH_NOT_FOUND)"),
    5: (
        PipePermissionError,
        "access denied (ERROR_ACCESS_DENIED); the pipe belongs to another"
        " user or its security descriptor does not let you in",
    ),
    109: (ConnectionClosedError, "the peer closed the pipe (ERROR_BROKEN_PIPE)"),
    121: (PipeBusyError, "every pipe instance stayed busy (ERROR_SEM_TIMEOUT)"),
    231: (PipeBusyError, "every pipe instance is busy (ERROR_PIPE_BUSY); retry with a timeout"),
    232: (ConnectionClosedError, "the pipe is being closed (ERROR_NO_DATA)"),
    233: (ConnectionClosedError, "no process is on the other end (ERROR_PIPE_NOT_CONNECTED)"),
    995: (ConnectionClosedError, "the operation was cancelled (ERROR_OPERATION_ABORTED)"),
    6: (ConnectionClosedError, "the handle is closed (ERROR_INVALID_HANDLE)"),
}


def translate_winerror(
    code: int, message: str, what: str, *, name: str | None = None, address: str | None = None
) -> NpipesError:
    """Map a Win32 error code from the Windows backend to the npipes error for it.

    Returns:
        The table's class, or :class:`PipeOSError` when no entry fits; either is
        an ``OSError`` with ``winerror=code``, ``strerror=message`` and the
        ``errno`` Python itself derives from that code (None off Windows).
    """
    where = f" ({address})" if address else ""
    entry = _WINERROR_TABLE.get(code)
    if entry is None:
        cls: type[NpipesError] = PipeOSError
        text = f"{what}{where} failed: {message} (Windows error {code})"
    else:
        cls, hint = entry
        text = f"{what}{where} failed: {hint}"
    # OSError(None, text, None, winerror) maps winerror to errno on Windows (PC/errmap.h).
    errno = OSError(None, message, None, code).errno
    return _keep_os_fields(
        cls(text, name=name, address=address), errno=errno, strerror=message, winerror=code
    )
