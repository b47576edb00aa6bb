"""Windows backend: named pipes through pywin32 (the only pywin32 importer in npipes).

Strategy:
- Every handle is overlapped, and every wait is ``WaitForMultipleObjects`` on
  the operation's event plus a stop event, in slices of at most 100 ms so
  Ctrl+C (KeyboardInterrupt) lands promptly. On timeout, close or interrupt,
  the operation is cancelled with ``CancelIoEx`` (not in pywin32: ctypes) and
  awaited, so the OS never writes into a buffer we have let go of; an
  operation that completed in the meantime is kept, not dropped.
- The pipe is message-mode, but npipes frames are a byte stream: a read that
  ends with ``ERROR_MORE_DATA`` is simply a full buffer, the rest follows.
- A listener always has one instance waiting: it creates the next instance
  before returning a connected one, so clients never see "not found" between
  two accepts.
- Secure defaults: owner-only DACL (plus LocalSystem), remote clients
  rejected, ``FILE_FLAG_FIRST_PIPE_INSTANCE`` on the first instance, clients
  connect at SECURITY_IDENTIFICATION level so a server cannot impersonate them.
  A named semaphore per pipe name also makes a second npipes listener fail
  with PipeInUseError where the OS ignores the first-instance flag (Wine).
- Data already written is never discarded: close is ``CloseHandle`` only,
  never ``DisconnectNamedPipe`` (which drops unread data).
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, final

import pywintypes
import win32api
import win32con
import win32event
import win32file
import win32pipe
import win32security
import winerror

from npipes.errors import (
    ConnectionClosedError,
    NpipesError,
    PipeBusyError,
    PipeInUseError,
    PipeTimeoutError,
    translate_winerror,
)

from ._base import ListenOptions, PeerInfo

if TYPE_CHECKING:
    from npipes._deadline import Deadline
    from npipes._names import Address
    from npipes._types import Buffer

assert sys.platform == "win32" or not TYPE_CHECKING

__all__ = [
    "CLIENT_FLAGS",
    "PipeListener",
    "PipeStream",
    "connect",
    "create_instance",
    "listen",
    "listener_security",
    "pipe_modes",
    "retry_open",
    "security_descriptor_sddl",
    "try_open_client",
]

_SLICE_MS: Final = 100  # longest uninterruptible wait (Ctrl+C latency)
_PIPE_BUFFER: Final = 64 * 1024
# Below this, header+payload+trailer go as one WriteFile: a copy is cheaper than
# a second overlapped operation (measured under Wine: ~30 us per operation).
_JOIN_LIMIT: Final = 256 * 1024
_WAIT_OBJECT_0: Final = win32event.WAIT_OBJECT_0
_WAIT_TIMEOUT: Final = win32event.WAIT_TIMEOUT
_ERROR_IO_PENDING: Final = winerror.ERROR_IO_PENDING
_ERROR_MORE_DATA: Final = winerror.ERROR_MORE_DATA
_ERROR_PIPE_CONNECTED: Final = winerror.ERROR_PIPE_CONNECTED
_ERROR_NO_DATA: Final = winerror.ERROR_NO_DATA
_ERROR_OPERATION_ABORTED: Final = winerror.ERROR_OPERATION_ABORTED
_ERROR_FILE_NOT_FOUND: Final = winerror.ERROR_FILE_NOT_FOUND
_ERROR_PIPE_BUSY: Final = winerror.ERROR_PIPE_BUSY
_ERROR_SEM_TIMEOUT: Final = winerror.ERROR_SEM_TIMEOUT
_ERROR_ACCESS_DENIED: Final = winerror.ERROR_ACCESS_DENIED
_EOF_ERRORS: Final = frozenset(
    {winerror.ERROR_BROKEN_PIPE, winerror.ERROR_PIPE_NOT_CONNECTED, _ERROR_NO_DATA}
)
PIPE_REJECT_REMOTE_CLIENTS: Final = 0x00000008  # not exported by every pywin32 build
FILE_FLAG_FIRST_PIPE_INSTANCE: Final = 0x00080000

_kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
_CancelIoEx = _kernel32.CancelIoEx
_CancelIoEx.argtypes = (ctypes.c_void_p, ctypes.c_void_p)
_CancelIoEx.restype = ctypes.c_int


def _cancel(handle: Any) -> None:
    """Cancel every pending I/O on ``handle`` from any thread (CancelIoEx)."""
    _CancelIoEx(int(handle), None)


def _error(exc: pywintypes.error, what: str, address: str) -> NpipesError:
    return translate_winerror(exc.winerror, exc.strerror, what, address=address)


def _new_overlapped() -> Any:
    ov = pywintypes.OVERLAPPED()
    ov.hEvent = win32event.CreateEvent(None, True, False, None)
    return ov


# -- security -------------------------------------------------------------------


def _current_user_sid() -> str:
    token = win32security.OpenProcessToken(win32api.GetCurrentProcess(), win32con.TOKEN_QUERY)
    try:
        sid = win32security.GetTokenInformation(token, win32security.TokenUser)[0]
    finally:
        win32api.CloseHandle(token)
    return str(win32security.ConvertSidToStringSid(sid))


def _account_sid(account: str) -> str:
    if account.startswith("S-1-"):
        return account
    sid, _, _ = win32security.LookupAccountName(None, account)
    return str(win32security.ConvertSidToStringSid(sid))


def security_descriptor_sddl(options: ListenOptions) -> str:
    """The SDDL of a listener's pipe: the caller's own, or owner + LocalSystem only.

    ``GA`` (generic all) for the current user and LocalSystem (``SY``), plus
    each of ``allowed_users``; ``allow_other_users`` adds Authenticated Users.
    ``P`` protects the DACL from inherited entries.
    """
    if options.security_descriptor is not None:
        return options.security_descriptor
    sids = [_current_user_sid(), "SY"]
    sids += [_account_sid(a) for a in options.allowed_users]
    if options.allow_other_users:
        sids.append("AU")
    return "D:P" + "".join(f"(A;;GA;;;{sid})" for sid in dict.fromkeys(sids))


def _security_attributes(sddl: str) -> Any:
    sa = win32security.SECURITY_ATTRIBUTES()
    sa.SECURITY_DESCRIPTOR = win32security.ConvertStringSecurityDescriptorToSecurityDescriptor(
        sddl, win32security.SDDL_REVISION_1
    )
    sa.bInheritHandle = False
    return sa


# -- waiting --------------------------------------------------------------------


def _wait(events: list[Any], deadline: Deadline) -> int:
    """Index of the first signalled event, or -1 when the deadline passed."""
    while True:
        left = deadline.remaining_ms()
        step = _SLICE_MS if left < 0 else min(left, _SLICE_MS)
        rc = win32event.WaitForMultipleObjects(events, False, step)
        if rc != _WAIT_TIMEOUT:
            return int(rc - _WAIT_OBJECT_0)
        if left >= 0 and left <= _SLICE_MS:
            return -1


def _finish(handle: Any, ov: Any) -> tuple[int, bool]:
    """``(bytes moved, more of this pipe message follows)`` for a completed operation.

    ERROR_MORE_DATA is not a failure: the buffer filled before the message ended.
    """
    try:
        return int(win32file.GetOverlappedResult(handle, ov, False)), False
    except pywintypes.error as exc:
        if exc.winerror == _ERROR_MORE_DATA:
            return int(ov.InternalHigh), True
        raise


def _cancel_and_collect(handle: Any, ov: Any) -> tuple[int, bool] | None:
    """Cancel a pending operation and wait for it; as :func:`_finish` if it completed anyway."""
    _cancel(handle)
    try:
        count = win32file.GetOverlappedResult(handle, ov, True)
    except pywintypes.error as exc:
        if exc.winerror == _ERROR_MORE_DATA:
            return int(ov.InternalHigh), True
        return None  # ERROR_OPERATION_ABORTED, or the pipe broke meanwhile
    return int(count), False


# -- streams --------------------------------------------------------------------


def _peer_of_client_side(handle: Any) -> PeerInfo:
    pid = None
    sid = None
    with contextlib.suppress(pywintypes.error):
        pid = int(win32pipe.GetNamedPipeServerProcessId(handle))
    try:
        info = win32security.GetSecurityInfo(
            handle, win32security.SE_KERNEL_OBJECT, win32security.OWNER_SECURITY_INFORMATION
        )
        owner = info.GetSecurityDescriptorOwner()
        if owner is not None:
            sid = str(win32security.ConvertSidToStringSid(owner))
    except pywintypes.error:
        pass  # not readable: sid stays None
    return PeerInfo(pid=pid, sid=sid)


def _peer_of_server_side(handle: Any) -> PeerInfo:
    pid = None
    sid = None
    with contextlib.suppress(pywintypes.error):
        pid = int(win32pipe.GetNamedPipeClientProcessId(handle))
    # The client allows identification (SECURITY_IDENTIFICATION): enough to read its SID.
    try:
        win32security.ImpersonateNamedPipeClient(handle)
        try:
            token = win32security.OpenThreadToken(
                win32api.GetCurrentThread(), win32con.TOKEN_QUERY, True
            )
        finally:
            win32security.RevertToSelf()
        try:
            user = win32security.GetTokenInformation(token, win32security.TokenUser)[0]
            sid = str(win32security.ConvertSidToStringSid(user))
        finally:
            win32api.CloseHandle(token)
    except pywintypes.error:
        pass
    return PeerInfo(pid=pid, sid=sid)


@final
class PipeStream:
    """One connected end of a named pipe (either side)."""

    def __init__(self, handle: Any, peer: PeerInfo, address: str) -> None:
        self._closed = True
        self._handle = handle
        self._peer = peer
        self._address = address
        self._read_ov = _new_overlapped()
        self._write_ov = _new_overlapped()
        self._stop = win32event.CreateEvent(None, True, False, None)
        self.message_mode = True
        """Reads keep pipe-message boundaries (see ``message_end``)."""
        self.message_end = True
        """Whether the last read ended a pipe message (False: ERROR_MORE_DATA)."""
        self._closed = False

    @property
    def peer(self) -> PeerInfo:
        return self._peer

    @property
    def handle(self) -> Any:
        return self._handle

    def _closed_error(self) -> ConnectionClosedError:
        return ConnectionClosedError("the connection was closed", address=self._address)

    def _complete(self, ov: Any, deadline: Deadline, what: str) -> tuple[int, bool]:
        """Wait for an operation started with ``ov``; as :func:`_finish`."""
        try:
            index = _wait([ov.hEvent, self._stop], deadline)
        except BaseException:  # KeyboardInterrupt: stop the OS writing into our buffer
            _cancel_and_collect(self._handle, ov)
            raise
        if index == 0:
            return _finish(self._handle, ov)
        done = _cancel_and_collect(self._handle, ov)
        if done is not None:
            return done  # it completed as we gave up: keep it
        if index == 1 or self._closed:
            raise self._closed_error()
        raise PipeTimeoutError(
            f"{what} timed out after {deadline.timeout} s",
            timeout=deadline.timeout,
            address=self._address,
        )

    def recv_into(self, buffer: memoryview, deadline: Deadline) -> int:
        if self._closed:
            raise self._closed_error()
        ov = self._read_ov
        try:
            while True:
                rc, _ = win32file.ReadFile(self._handle, buffer, ov)
                if rc == _ERROR_IO_PENDING:
                    count, more = self._complete(ov, deadline, "recv")
                else:  # 0 or ERROR_MORE_DATA: done already, no wait (half the cost)
                    count, more = _finish(self._handle, ov)
                self.message_end = not more
                if count:
                    return count
                # A zero-length pipe message: nothing for a byte stream, and 0 means
                # end of stream to callers, so read on (docs/windows.md).
        except pywintypes.error as exc:
            if exc.winerror in _EOF_ERRORS:
                return 0  # the decoder tells a clean close from a half message
            if self._closed:
                raise self._closed_error() from exc
            raise _error(exc, "recv", self._address) from exc

    def send(self, buffers: Sequence[Buffer], deadline: Deadline) -> None:
        if self._closed:
            raise self._closed_error()
        views = [memoryview(b).cast("B") for b in buffers]
        views = [v for v in views if v.nbytes]
        if len(views) > 1 and sum(v.nbytes for v in views) <= _JOIN_LIMIT:
            views = [memoryview(b"".join(views))]  # one WriteFile, one pipe message
        ov = self._write_ov
        sent_total = 0
        try:
            for view in views:
                while view.nbytes:
                    rc, _ = win32file.WriteFile(self._handle, view, ov)
                    if rc == _ERROR_IO_PENDING:
                        sent, _ = self._complete(ov, deadline, "send")
                    else:
                        sent, _ = _finish(self._handle, ov)
                    sent_total += sent
                    view = view[sent:]
        except PipeTimeoutError as exc:
            exc.partial = sent_total > 0
            raise
        except pywintypes.error as exc:
            if self._closed:
                raise self._closed_error() from exc
            raise _error(exc, "send", self._address) from exc

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        win32event.SetEvent(self._stop)  # wakes a recv/send blocked in another thread
        _cancel(self._handle)
        # CloseHandle, never DisconnectNamedPipe: what we sent stays readable by the peer.
        self._handle.Close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"unclosed npipes stream {self._address!r}", ResourceWarning, 2)
            self.close()


# -- listener -------------------------------------------------------------------


def pipe_modes(options: ListenOptions, *, first: bool) -> tuple[int, int]:
    """``(dwOpenMode, dwPipeMode)`` for CreateNamedPipe: the secure defaults in one place."""
    open_mode = win32pipe.PIPE_ACCESS_DUPLEX | win32file.FILE_FLAG_OVERLAPPED
    if first:
        open_mode |= FILE_FLAG_FIRST_PIPE_INSTANCE
    pipe_mode = win32pipe.PIPE_TYPE_MESSAGE | win32pipe.PIPE_READMODE_MESSAGE
    pipe_mode |= win32pipe.PIPE_WAIT
    if not options.allow_remote:
        pipe_mode |= PIPE_REJECT_REMOTE_CLIENTS
    return open_mode, pipe_mode


CLIENT_FLAGS: Final = (
    win32file.FILE_FLAG_OVERLAPPED
    | win32con.SECURITY_SQOS_PRESENT
    | win32file.SECURITY_IDENTIFICATION
)
"""CreateFile flags of a client: overlapped, and a server may only identify us, not impersonate."""


def _name_semaphore(path: str) -> Any:
    """Take this process's claim on ``path``: a named semaphore of count 1.

    Backs up FILE_FLAG_FIRST_PIPE_INSTANCE where the OS ignores it (Wine) and
    makes two racing npipes listeners end with exactly one. Unlike a mutex it
    has no thread affinity, so any thread may close the listener.
    """
    tail = path[len("\\\\.\\pipe\\") :] if path.lower().startswith("\\\\.\\pipe\\") else path
    name = "Local\\npipes-listener-" + tail.replace("\\", "/").lower()
    sem = win32event.CreateSemaphore(None, 1, 1, name)  # type: ignore[arg-type]  # stub: None is valid
    if win32event.WaitForSingleObject(sem, 0) != _WAIT_OBJECT_0:
        win32api.CloseHandle(sem)
        raise PipeInUseError(
            f"another npipes listener owns {path}; pick another name or stop it", address=path
        )
    return sem


def create_instance(path: str, options: ListenOptions, sa: Any, *, first: bool) -> Any:
    """One more instance of the pipe ``path`` (a PyHANDLE), with the secure defaults.

    Raises:
        PipeInUseError: ``first`` and another process already serves ``path``.
    """
    open_mode, pipe_mode = pipe_modes(options, first=first)
    try:
        return win32pipe.CreateNamedPipe(
            path,
            open_mode,
            pipe_mode,
            win32pipe.PIPE_UNLIMITED_INSTANCES,
            _PIPE_BUFFER,
            _PIPE_BUFFER,
            0,
            sa,
        )
    except pywintypes.error as exc:
        if first and exc.winerror == _ERROR_ACCESS_DENIED:
            raise PipeInUseError(
                f"another process already serves {path}"
                " (FILE_FLAG_FIRST_PIPE_INSTANCE refused); pick another name or stop it",
                address=path,
            ) from exc
        raise _error(exc, "listen", path) from exc


def listener_security(options: ListenOptions) -> Any:
    """The SECURITY_ATTRIBUTES every instance of a listener's pipe is created with."""
    return _security_attributes(security_descriptor_sddl(options))


@final
class PipeListener:
    """A named pipe server that always keeps one instance waiting."""

    def __init__(self, address: Address, options: ListenOptions) -> None:
        self._closed = True
        self._address = address.path
        self._options = options
        self._sa = listener_security(options)
        self._accept_lock = threading.Lock()
        self._claim = _name_semaphore(self._address)
        try:
            self._pending = self._create_instance(first=True)
        except BaseException:
            win32api.CloseHandle(self._claim)
            raise
        self._stop = win32event.CreateEvent(None, True, False, None)
        self._closed = False

    @property
    def address(self) -> str:
        return self._address

    @property
    def closed(self) -> bool:
        return self._closed

    def _create_instance(self, *, first: bool) -> Any:
        return create_instance(self._address, self._options, self._sa, first=first)

    def accept(self, deadline: Deadline) -> PipeStream:
        with self._accept_lock:
            if self._closed:
                raise ConnectionClosedError("the listener is closed", address=self._address)
            handle = self._pending
            ov = _new_overlapped()
            try:
                rc = win32pipe.ConnectNamedPipe(handle, ov)
            except pywintypes.error as exc:
                if exc.winerror != _ERROR_NO_DATA:
                    raise _error(exc, "accept", self._address) from exc
                rc = _ERROR_PIPE_CONNECTED  # the client came and already left: data may wait
            if rc == _ERROR_IO_PENDING:
                self._wait_connected(handle, ov, deadline)
            # Connected (0 or ERROR_PIPE_CONNECTED). Keep one instance waiting first.
            self._pending = self._create_instance(first=False)
            return PipeStream(handle, _peer_of_server_side(handle), self._address)

    def _wait_connected(self, handle: Any, ov: Any, deadline: Deadline) -> None:
        try:
            index = _wait([ov.hEvent, self._stop], deadline)
        except BaseException:
            self._abandon(handle, ov)
            raise
        if index == 0:
            try:
                _finish(handle, ov)
            except pywintypes.error as exc:
                if exc.winerror not in _EOF_ERRORS:
                    raise _error(exc, "accept", self._address) from exc
            return
        if _cancel_and_collect(handle, ov) is not None:
            return  # a client connected as we gave up: take it
        self._abandon(handle, None)
        if index == 1 or self._closed:
            raise ConnectionClosedError("the listener was closed", address=self._address)
        raise PipeTimeoutError(
            f"no client connected to {self._address} within {deadline.timeout} s",
            timeout=deadline.timeout,
            address=self._address,
        )

    def _abandon(self, handle: Any, ov: Any) -> None:
        """Replace an instance whose accept was cancelled (new one first, then close)."""
        if ov is not None:
            _cancel_and_collect(handle, ov)
        if not self._closed:
            self._pending = self._create_instance(first=False)
        handle.Close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        win32event.SetEvent(self._stop)
        with self._accept_lock:  # accept() has cancelled and left by now
            pending = self._pending
            _cancel(pending)
            pending.Close()
            win32api.CloseHandle(self._claim)

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"unclosed npipes listener {self._address!r}", ResourceWarning, 2)
            self.close()


def listen(address: Address, options: ListenOptions) -> PipeListener:
    """Listen on ``address`` (see :class:`PipeListener`)."""
    return PipeListener(address, options)


def connect(
    address: Address,
    deadline: Deadline,
    *,
    wait_for_listener: bool,
    allowed_uids: frozenset[int] = frozenset(),  # POSIX only: the DACL decides here
) -> PipeStream:
    """Open the client end of ``address``.

    ``ERROR_PIPE_BUSY`` waits with ``WaitNamedPipe`` inside the deadline, then
    raises PipeBusyError; a missing pipe raises PipeNotFoundError at once, or
    is retried until the deadline with ``wait_for_listener``.
    """
    path = address.path
    pause = 0.001
    while True:
        handle = try_open_client(path)
        if not isinstance(handle, pywintypes.error):
            break
        if retry_open(handle, path, deadline, wait_for_listener=wait_for_listener):
            left = deadline.remaining_ms()
            # A timeout slice, or the pipe vanished: the next CreateFile says which.
            with contextlib.suppress(pywintypes.error):
                win32pipe.WaitNamedPipe(path, _SLICE_MS if left < 0 else min(left, _SLICE_MS))
            continue
        left_s = deadline.remaining()
        time.sleep(pause if left_s is None else min(pause, left_s))
        pause = min(pause * 2, 0.05)
    return PipeStream(handle, _peer_of_client_side(handle), path)


def try_open_client(path: str) -> Any:
    """Open the client end of ``path``: a PyHANDLE, or the error to decide on.

    Returns the ``pywintypes.error`` for ``ERROR_PIPE_BUSY`` and
    ``ERROR_FILE_NOT_FOUND`` (the caller may retry); raises the translated
    error for anything else.
    """
    try:
        handle = win32file.CreateFile(
            path,
            win32file.GENERIC_READ | win32file.GENERIC_WRITE,
            0,
            None,
            win32file.OPEN_EXISTING,
            CLIENT_FLAGS,
            None,
        )
    except pywintypes.error as exc:
        if exc.winerror in (_ERROR_PIPE_BUSY, _ERROR_FILE_NOT_FOUND):
            return exc
        raise _error(exc, "connect", path) from exc
    # Message read mode where the server offers it; a byte-mode server refuses the
    # switch, and since frames are a byte stream that is fine.
    with contextlib.suppress(pywintypes.error):
        win32pipe.SetNamedPipeHandleState(
            handle,  # type: ignore[arg-type]  # stub says int; a PyHANDLE is what it takes
            win32pipe.PIPE_READMODE_MESSAGE,
            None,
            None,
        )
    return handle


def retry_open(
    exc: pywintypes.error, path: str, deadline: Deadline, *, wait_for_listener: bool
) -> bool:
    """After :func:`try_open_client` returned ``exc``: raise, or say how to retry.

    Returns:
        True when every instance is busy (wait for one), False when the pipe does
        not exist yet and ``wait_for_listener`` asked to wait for it.
    Raises:
        PipeBusyError, PipeTimeoutError, PipeNotFoundError: when not to retry.
    """
    if exc.winerror == _ERROR_PIPE_BUSY:
        if deadline.expired():
            raise PipeBusyError(
                f"every instance of {path} stayed busy for {deadline.timeout} s", address=path
            ) from exc
        return True
    if not wait_for_listener:
        raise _error(exc, "connect", path) from exc
    if deadline.expired():
        raise PipeTimeoutError(
            f"no listener appeared at {path} within {deadline.timeout} s",
            timeout=deadline.timeout,
            address=path,
        ) from exc
    return False
