"""Windows backend, I/O half: named pipes through pywin32 (the only pywin32 I/O in npipes).

Who may open a pipe (DACL, SIDs) and the per-name claim live in
``windows_security.py``. Strategy here:
- Every handle is overlapped, and every wait is ``WaitForMultipleObjects`` on
  the operation's event plus a stop event, in slices of at most 100 ms so
  Ctrl+C (KeyboardInterrupt) lands promptly. On timeout or interrupt, that
  one operation is cancelled with ``CancelIoEx`` and its OVERLAPPED (not in
  pywin32: ctypes), never the other direction's, and awaited, so the OS never
  writes into a buffer we have let go of; an operation that completed in the
  meantime is kept, not dropped (an interrupted read reports it as
  ``npipes_received``, and ``npipes_message_end``, on the exception; an
  interrupted accept keeps the client). Ctrl+C can also land right after
  ReadFile/WriteFile/ConnectNamedPipe returned: each OVERLAPPED is marked
  before its call (``_arm``) so that case is settled the same way.
- The pipe is message-mode, but npipes frames are a byte stream: a read that
  ends with ``ERROR_MORE_DATA`` is simply a full buffer, the rest follows.
- A listener always has one instance waiting: it creates the next instance
  before returning a connected one, so clients never see "not found" between
  two accepts.
- Secure defaults: owner-only DACL (plus LocalSystem), remote clients
  rejected, ``FILE_FLAG_FIRST_PIPE_INSTANCE`` on the first instance, clients
  connect at SECURITY_IDENTIFICATION level so a server cannot impersonate them.
  A named semaphore per pipe name (``windows_security.claim_name``) also
  makes a second npipes listener fail with PipeInUseError where the OS
  ignores the first-instance flag (Wine).
- Data already written is never discarded: close is ``CloseHandle`` only,
  never ``DisconnectNamedPipe`` (which drops unread data).
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, cast, final

import pywintypes
import win32api
import win32con
import win32event
import win32file
import win32pipe
import win32security
import winerror

from npipes._deadline import Deadline, seconds
from npipes.errors import (
    ConnectionClosedError,
    InvalidPipeNameError,
    MessageTooLargeError,
    NpipesError,
    PipeBusyError,
    PipeInUseError,
    PipeTimeoutError,
    translate_winerror,
)

from ._base import ListenOptions, PeerInfo, WaitableListener, WaitableStream

if TYPE_CHECKING:
    from npipes._names import Address
    from npipes._types import Buffer

assert sys.platform == "win32" or not TYPE_CHECKING

from .windows_security import claim_name, listener_security  # noqa: E402

__all__ = [
    "CLIENT_FLAGS",
    "PipeListener",
    "PipeStream",
    "check_path",
    "connect",
    "create_instance",
    "listen",
    "pipe_modes",
    "retry_open",
    "try_open_client",
    "wait_any",
]

_SLICE_MS: Final = 100  # longest uninterruptible wait (Ctrl+C latency)
# The pipe's buffer holds one 64 KiB message with its frame (16-byte header, 4-byte
# CRC): such a WriteFile completes at once instead of waiting for the reader
# (issue 13: 0.59x -> 0.79x raw pywin32 at 64 KiB under Wine, with a read buffer
# that also takes it whole).
_PIPE_BUFFER: Final = 64 * 1024 + 64
# Below this, header+payload+trailer go as one WriteFile: a copy is cheaper than
# a second overlapped operation (measured under Wine: ~30 us per operation).
_JOIN_LIMIT: Final = 256 * 1024
# Largest single ReadFile/WriteFile: its length is a DWORD.
_MAX_IO: Final = 0xFFFF_FFFF
# The whole pipe name, \\.\pipe\ included, may be at most 256 characters (CreateNamedPipe docs).
PIPE_PATH_MAX: Final = 256
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

_ReadFile: Final = win32file.ReadFile
_WriteFile: Final = win32file.WriteFile

_kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
_CancelIoEx = _kernel32.CancelIoEx
_CancelIoEx.argtypes = (ctypes.c_void_p, ctypes.c_void_p)
_CancelIoEx.restype = ctypes.c_int


def _error(exc: pywintypes.error, what: str, address: str) -> NpipesError:
    return translate_winerror(exc.winerror, exc.strerror, what, address=address)


def check_path(path: str) -> str:
    """``path`` if Windows takes it as a pipe name, else InvalidPipeNameError."""
    if len(path) > PIPE_PATH_MAX:
        raise InvalidPipeNameError(
            f"the pipe name {path!r} is {len(path)} characters; Windows allows at most"
            f" {PIPE_PATH_MAX} including \\\\.\\pipe\\; use a shorter name",
            address=path,
        )
    return path


def _new_overlapped() -> Any:
    ov = pywintypes.OVERLAPPED()
    ov.hEvent = win32event.CreateEvent(None, True, False, None)
    return ov


# -- cancelling one operation -----------------------------------------------------


def _overlapped_offset() -> int:
    """Where the OVERLAPPED struct sits inside a ``pywintypes.OVERLAPPED`` object.

    pywin32 does not expose its address, and ``CancelIoEx`` needs it to cancel
    one operation rather than every I/O on the handle (the other direction's
    too). Found once by marking a probe's ``Offset``/``OffsetHigh`` and checking
    ``hEvent`` right after them, so a layout change fails loudly at import.
    """
    probe = pywintypes.OVERLAPPED()
    probe.Offset, probe.OffsetHigh = 0x5A5A1234, 0x0F1E2D3C
    event = win32event.CreateEvent(None, True, False, None)
    probe.hEvent = event
    raw = ctypes.string_at(id(probe), 96)
    at = raw.find(b"\x34\x12\x5a\x5a\x3c\x2d\x1e\x0f")
    if at < 16 or int.from_bytes(raw[at + 8 : at + 16], "little") != int(event):
        # Only a pywin32 build whose OVERLAPPED layout changed gets here.
        raise RuntimeError(  # pragma: no cover
            "npipes cannot find the OVERLAPPED inside pywintypes.OVERLAPPED"
        )
    return at - 16  # Internal and InternalHigh come first


_OV_OFFSET: Final = _overlapped_offset()


def _cancel_one(handle: Any, ov: Any) -> bool:
    """Cancel the operation started with ``ov`` only (CancelIoEx with its OVERLAPPED).

    True when one was pending (it ends soon, as aborted or done); False when
    none was: it had completed, or never started.
    """
    return bool(_CancelIoEx(int(handle), id(ov) + _OV_OFFSET))


# ``OVERLAPPED.Internal`` before an operation: ReadFile, WriteFile and
# ConnectNamedPipe overwrite its low 32 bits (STATUS_PENDING, then the final
# status) before they return, so an interruption landing right after one of
# them returned can tell an operation that started from one that never did.
_UNISSUED: Final = 0xFFFF_FFFF  # not an NTSTATUS; the high half stays 0 as Internal expects


def _arm(ov: Any) -> None:
    """Mark ``ov`` as not started; call right before issuing an operation with it."""
    ctypes.c_uint64.from_address(id(ov) + _OV_OFFSET).value = _UNISSUED


def _internal_of(ov: Any) -> ctypes.c_uint64:
    """``ov``'s ``Internal`` field, for a hot path to :func:`_arm` it with one store.

    The ctypes object does not keep ``ov`` alive: the caller must.
    """
    return ctypes.c_uint64.from_address(id(ov) + _OV_OFFSET)


def _started(ov: Any) -> bool:
    """Whether an operation was issued with ``ov`` since :func:`_arm`."""
    internal = ctypes.c_uint64.from_address(id(ov) + _OV_OFFSET).value
    return internal & 0xFFFF_FFFF != _UNISSUED


def _cancel_all(handle: Any) -> None:
    """Cancel every pending I/O on ``handle``, from any thread (for close only)."""
    _CancelIoEx(int(handle), None)


# -- waiting --------------------------------------------------------------------


def _wait(events: list[Any], deadline: Deadline) -> int:
    """Index of the first signalled event, or -1 once the deadline has passed.

    Waits in slices of at most ``_SLICE_MS`` (Ctrl+C latency); a slice that
    ends early by rounding never ends the wait: only ``deadline.expired()`` does.
    """
    while True:
        left = deadline.remaining_ms()
        step = _SLICE_MS if left < 0 else min(left, _SLICE_MS)
        rc = win32event.WaitForMultipleObjects(events, False, step)
        if rc != _WAIT_TIMEOUT:
            return int(rc - _WAIT_OBJECT_0)
        if deadline.expired():
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


def _settle(handle: Any, ov: Any) -> tuple[int, bool] | None:
    """Cancel the operation of ``ov`` (if still pending) and wait for it to end.

    Returns as :func:`_finish` when it completed anyway (keep what it moved),
    None when it was aborted or failed. Only then may its buffer be let go.
    """
    _cancel_one(handle, ov)
    try:
        count = win32file.GetOverlappedResult(handle, ov, True)
    except pywintypes.error as exc:
        if exc.winerror == _ERROR_MORE_DATA:
            return int(ov.InternalHigh), True
        return None  # ERROR_OPERATION_ABORTED, or the pipe broke meanwhile
    return int(count), False


def _client_present(handle: Any) -> bool:
    """Whether a client is connected to the server instance ``handle`` (or came and left)."""
    try:
        win32pipe.PeekNamedPipe(handle, 0)
    except pywintypes.error as exc:
        return exc.winerror in _EOF_ERRORS  # else listening: nobody came
    return True


def _abandon_connect(handle: Any, ov: Any) -> bool:
    """End a ConnectNamedPipe interrupted at an unknown point; True when a client connected.

    It may never have started, be pending (cancel it and wait, so the OS is
    done with ``ov``), or have returned at once (ERROR_PIPE_CONNECTED leaves
    ``ov`` pending-looking and its event unsignalled: never wait on it then).
    """
    if not _started(ov):
        return False
    if _cancel_one(handle, ov):
        return _settle_connect(handle, ov)
    return _client_present(handle)


def _settle_connect(handle: Any, ov: Any) -> bool:
    """Cancel a pending ConnectNamedPipe; True when a client connected anyway."""
    _cancel_one(handle, ov)
    try:
        win32file.GetOverlappedResult(handle, ov, True)
    except pywintypes.error as exc:
        # A client that came and already left is a client: what it wrote may wait.
        return exc.winerror in _EOF_ERRORS or exc.winerror == _ERROR_PIPE_CONNECTED
    return True


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
    """One connected end of a named pipe (either side).

    Each direction has its own OVERLAPPED and cancels only its own operation,
    so a timeout in one thread never touches another thread's I/O.
    """

    def __init__(self, handle: Any, peer: PeerInfo, address: str) -> None:
        self._closed = True
        self._handle = handle
        self._peer = peer
        self._address = address
        self._read_ov = _new_overlapped()
        self._write_ov = _new_overlapped()
        # Each OVERLAPPED's ``Internal``, to mark it unissued (``_arm``) without a
        # ctypes lookup per call; valid as long as the OVERLAPPED (the stream's).
        self._read_internal = _internal_of(self._read_ov)
        self._write_internal = _internal_of(self._write_ov)
        self._stop = win32event.CreateEvent(None, True, False, None)
        self.message_mode = True
        """Reads keep pipe-message boundaries (see ``message_end``)."""
        self.message_end = True
        """Whether the last read ended a pipe message (False: ERROR_MORE_DATA)."""
        self._wait_ov = _new_overlapped()  # npipes.wait's zero-byte read, apart from recv's
        self._wait_buffer = win32file.AllocateReadBuffer(0)
        self._wait_lock = threading.Lock()  # one zero-byte read at a time (waits in two threads)
        self._wait_owner: int | None = None  # the thread whose wait started the pending read
        self._closed = False

    @property
    def peer(self) -> PeerInfo:
        return self._peer

    @property
    def handle(self) -> Any:
        return self._handle

    def _closed_error(self) -> ConnectionClosedError:
        return ConnectionClosedError("the connection was closed", address=self._address)

    def _timeout(self, what: str, deadline: Deadline, *, partial: bool) -> PipeTimeoutError:
        return PipeTimeoutError(
            f"{what} timed out after {seconds(deadline.timeout)}",
            timeout=deadline.timeout,
            partial=partial,
            address=self._address,
        )

    def _complete(self, ov: Any, deadline: Deadline) -> tuple[int, bool] | None:
        """Wait for the operation of ``ov``: as :func:`_finish`, or None if it was cut off.

        None means the deadline passed or the stream was closed, and the
        operation was cancelled before it completed. An interruption (Ctrl+C)
        cancels it too; if it completed meanwhile, the exception carries the
        result as ``npipes_done`` so the caller can keep it.
        """
        try:
            index = _wait([ov.hEvent, self._stop], deadline)
            if index == 0:
                return _finish(self._handle, ov)
        except pywintypes.error:
            raise
        except BaseException as exc:  # KeyboardInterrupt: stop the OS writing into our buffer
            exc.npipes_done = _settle(self._handle, ov)  # type: ignore[attr-defined]
            raise
        return _settle(self._handle, ov)  # it may have completed as we gave up: keep it

    def recv_into(self, buffer: memoryview, deadline: Deadline) -> int:
        """Read into ``buffer`` (see RawStream.recv_into).

        If interrupted after a read completed into ``buffer``, the exception
        carries ``npipes_received`` (the byte count) and ``message_end`` is set.
        """
        if self._closed:
            raise self._closed_error()
        view = buffer[:_MAX_IO] if buffer.nbytes > _MAX_IO else buffer  # a DWORD length
        ov = self._read_ov
        internal = self._read_internal
        handle = self._handle
        try:
            while True:
                internal.value = _UNISSUED  # _arm(ov)
                rc, _ = _ReadFile(handle, view, ov)
                if rc == _ERROR_IO_PENDING:
                    done = self._complete(ov, deadline)
                    if done is None:
                        if self._closed:
                            raise self._closed_error()
                        raise self._timeout("recv", deadline, partial=False)
                    got, more = done
                else:
                    # 0 or ERROR_MORE_DATA: done already, no wait (half the cost). The
                    # count is in the OVERLAPPED (InternalHigh): no GetOverlappedResult
                    # call, and no exception for ERROR_MORE_DATA (the buffer filled first).
                    got, more = ov.InternalHigh, rc == _ERROR_MORE_DATA
                self.message_end = not more
                if got:
                    return got
                # A zero-length pipe message: nothing for a byte stream, and 0 means
                # end of stream to callers, so read on, within the deadline
                # (docs/windows.md): a flood of them must not stretch it.
                if self._closed:
                    raise self._closed_error()
                if deadline.expired():
                    raise self._timeout("recv", deadline, partial=False)
        except pywintypes.error as exc:
            if exc.winerror in _EOF_ERRORS:
                return 0  # the decoder tells a clean close from a half message
            if self._closed:
                raise self._closed_error() from exc
            raise _error(exc, "recv", self._address) from exc
        except BaseException as exc:
            if isinstance(exc, NpipesError):
                raise  # ours: the read was settled before it was raised
            done = getattr(exc, "npipes_done", None)
            if not hasattr(exc, "npipes_done") and _started(ov):
                # Interrupted right after ReadFile returned, before its result was
                # taken: stop the OS writing into ``buffer`` and keep what it read.
                done = _settle(self._handle, ov)
            if done is not None and done[0]:
                got, more = done
                self.message_end = not more
                exc.npipes_received = got  # type: ignore[attr-defined]
                exc.npipes_message_end = not more  # type: ignore[attr-defined]
            raise

    def send(self, buffers: Sequence[Buffer], deadline: Deadline) -> None:
        """Write ``buffers`` (see RawStream.send).

        A timeout is ``partial`` when any byte may have reached the peer: a
        cancelled WriteFile reports 0 bytes even when the peer had read part of
        it (seen under Wine), so a cut-off write counts as partial.
        """
        if self._closed:
            raise self._closed_error()
        if all(type(b) is bytes for b in buffers):  # the common case: no views, one join
            parts = cast("Sequence[bytes]", buffers)
            total = sum(map(len, parts))
            if total <= _JOIN_LIMIT:
                if total:
                    self._write_all(b"".join(parts) if len(parts) > 1 else parts[0], deadline)
                return
        views = [memoryview(b).cast("B") for b in buffers]
        views = [v for v in views if v.nbytes]
        for v in views:
            if v.nbytes > _MAX_IO:  # checked before anything is written
                raise MessageTooLargeError(
                    f"a buffer of {v.nbytes} bytes is more than one WriteFile can take"
                    f" ({_MAX_IO} bytes) on a Windows pipe; send smaller messages",
                    size=v.nbytes,
                    limit=_MAX_IO,
                    address=self._address,
                )
        if len(views) > 1 and sum(v.nbytes for v in views) <= _JOIN_LIMIT:
            views = [memoryview(b"".join(views))]  # one WriteFile, one pipe message
        for view in views:
            self._write_all(view, deadline)

    def _write_all(self, data: bytes | memoryview, deadline: Deadline) -> None:
        """Write all of ``data`` (at most ``_MAX_IO`` bytes), as one pipe message when
        nothing cuts the write short (see :meth:`send` for the errors)."""
        ov = self._write_ov
        handle = self._handle
        size = len(data) if type(data) is bytes else memoryview(data).nbytes
        try:
            while True:
                self._write_internal.value = _UNISSUED  # _arm(ov)
                rc, _ = _WriteFile(handle, data, ov)
                if rc == _ERROR_IO_PENDING:
                    done = self._complete(ov, deadline)
                    if done is None:
                        if self._closed:
                            raise self._closed_error()
                        raise self._timeout("send", deadline, partial=True)
                    sent = done[0]
                else:  # done at once: the count is in the OVERLAPPED, no call needed
                    sent = ov.InternalHigh
                if sent >= size:
                    return
                data = memoryview(data).cast("B")[sent:]
                size -= sent
        except pywintypes.error as exc:
            if self._closed:
                raise self._closed_error() from exc
            raise _error(exc, "send", self._address) from exc
        except BaseException as exc:
            # Interrupted right after WriteFile returned, before it was awaited:
            # the OS must be done with the buffer before the caller lets it go.
            unsettled = not isinstance(exc, NpipesError) and not hasattr(exc, "npipes_done")
            if unsettled and _started(ov):
                _settle(self._handle, ov)
            raise

    def fileno(self) -> int:
        raise io.UnsupportedOperation(_NO_FILENO)

    def read_available(self, buffer: memoryview) -> int | None:
        """Read what arrived without waiting: a count, 0 at end, None if nothing (npipes.wait)."""
        if self._closed:
            raise self._closed_error()
        try:
            _, available, _ = win32pipe.PeekNamedPipe(self._handle, 0)
        except pywintypes.error as exc:
            if exc.winerror in _EOF_ERRORS:
                return 0
            raise _error(exc, "recv", self._address) from exc
        if not available:
            return None
        try:  # the bytes are there: ReadFile completes at once
            return self.recv_into(buffer, Deadline(0))
        except PipeTimeoutError:
            return None

    def start_wait(self) -> list[Any] | None:
        """Start a zero-byte read that completes when bytes (or the end) arrive.

        It consumes nothing (a zero-length pipe message excepted, which means
        nothing to a byte stream). Returns the events to wait on (then call
        :meth:`end_wait`), None when it completed at once, [] while another
        thread's wait has one pending (look again later). Checked under Wine 8:
        completes with ERROR_MORE_DATA on arrival, ERROR_BROKEN_PIPE at the end.
        """
        me = threading.get_ident()
        if not self._wait_lock.acquire(blocking=False):
            return []
        pending = False
        try:
            if self._closed:
                return None
            ov = self._wait_ov
            _arm(ov)
            try:
                rc, _ = win32file.ReadFile(self._handle, self._wait_buffer, ov)
            except pywintypes.error:
                return None  # the end, or an error: read_available reports it
            except BaseException:  # Ctrl+C as ReadFile returned: leave no read pending on ov
                if _started(ov):
                    _settle(self._handle, ov)
                raise
            pending = rc == _ERROR_IO_PENDING
            if pending:
                self._wait_owner = me  # from here on, end_wait (in this thread) ends it
            return [ov.hEvent] if pending else None
        finally:
            if not pending:
                self._wait_lock.release()

    def end_wait(self) -> None:
        """Cancel the zero-byte read of :meth:`start_wait` if it is still pending
        (a no-op unless this thread's ``start_wait`` started one)."""
        if self._wait_owner != threading.get_ident():
            return
        self._wait_owner = None
        try:
            _settle(self._handle, self._wait_ov)
        finally:
            self._wait_lock.release()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        win32event.SetEvent(self._stop)  # wakes a recv/send blocked in another thread
        _cancel_all(self._handle)
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
            # Real Windows only: Wine ignores FILE_FLAG_FIRST_PIPE_INSTANCE (docs/windows.md).
            raise PipeInUseError(  # pragma: no cover
                f"another process already serves {path}"
                " (FILE_FLAG_FIRST_PIPE_INSTANCE refused); pick another name or stop it",
                address=path,
            ) from exc
        raise _error(exc, "listen", path) from exc


@final
class PipeListener:
    """A named pipe server that always keeps one instance waiting.

    A client that connected is never dropped: if ``accept`` is interrupted
    (Ctrl+C, a timeout racing the connect) after the OS connected a client,
    that instance is kept and the next ``accept`` returns it.
    """

    def __init__(self, address: Address, options: ListenOptions) -> None:
        self._closed = True
        self._address = check_path(address.path)
        self._options = options
        self._sa = listener_security(options)
        self._accept_lock = threading.Lock()
        self._claim = claim_name(self._address)
        try:
            self._pending: Any = self._create_instance(first=True)
        except BaseException:
            win32api.CloseHandle(self._claim)
            raise
        self._ready: Any = None  # a connected instance not yet handed out
        self._stop = win32event.CreateEvent(None, True, False, None)
        self._wait_ov: Any = None  # npipes.wait's pending ConnectNamedPipe
        self._wait_owner: int | None = None  # the thread whose wait started it
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
            if self._pending is None:  # creating it failed after the last accept
                self._pending = self._create_instance(first=False)
            while self._ready is None:
                self._wait_for_client(deadline)
            handle = self._ready
            peer = _peer_of_server_side(handle)
            self._ready = None
            return PipeStream(handle, peer, self._address)

    def _wait_for_client(self, deadline: Deadline) -> None:
        """Wait until the pending instance is connected; it becomes ``_ready``.

        A wait that ends without a client (timeout, Ctrl+C, close) cancels the
        ConnectNamedPipe and leaves the same instance listening: closing it
        and making another would drop a client connecting in between.
        """
        handle = self._pending
        ov = _new_overlapped()
        rc: int | None = None  # None until ConnectNamedPipe's answer is recorded
        failed = connected = False
        index = 0
        try:
            _arm(ov)
            try:
                rc = win32pipe.ConnectNamedPipe(handle, ov)
            except pywintypes.error as exc:
                if exc.winerror != _ERROR_NO_DATA:
                    failed = True
                    raise _error(exc, "accept", self._address) from exc
                rc = _ERROR_PIPE_CONNECTED  # the client came and already left: data may wait
            if rc == _ERROR_IO_PENDING:
                index = _wait([ov.hEvent, self._stop], deadline)
                # Connected, or cancel and see whether it did anyway.
                connected = _settle_connect(handle, ov)
            else:
                connected = True  # 0 or ERROR_PIPE_CONNECTED
        except BaseException:
            if failed:
                self._replace(handle)
                raise
            if rc is None:  # interrupted as ConnectNamedPipe returned: find out what it did
                connected = _abandon_connect(handle, ov)
            elif rc == _ERROR_IO_PENDING:
                connected = _settle_connect(handle, ov)
            else:
                connected = True
            if connected:
                self._promote(handle)
            else:
                self._keep_listening(handle)
            raise
        if connected:
            self._promote(handle)
            return
        if index == 0:  # the connect itself failed: a fresh instance, and wait on
            self._replace(handle)
            return
        self._keep_listening(handle)
        if index == 1 or self._closed:
            raise ConnectionClosedError("the listener was closed", address=self._address)
        raise PipeTimeoutError(
            f"no client connected to {self._address} within {seconds(deadline.timeout)}",
            timeout=deadline.timeout,
            address=self._address,
        )

    def fileno(self) -> int:
        raise io.UnsupportedOperation(_NO_FILENO)

    def client_waiting(self) -> bool:
        """Whether a connected client waits for ``accept``: one found by :meth:`start_wait`,
        or one that connected to the waiting instance since (``accept`` then finds it
        at once: ConnectNamedPipe answers ERROR_PIPE_CONNECTED). False while another
        thread's ``accept`` holds the listener."""
        if self._ready is not None:
            return True
        if not self._accept_lock.acquire(blocking=False):
            return False
        try:
            pending = self._pending
            return not self._closed and pending is not None and _client_present(pending)
        finally:
            self._accept_lock.release()

    def start_wait(self) -> list[Any] | None:
        """Start an overlapped ConnectNamedPipe for npipes.wait: the events to wait on,
        None when done at once (a client is ``_ready``, or look again), [] when an
        ``accept`` in another thread holds the listener (poll it later).

        Holds the accept lock until :meth:`end_wait`, so an ``accept`` in another
        thread waits for the wait; a connected client is kept for the next ``accept``.
        """
        me = threading.get_ident()
        if not self._accept_lock.acquire(blocking=False):
            return []
        try:
            if self._closed or self._ready is not None:
                self._accept_lock.release()
                return None
            if self._pending is None:
                self._pending = self._create_instance(first=False)
            handle = self._pending
            ov = _new_overlapped()
            _arm(ov)
            try:
                rc = win32pipe.ConnectNamedPipe(handle, ov)
            except pywintypes.error as exc:
                if exc.winerror == _ERROR_NO_DATA:  # came and left: data may wait
                    self._promote(handle)
                else:
                    self._replace(handle)
                self._accept_lock.release()
                return None
            except BaseException:  # Ctrl+C as it returned: never leave ov pending, keep a client
                if _abandon_connect(handle, ov):
                    self._promote(handle)
                else:
                    self._keep_listening(handle)
                raise
            if rc != _ERROR_IO_PENDING:  # 0 or ERROR_PIPE_CONNECTED (event not signalled)
                self._promote(handle)
                self._accept_lock.release()
                return None
            self._wait_ov = ov
            self._wait_owner = me  # from here on, end_wait (in this thread) ends it
            return [ov.hEvent, self._stop]
        except BaseException:
            self._accept_lock.release()
            raise

    def end_wait(self) -> None:
        """End :meth:`start_wait`'s accept (when it returned events): a client that
        connected becomes ``_ready``; otherwise the instance keeps listening. A no-op
        unless this thread's ``start_wait`` started one."""
        ov = self._wait_ov
        if ov is None or self._wait_owner != threading.get_ident():
            return
        self._wait_ov = self._wait_owner = None
        handle = self._pending
        try:
            signalled = win32event.WaitForSingleObject(ov.hEvent, 0) == _WAIT_OBJECT_0
            if _settle_connect(handle, ov):
                self._promote(handle)
            elif signalled and not self._closed:
                self._replace(handle)  # the connect itself failed: a fresh instance
            else:
                self._keep_listening(handle)
        finally:
            self._accept_lock.release()

    def _keep_listening(self, handle: Any) -> None:
        """After a cancelled accept: ``handle`` stays the waiting instance (closed if we are)."""
        if self._closed:
            self._pending = None
            handle.Close()

    def _promote(self, handle: Any) -> None:
        """``handle`` is connected: keep it for accept, and a new instance waiting."""
        self._ready = handle
        self._pending = None
        if not self._closed:
            self._pending = self._create_instance(first=False)

    def _replace(self, handle: Any) -> None:
        """Replace an instance whose connect failed (new one first, then close)."""
        self._pending = None
        try:
            if not self._closed:
                self._pending = self._create_instance(first=False)
        finally:
            handle.Close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        win32event.SetEvent(self._stop)
        with self._accept_lock:  # accept() has cancelled and left by now
            for handle in (self._pending, self._ready):
                if handle is not None:
                    _cancel_all(handle)
                    handle.Close()
            self._pending = self._ready = None
            win32api.CloseHandle(self._claim)

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"unclosed npipes listener {self._address!r}", ResourceWarning, 2)
            self.close()


_NO_FILENO: Final = (
    "a Windows named pipe has no file descriptor to select on; use npipes.wait(objects,"
    " timeout) to wait for several connections and listeners, or conn.poll(timeout)"
)
_MAX_EVENTS: Final = 64  # MAXIMUM_WAIT_OBJECTS


def wait_any(items: Sequence[WaitableStream | WaitableListener], deadline: Deadline) -> list[int]:
    """Wait until some of ``items`` may be ready (bytes, end of stream, a client); their indices.

    Each stream gets a zero-byte overlapped read, each listener an overlapped
    ConnectNamedPipe; all are cancelled (a connected client kept) before
    returning. ``[]`` once ``deadline`` passed. More than 64 events are waited
    in helper threads of 63 each, sharing a stop event (WaitForMultipleObjects
    takes at most 64 handles).
    """
    reached = 0  # items[:reached] may have an operation started (end_wait ends only those)
    watched: list[tuple[int, list[Any]]] = []
    ready: list[int] = []
    busy = False
    try:
        for index, item in enumerate(items):
            assert isinstance(item, PipeStream | PipeListener), "npipes.wait checks the types"
            reached = index + 1  # before: a Ctrl+C as start_wait returns is still ended
            events = item.start_wait()
            if events is None:
                ready.append(index)
                break
            if not events:
                busy = True  # another thread's accept or wait holds it: look again soon
                continue
            watched.append((index, events))
        if not ready:
            if busy:
                left = deadline.remaining()
                deadline = Deadline(
                    _SLICE_MS / 1000 if left is None else min(left, _SLICE_MS / 1000)
                )
            if _wait_events([event for _, events in watched for event in events], deadline):
                ready = [
                    index
                    for index, events in watched
                    if any(win32event.WaitForSingleObject(e, 0) == _WAIT_OBJECT_0 for e in events)
                ]
    finally:
        for item in items[:reached]:
            assert isinstance(item, PipeStream | PipeListener), "npipes.wait checks the types"
            item.end_wait()
    return ready


def _wait_events(events: list[Any], deadline: Deadline) -> bool:
    """Whether any of ``events`` was signalled before ``deadline`` (any number of them)."""
    if not events:  # everything is busy in other threads: sleep (WaitForMultipleObjects refuses [])
        while not deadline.expired():
            left = deadline.remaining()
            time.sleep(_SLICE_MS / 1000 if left is None else min(left, _SLICE_MS / 1000))
        return False
    if len(events) <= _MAX_EVENTS:
        return _wait(events, deadline) >= 0
    wake = win32event.CreateEvent(None, True, False, None)
    stop = win32event.CreateEvent(None, True, False, None)
    first, rest = events[: _MAX_EVENTS - 1], events[_MAX_EVENTS - 1 :]
    step = _MAX_EVENTS - 1

    def watch(chunk: list[Any]) -> None:
        if win32event.WaitForMultipleObjects([stop, *chunk], False, win32event.INFINITE) != 0:
            win32event.SetEvent(wake)

    threads = [
        threading.Thread(target=watch, args=(rest[at : at + step],), daemon=True)
        for at in range(0, len(rest), step)
    ]
    for thread in threads:
        thread.start()
    try:
        return _wait([wake, *first], deadline) >= 0
    finally:
        win32event.SetEvent(stop)
        for thread in threads:
            thread.join()


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
    path = check_path(address.path)
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
                f"every instance of {path} stayed busy for {seconds(deadline.timeout)}",
                address=path,
            ) from exc
        return True
    if not wait_for_listener:
        raise _error(exc, "connect", path) from exc
    if deadline.expired():
        raise PipeTimeoutError(
            f"no listener appeared at {path} within {seconds(deadline.timeout)}",
            timeout=deadline.timeout,
            address=path,
        ) from exc
    return False
