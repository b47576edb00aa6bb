"""POSIX backend: Unix domain stream sockets (the only AF_UNIX user in npipes).

Strategy:
- Sockets stay in blocking mode. A call without a deadline blocks in the
  kernel (one syscall, the fastest path); a call with a deadline uses
  ``MSG_DONTWAIT`` plus ``poll`` on that call only, so a timed ``recv`` in one
  thread never changes how a concurrent ``send`` in another thread behaves
  (``settimeout`` would: it is per socket).
- ``accept`` polls the socket and a wake-up pipe, so ``close()`` from another
  thread ends it at once; Ctrl+C interrupts ``poll`` as usual (PEP 475).
- Endpoint safety: the socket file is created 0600 in a private 0700
  directory, then renamed into place, so it never exists with wider access;
  an advisory lock next to it (``NAME.sock.lock``, held for the listener's
  lifetime) decides which of two racing processes listens; a socket file
  whose owner died is detected (connect refused) and replaced; a live one
  never is. On close, the socket file is removed only if it is still ours.
- A client checks what it reaches: the private directory before every try
  (another user may create it while the client waits) and, once connected,
  the listener's uid (SO_PEERCRED): yours, root's, or one the caller allowed.
- Fork: every object remembers the pid that created it. In another process
  (a forked child) ``close()`` only closes the descriptors: no ``shutdown``
  (it would cut the parent's connection), no unlink, no wake-up write.
- Waits are ``poll`` calls of at most an hour each, looped until the
  deadline, so any timeout (30 days, infinity) works.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
import select
import selectors
import socket
import stat
import struct
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, final

from npipes._deadline import Deadline, seconds
from npipes._names import SUN_PATH_MAX
from npipes.errors import (
    ConnectionClosedError,
    InvalidPipeNameError,
    NpipesError,
    PipeInUseError,
    PipeNotFoundError,
    PipePermissionError,
    PipeTimeoutError,
    translate_os_error,
)

from ._base import ListenOptions, PeerInfo, WaitableListener, WaitableStream

if TYPE_CHECKING:
    from npipes._names import Address
    from npipes._types import Buffer

assert sys.platform != "win32"

__all__ = [
    "ACCEPT_LATER_ERRNOS",
    "ACCEPT_PAUSE",
    "UnixListener",
    "UnixStream",
    "check_listener_uid",
    "connect",
    "connect_failed",
    "finish_connect",
    "listen",
    "new_socket",
    "peer_credentials",
    "start_connect",
    "wait_ms",
    "write_all",
]

_MSG_NOSIGNAL: Final = getattr(socket, "MSG_NOSIGNAL", 0)
_SEND_FLAGS: Final = _MSG_NOSIGNAL
_IOV_MAX: Final = 512  # buffers per sendmsg; POSIX guarantees at least 16, Linux/macOS 1024
_SEND_FLAGS_NOWAIT: Final = _MSG_NOSIGNAL | socket.MSG_DONTWAIT
# Poll results that mean "go ahead and try the call": it will then succeed or
# report the real error.
_READY_IN: Final = select.POLLIN | select.POLLHUP | select.POLLERR | select.POLLNVAL
_READY_OUT: Final = select.POLLOUT | select.POLLHUP | select.POLLERR | select.POLLNVAL
_MAX_WAIT: Final = 3600.0  # seconds per poll(); longer waits loop (poll takes an int of ms)
# accept() errors that mean "out of a resource for now", not "the listener broke":
# wait and retry, like trio's SocketListener (closing descriptors elsewhere frees them).
ACCEPT_LATER_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_PAUSE: Final = 0.1
"""Seconds an accept waits before retrying when out of descriptors or memory."""


def peer_credentials(sock: socket.socket) -> PeerInfo:
    """pid/uid/gid of the peer: SO_PEERCRED (Linux) or LOCAL_PEERCRED/LOCAL_PEERPID (macOS)."""
    so_peercred = getattr(socket, "SO_PEERCRED", None)
    if so_peercred is not None:
        raw = sock.getsockopt(socket.SOL_SOCKET, so_peercred, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
        return PeerInfo(pid=pid, uid=uid, gid=gid)
    if sys.platform == "darwin":  # pragma: no cover - not run on Linux CI
        sol_local, local_peercred, local_peerpid = 0, 0x001, 0x002
        # struct xucred { u_int cr_version; uid_t cr_uid; short cr_ngroups; gid_t cr_groups[16]; }
        raw = sock.getsockopt(sol_local, local_peercred, struct.calcsize("IIh2x16I"))
        fields = struct.unpack("IIh2x16I", raw)
        uid, ngroups, gid = fields[1], fields[2], fields[3]
        pid_raw = sock.getsockopt(sol_local, local_peerpid, struct.calcsize("i"))
        return PeerInfo(pid=struct.unpack("i", pid_raw)[0], uid=uid, gid=gid if ngroups else None)
    uid, gid = _getpeereid(sock)  # pragma: no cover - BSDs
    return PeerInfo(pid=None, uid=uid, gid=gid)  # pragma: no cover


def _getpeereid(sock: socket.socket) -> tuple[int | None, int | None]:  # pragma: no cover
    return None, None


def wait_ms(deadline: Deadline, cap: float = _MAX_WAIT) -> int:
    """What to pass to ``poll()`` now: ms left (rounded up, at most ``cap`` s), -1 for none.

    Callers loop until the deadline has expired, so a long (or infinite)
    timeout never overflows poll() and a wait that returns early is retried.
    """
    left = deadline.remaining()
    if left is None:
        return -1 if cap >= _MAX_WAIT else math.ceil(cap * 1000)
    return math.ceil(min(left, cap) * 1000)


def _poll(sock: socket.socket | int, events: int, deadline: Deadline, what: str) -> None:
    """Wait until ``sock`` (or a file descriptor) is ready for ``events``, or raise
    PipeTimeoutError."""
    poller = select.poll()
    poller.register(sock, events)
    while not poller.poll(wait_ms(deadline)):
        if deadline.expired():
            raise PipeTimeoutError(
                f"{what} timed out after {seconds(deadline.timeout)}", timeout=deadline.timeout
            )


def write_all(
    buffers: Sequence[Buffer],
    write: Callable[[list[memoryview]], int],
    wait_writable: Callable[[], None],
) -> None:
    """Write every byte of ``buffers`` with ``write`` (send/sendmsg/writev).

    ``write`` may write part of what it is given (the tail is written next) or
    raise BlockingIOError (then ``wait_writable`` waits or raises
    PipeTimeoutError, whose ``partial`` this sets).
    """
    views = [memoryview(b).cast("B") for b in buffers if memoryview(b).nbytes]
    total = sum(v.nbytes for v in views)
    sent_total = 0
    try:
        while views:
            try:
                sent = write(views[:_IOV_MAX])
            except BlockingIOError:
                wait_writable()
                continue
            sent_total += sent
            # Drop what went out; a partial write leaves a tail to resend.
            while views and sent >= views[0].nbytes:
                sent -= views[0].nbytes
                views.pop(0)
            if sent:
                views[0] = views[0][sent:]
    except PipeTimeoutError as exc:
        exc.partial = 0 < sent_total < total
        raise


@final
class UnixStream:
    """A connected Unix domain stream socket."""

    def __init__(self, sock: socket.socket, peer: PeerInfo, address: str) -> None:
        self._sock = sock
        self._peer = peer
        self._address = address
        self._closed = False
        self._pid = os.getpid()  # close() in a forked child must not shut the parent's down
        self.message_mode = False
        """A byte stream: no message boundaries."""
        self.message_end = True
        """Every read ends a chunk (what ``raw`` framing returns as one message)."""
        sock.setblocking(True)

    @property
    def peer(self) -> PeerInfo:
        return self._peer

    def fileno(self) -> int:
        return self._sock.fileno()

    def _error(self, exc: OSError | ValueError, what: str) -> NpipesError:
        # ValueError: close() from another thread ran between two steps, so the
        # socket's descriptor is already -1 (poll.register refuses it).
        if self._closed or isinstance(exc, ValueError):
            return ConnectionClosedError("the connection was closed", address=self._address)
        return translate_os_error(exc, what, address=self._address)

    def recv_into(self, buffer: memoryview, deadline: Deadline) -> int:
        sock = self._sock
        try:
            if deadline.timeout is None:
                count = sock.recv_into(buffer)
            else:
                while True:
                    try:
                        count = sock.recv_into(buffer, 0, socket.MSG_DONTWAIT)
                        break
                    except BlockingIOError:
                        _poll(sock, _READY_IN, deadline, "recv")
        except PipeTimeoutError:
            raise
        except ConnectionResetError:
            # Linux reports ECONNRESET instead of end-of-stream when the peer went
            # away with data it never read: it is still the end of the stream, and
            # the decoder tells a clean close from a half-received message.
            count = 0
        except (OSError, ValueError) as exc:
            raise self._error(exc, "recv") from exc
        if count == 0 and self._closed:
            raise ConnectionClosedError("the connection was closed", address=self._address)
        return count

    def send(self, buffers: Sequence[Buffer], deadline: Deadline) -> None:
        sock = self._sock
        blocking = deadline.timeout is None
        if blocking and len(buffers) == 1:
            try:  # the common small message: one buffer, one system call
                sock.sendall(buffers[0], _SEND_FLAGS)
            except OSError as exc:
                raise self._error(exc, "send") from exc
            return
        flags = _SEND_FLAGS if blocking else _SEND_FLAGS_NOWAIT

        def write(views: list[memoryview]) -> int:
            if len(views) == 1:
                return sock.send(views[0], flags)
            return sock.sendmsg(views, (), flags)

        try:
            write_all(buffers, write, lambda: _poll(sock, _READY_OUT, deadline, "send"))
        except PipeTimeoutError:
            raise  # a TimeoutError is an OSError: keep it (and its ``partial``) as it is
        except (OSError, ValueError) as exc:
            raise self._error(exc, "send") from exc

    def read_available(self, buffer: memoryview) -> int | None:
        """Read what arrived without waiting: a count, 0 at end, None if nothing (npipes.wait)."""
        try:
            return self.recv_into(buffer, Deadline(0))
        except PipeTimeoutError:
            return None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if os.getpid() == self._pid:
            # shutdown() wakes a recv blocked in another thread; close() alone does
            # not. Not in a forked child: it would end the parent's connection too.
            with contextlib.suppress(OSError):  # already disconnected
                self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"unclosed npipes stream {self._address!r}", ResourceWarning, 2)
            self.close()


# -- endpoint safety ----------------------------------------------------------


def ensure_private_dir(path: str, *, create: bool) -> None:
    """Make sure ``path`` is a directory only we control (creating it 0700).

    Raises:
        PipePermissionError: it is not a directory, is a symlink, belongs to
            another user, or others can write to it.
    """
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except FileNotFoundError as exc:  # not "nobody listens there": the advice is wrong here
            raise PipeNotFoundError(
                f"cannot create the private directory {path}: {os.path.dirname(path)} does not"
                " exist; create it, or point TMPDIR or XDG_RUNTIME_DIR at a directory that does",
                address=path,
            ) from exc
        except OSError as exc:
            raise translate_os_error(exc, "create directory", address=path) from exc
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return  # connect: nothing there yet, the socket lookup reports it
    if not stat.S_ISDIR(st.st_mode):
        raise PipePermissionError(
            f"{path} is not a directory (a symlink or file is there); remove it so npipes"
            " can create its private directory",
            address=path,
        )
    if st.st_uid != os.getuid():
        raise PipePermissionError(
            f"{path} belongs to uid {st.st_uid}, not to you (uid {os.getuid()}); another"
            " user may be squatting it. Remove it, or set XDG_RUNTIME_DIR.",
            address=path,
        )
    if st.st_mode & 0o022:
        raise PipePermissionError(
            f"{path} is writable by other users (mode {stat.S_IMODE(st.st_mode):o});"
            f" run 'chmod 700 {path}' or remove it",
            address=path,
        )


def _probe_live(path: str) -> bool:
    """True if something accepts connections at ``path``; False if stale or absent.

    Raises:
        OSError: the probe itself failed (e.g. EMFILE): we cannot tell, so the
            caller must not replace the file.
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.setblocking(False)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except BlockingIOError:
        return True  # EAGAIN: alive, backlog full
    else:
        return True
    finally:
        probe.close()


_listening_here: dict[str, int] = {}
"""Socket path -> pid of its listener in this process (to tell "you already listen" from
"someone else does"; the pid, because a forked child inherits this table)."""
_listening_lock = threading.Lock()


def _missing_parent(path: str) -> PipeNotFoundError:
    parent = os.path.dirname(path) or "."
    return PipeNotFoundError(
        f"cannot listen on {path}: the directory {parent} does not exist; create it first"
        " (npipes creates only its own private directory, for bare names)",
        address=path,
    )


def _open_lock_file(lock_path: str) -> int:
    """Open (creating 0600) the lock file, refusing a symlink or a file that is not ours.

    The lock file may sit in a directory other users can write (an absolute
    path the caller chose): a planted symlink would make us create or lock a
    file elsewhere, a planted file would let its owner hold our lock.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(lock_path, flags, 0o600)
    except FileNotFoundError as exc:
        raise _missing_parent(lock_path[: -len(".lock")]) from exc
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a symlink (EMLINK: BSD)
            raise PipePermissionError(
                f"the lock file {lock_path} is a symlink (perhaps planted by another user);"
                " npipes does not follow it. Remove it, or listen in a private directory.",
                address=lock_path,
            ) from exc
        raise translate_os_error(exc, "create lock file", address=lock_path) from exc
    try:
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
        os.close(fd)
        what = (
            "is not a regular file"
            if not stat.S_ISREG(st.st_mode)
            else (f"belongs to uid {st.st_uid}, not to you (uid {os.getuid()})")
        )
        raise PipePermissionError(
            f"the lock file {lock_path} {what}; another user may have planted it."
            " Remove it, or listen in a private directory.",
            address=lock_path,
        )
    return fd


def _lock_endpoint(path: str) -> int:
    """Take the advisory lock of ``path`` for this listener's lifetime; return its fd."""
    lock_path = path + ".lock"
    while True:
        fd = _open_lock_file(lock_path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            with _listening_lock:
                here = _listening_here.get(path) == os.getpid()
            if here:
                raise PipeInUseError(
                    f"this process already listens on {path} (a listener not yet closed);"
                    " close it first or use another name",
                    address=path,
                ) from None
            raise PipeInUseError(
                f"another process is listening on {path}; pick another name or stop it",
                address=path,
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # A closing listener unlinks the lock file: make sure ours is the live one.
        try:
            same = os.lstat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


_umask_lock = threading.Lock()


def _bind_private(sock: socket.socket, path: str, mode: int, backlog: int) -> None:
    """Bind and listen at ``path`` so the socket file never has wider access than ``mode``.

    The file is created inside a fresh 0700 directory next to ``path``,
    chmod-ed, then renamed into place (atomically replacing a stale file), so
    it is reachable only once it is listening and has its final mode.
    """
    parent = os.path.dirname(path) or "."
    tmpdir = tempfile.mkdtemp(prefix=".", dir=parent)
    tmp = os.path.join(tmpdir, "s")
    dirfd = -1
    ours = True  # tmpdir is still the directory mkdtemp made
    try:
        if os.path.isdir("/proc/self/fd"):
            # Linux: reach the new directory through a descriptor. In a directory others
            # may write (no sticky bit) they can rename it and put theirs, with a symlink
            # ``s``, in its place between our bind and chmod: the chmod would follow it.
            # The name is short too, so the umask below (process-wide: it changes the
            # mode of files other threads create meanwhile) is not needed.
            dirfd = os.open(tmpdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            st = os.fstat(dirfd)
            if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) != 0o700:
                ours = False
                raise PipePermissionError(
                    f"the temporary directory {tmpdir} was replaced as soon as it was created:"
                    " another user can write to its directory. Listen in a directory only you"
                    " can write to (a bare name uses your private per-user directory).",
                    address=path,
                )
            tmp = f"/proc/self/fd/{dirfd}/s"
        if len(os.fsencode(tmp)) > SUN_PATH_MAX:
            # No room for the temporary name: create in place under a tight umask.
            with _umask_lock:
                old = os.umask(0o777 & ~mode)
                try:
                    if os.path.lexists(path):
                        os.unlink(path)  # stale (checked by the caller, under the lock)
                    sock.bind(path)
                finally:
                    os.umask(old)
            sock.listen(backlog)
            return
        sock.bind(tmp)
        os.chmod(tmp, mode)
        sock.listen(backlog)
        os.rename(tmp, path)
    finally:
        if ours:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if dirfd >= 0:
            if ours:  # not another user's directory put in its place since
                try:
                    ours = os.path.samestat(os.lstat(tmpdir), os.fstat(dirfd))
                except FileNotFoundError:
                    ours = False
            os.close(dirfd)
        if ours:
            os.rmdir(tmpdir)


def _own_socket_inode(path: str) -> int:
    """The inode of the socket just bound at ``path``, which must still be ours."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is None or not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.getuid():
        raise PipePermissionError(
            f"the socket {path} was removed or replaced as soon as it was created: another"
            " user can write to its directory. Listen in a directory only you can write to"
            " (a bare name uses your private per-user directory)."
        )
    return st.st_ino


@final
class UnixListener:
    """A listening Unix domain socket with an owner lock and a wake-up pipe."""

    def __init__(self, address: Address, options: ListenOptions) -> None:
        self._closed = True  # until fully set up, so __del__/close are safe
        self._address = address.path
        self._options = options
        self._uid = os.getuid()
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._waiters = 0
        self._wait_threads: set[int] = set()  # threads whose wait_any counts in _waiters
        self._lock_fd = self._wake_r = self._wake_w = -1
        self._sock: socket.socket | None = None
        self._inode = -1
        if options.allow_other_users and address.private_dir is not None:
            raise InvalidPipeNameError(
                f"allow_other_users=True needs an absolute path other users can reach, not the"
                f" bare name {address.name!r}: a bare name lives in your private per-user"
                f" directory {address.private_dir} (0700), and another user's bare name"
                " resolves to their own directory. Listen on e.g. /run/APP/NAME.sock (a"
                " directory they can enter) and give them that path.",
                name=address.name,
            )
        if address.private_dir is not None:
            ensure_private_dir(address.private_dir, create=True)
        elif not os.path.isdir(os.path.dirname(self._address) or "."):
            raise _missing_parent(self._address)
        try:  # every step undoes the ones before it if it fails (EMFILE, Ctrl+C...)
            self._lock_fd = _lock_endpoint(self._address)
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_w, False)
            self._sock = self._bind(options)
            self._inode = _own_socket_inode(self._address)
        except NpipesError:  # an OSError too: keep it as it is
            self._undo()
            raise
        except OSError as exc:
            self._undo()
            raise translate_os_error(exc, "listen", address=self._address) from exc
        except BaseException:
            self._undo()
            raise
        with _listening_lock:
            _listening_here[self._address] = self._pid
        self._closed = False

    def _undo(self) -> None:
        """Release what a failed ``__init__`` had taken."""
        if self._sock is not None:
            self._unlink_if_ours()
            self._sock.close()
        self._close_wake()
        if self._lock_fd >= 0:
            self._release_lock()

    def _bind(self, options: ListenOptions) -> socket.socket:
        path = self._address
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None:
            if not stat.S_ISSOCK(st.st_mode):
                raise PipeInUseError(
                    f"{path} exists and is not a socket; remove it or use another name",
                    address=path,
                )
            if _probe_live(path):
                raise PipeInUseError(
                    f"a listener that does not hold the npipes lock serves {path};"
                    " stop it or use another name",
                    address=path,
                )
            # Otherwise a dead listener left it: the rename below replaces it.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            mode = 0o666 if options.allow_other_users else 0o600
            _bind_private(sock, path, mode, options.backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    @property
    def address(self) -> str:
        return self._address

    @property
    def closed(self) -> bool:
        return self._closed

    def accept(self, deadline: Deadline) -> UnixStream:
        with self._lock:
            if self._closed:
                raise ConnectionClosedError("the listener is closed", address=self._address)
            self._waiters += 1
        try:
            listening = self.listening_socket
            poller = select.poll()
            wake_only = select.poll()
            try:
                poller.register(listening, select.POLLIN)
                poller.register(self._wake_r, select.POLLIN)
                wake_only.register(self._wake_r, select.POLLIN)
            except (ValueError, OSError) as exc:
                # close() from another thread got in between: the socket is gone.
                self._raise_if_closed(exc)
                raise
            while True:
                ready = poller.poll(wait_ms(deadline))
                self._raise_if_closed()  # close() from another thread woke us
                if not ready:
                    self._raise_if_expired(deadline)
                    continue
                try:
                    sock, _ = listening.accept()
                except (BlockingIOError, ConnectionAbortedError):
                    continue  # another thread took it, or the client left
                except OSError as exc:
                    self._raise_if_closed(exc)
                    if exc.errno not in ACCEPT_LATER_ERRNOS:
                        raise translate_os_error(exc, "accept", address=self._address) from exc
                    # Out of descriptors (or memory): the client stays queued. Wait
                    # (close() still wakes us) and retry, without spinning or raising.
                    wake_only.poll(wait_ms(deadline, ACCEPT_PAUSE))
                    self._raise_if_closed()
                    self._raise_if_expired(deadline)
                    continue
                peer = self.admit(sock)
                if peer is not None:
                    return UnixStream(sock, peer, self._address)
        finally:
            with self._lock:
                self._waiters -= 1
                if self._waiters == 0 and self.closed:
                    self._close_wake()

    def fileno(self) -> int:
        """The listening socket's descriptor: readable when a client is queued (npipes.wait)."""
        return self.listening_socket.fileno()

    def client_waiting(self) -> bool:
        """Whether a client is queued (the listening socket is readable); False once closed."""
        if self._closed:
            return False
        poller = select.poll()  # not select(): descriptors past FD_SETSIZE (1024) are common
        try:
            poller.register(self.listening_socket, select.POLLIN)
        except (OSError, ValueError):
            return False  # closed from another thread meanwhile
        return bool(poller.poll(0))

    def _start_wait(self) -> list[int] | None:
        """For wait_any: the descriptors to watch (the socket, and the wake-up pipe
        that close() writes to), or None once closed. Pair with :meth:`_end_wait`."""
        me = threading.get_ident()
        with self._lock:
            if self._closed:
                return None
            self._waiters += 1
            self._wait_threads.add(me)
            return [self.listening_socket.fileno(), self._wake_r]

    def _end_wait(self) -> None:
        """End this thread's :meth:`_start_wait` (a no-op if it started none)."""
        me = threading.get_ident()
        with self._lock:
            if me not in self._wait_threads:
                return
            self._wait_threads.discard(me)
            self._waiters -= 1
            if self._waiters == 0 and self._closed:
                self._close_wake()

    def _raise_if_closed(self, exc: BaseException | None = None) -> None:
        if self._closed:
            raise ConnectionClosedError("the listener was closed", address=self._address) from exc

    def _raise_if_expired(self, deadline: Deadline) -> None:
        if deadline.expired():
            raise PipeTimeoutError(
                f"no client connected to {self._address} within {seconds(deadline.timeout)}",
                timeout=deadline.timeout,
                address=self._address,
            )

    @property
    def listening_socket(self) -> socket.socket:
        """The listening socket (non-blocking), for the asyncio front end."""
        assert self._sock is not None, "set in __init__"
        return self._sock

    def admit(self, sock: socket.socket) -> PeerInfo | None:
        """The peer of a just-accepted ``sock``, or None after closing it (wrong uid, gone)."""
        try:
            peer = peer_credentials(sock)
        except OSError:
            sock.close()
            return None  # the client already left
        if not self._options.allow_other_users and peer.uid not in (None, self._uid):
            # Another user reached the socket (e.g. its mode was changed): refuse at once.
            sock.close()
            return None
        return peer

    def _close_wake(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_r = self._wake_w = -1

    def _release_lock(self) -> None:
        if os.getpid() == self._pid:  # a forked child leaves the parent's lock file alone
            lock_path = self._address + ".lock"
            try:
                if os.lstat(lock_path).st_ino == os.fstat(self._lock_fd).st_ino:
                    os.unlink(lock_path)
            except OSError:
                pass
        os.close(self._lock_fd)
        self._lock_fd = -1

    def _unlink_if_ours(self) -> None:
        """Remove the socket file if it is still the one we bound (same inode), in our pid."""
        if os.getpid() != self._pid:
            return
        try:
            if os.lstat(self._address).st_ino == self._inode:
                os.unlink(self._address)
        except OSError:
            pass

    def close(self) -> None:
        """Stop listening and remove the socket file (in the creating process only).

        In a forked child this only closes the descriptors: the parent keeps its
        endpoint, its lock and its pending accepts.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            mine = os.getpid() == self._pid
            if mine:
                with contextlib.suppress(OSError):  # pipe full: a wake-up is pending anyway
                    os.write(self._wake_w, b"x")
                with _listening_lock:
                    _listening_here.pop(self._address, None)
            self._unlink_if_ours()
            self.listening_socket.close()
            self._release_lock()
            if self._waiters == 0 or not mine:
                self._close_wake()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"unclosed npipes listener {self._address!r}", ResourceWarning, 2)
            self.close()


def listen(address: Address, options: ListenOptions) -> UnixListener:
    """Listen on ``address`` (see :class:`UnixListener`)."""
    return UnixListener(address, options)


def check_listener_uid(sock: socket.socket, path: str, allowed_uids: frozenset[int]) -> PeerInfo:
    """The listener's credentials, if it runs as us, as root, or as an allowed uid.

    Called right after connecting, before a byte is sent: a listener of
    another user (one who squatted the name or its directory) gets nothing.

    Raises:
        PipePermissionError: the listener runs as another uid (``sock`` is closed).
    """
    peer = peer_credentials(sock)
    me = os.getuid()
    if peer.uid is None or peer.uid in (me, 0) or peer.uid in allowed_uids:
        return peer
    sock.close()
    raise PipePermissionError(
        f"the listener at {path} runs as uid {peer.uid}, not as you (uid {me}); nothing"
        " was sent. Another user may have taken the name or its directory. If you trust"
        " that user, allow its uid (allowed_uids).",
        address=path,
    )


def start_connect(address: Address) -> tuple[socket.socket, bool]:
    """Check the private directory, then start a non-blocking connect to ``address``.

    Returns:
        The socket and whether it is connected; False means the connect is in
        progress (EINPROGRESS: wait until writable, then :func:`finish_connect`).

    Raises:
        OSError: the connect failed (EAGAIN: the backlog is full); the socket is closed.
        PipePermissionError: the private directory is not safe (checked on every
            try: another user may create it while a client waits).
    """
    if address.private_dir is not None:
        ensure_private_dir(address.private_dir, create=False)
    target, pinned = _unfollowed(address.path)
    try:
        sock = new_socket()
        try:
            sock.setblocking(False)
            sock.connect(target)
        except OSError as exc:
            if (
                exc.errno == errno.EINPROGRESS
            ):  # pragma: no cover - BSD/macOS; never on Linux AF_UNIX
                return sock, False
            sock.close()
            raise
        except BaseException:
            sock.close()
            raise
    finally:
        if pinned >= 0:
            os.close(pinned)
    return sock, True


def _unfollowed(path: str) -> tuple[str, int]:
    """What to connect to for ``path`` without following a symlink there, and a
    descriptor to close after connecting (-1 for none).

    Another user may plant a symlink in a shared directory pointing to a listener
    the uid check trusts (yours, root's): the client would talk to a service it
    never named. Linux: the socket is opened O_PATH|O_NOFOLLOW and reached through
    /proc/self/fd, so it cannot be swapped between the check and the connect.

    Raises:
        PipePermissionError: ``path`` is a symlink.
        OSError: as ``connect`` (ENOENT: nothing there yet).
    """
    o_path = getattr(os, "O_PATH", 0)
    if o_path and os.path.isdir("/proc/self/fd"):
        fd = os.open(path, o_path | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            link = stat.S_ISLNK(os.fstat(fd).st_mode)
        except BaseException:
            os.close(fd)
            raise
        if link:
            os.close(fd)
        target = f"/proc/self/fd/{fd}"
    else:  # pragma: no cover - macOS, BSD: checked, but not atomically
        fd, target = -1, path
        link = stat.S_ISLNK(os.lstat(path).st_mode)
    if link:
        raise PipePermissionError(
            f"{path} is a symlink (perhaps planted by another user); npipes does not"
            " connect through it. Give the socket's real path.",
            address=path,
        )
    return target, fd


def finish_connect(sock: socket.socket) -> None:  # pragma: no cover - after EINPROGRESS (BSD)
    """Raise the error of a connect that was in progress (the socket is closed then)."""
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        sock.close()
        raise OSError(err, os.strerror(err))


def connect(
    address: Address,
    deadline: Deadline,
    *,
    wait_for_listener: bool,
    allowed_uids: frozenset[int] = frozenset(),
) -> UnixStream:
    """Connect to ``address``; with ``wait_for_listener``, retry until it appears or time runs out.

    A full backlog (EAGAIN) is retried with backoff until the deadline.

    Args:
        allowed_uids: uids besides yours (and root) the listener may run as.
    Raises:
        PipeNotFoundError: nobody listens (at once, unless waiting).
        PipeBusyError: the listener's backlog stayed full until the deadline.
        PipePermissionError: the socket or its directory belongs to another
            user, or the listener runs as a uid not allowed.
        PipeTimeoutError: waiting for the listener outlasted the deadline.
    """
    path = address.path
    pause = 0.001
    while True:
        try:
            sock, done = start_connect(address)
            if not done:  # pragma: no cover - EINPROGRESS: BSD/macOS, never on Linux AF_UNIX
                try:
                    _poll(sock, _READY_OUT, deadline, "connect")
                    finish_connect(sock)
                except BaseException:
                    sock.close()
                    raise
        except PipeTimeoutError as exc:  # pragma: no cover - only from the EINPROGRESS wait
            raise PipeTimeoutError(
                f"connect to {path} timed out after {seconds(deadline.timeout)}",
                timeout=deadline.timeout,
                address=path,
            ) from exc
        except NpipesError:  # an OSError too (the directory check): keep it as it is
            raise
        except OSError as exc:
            connect_failed(exc, address, deadline, wait_for_listener=wait_for_listener)
        else:
            peer = check_listener_uid(sock, path, allowed_uids)
            return UnixStream(sock, peer, path)
        left = deadline.remaining()
        time.sleep(pause if left is None else min(pause, left))
        pause = min(pause * 2, 0.05)


def new_socket() -> socket.socket:
    """A fresh Unix stream socket (for the asyncio front end's connect)."""
    return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)


def connect_failed(
    exc: OSError, address: Address, deadline: Deadline, *, wait_for_listener: bool
) -> None:
    """Decide after a failed connect: return to retry, or raise the npipes error."""
    path = address.path
    if isinstance(exc, TimeoutError) or exc.errno == errno.ETIMEDOUT:
        raise PipeTimeoutError(
            f"connect to {path} timed out after {seconds(deadline.timeout)}",
            timeout=deadline.timeout,
            address=path,
        ) from exc
    retry = exc.errno == errno.EAGAIN or (
        wait_for_listener and exc.errno in (errno.ENOENT, errno.ECONNREFUSED)
    )
    if retry and not deadline.expired():
        return
    if retry and wait_for_listener and exc.errno != errno.EAGAIN:
        raise PipeTimeoutError(
            f"no listener appeared at {path} within {seconds(deadline.timeout)}",
            timeout=deadline.timeout,
            address=path,
        ) from exc
    raise translate_os_error(exc, "connect", address=path) from exc


def wait_any(items: Sequence[WaitableStream | WaitableListener], deadline: Deadline) -> list[int]:
    """Wait until some of ``items`` may be ready (bytes, end of stream, a client); their indices.

    ``[]`` once ``deadline`` passed. An item that cannot be watched any more (closed
    by another thread) is returned at once: the caller's check finds it closed. A
    listener's wake-up pipe is watched too, since closing a descriptor does not wake
    a selector (a stream's close() shuts the socket down, which does). poll(), not
    epoll: a close() right after the shutdown drops the event from an epoll set
    before the waiting thread collects it (seen: the wait slept on).
    """
    reached = 0  # items[:reached] may count as a listener's waiter (_end_wait ends only those)
    try:
        with selectors.PollSelector() as selector:
            for index, item in enumerate(items):
                if isinstance(item, UnixListener):
                    reached = index + 1  # before: a Ctrl+C as _start_wait returns is ended too
                    fds = item._start_wait()
                    if fds is None:
                        return [index]
                else:
                    fds = [item.fileno()]
                try:
                    for fd in fds:
                        selector.register(fd, selectors.EVENT_READ, index)
                except (OSError, ValueError, KeyError):
                    return [index]
            while True:
                left = deadline.remaining()
                events = selector.select(None if left is None else min(left, _MAX_WAIT))
                if events:
                    return sorted({key.data for key, _ in events})
                if deadline.expired():
                    return []
    finally:
        for item in items[:reached]:
            if isinstance(item, UnixListener):
                item._end_wait()
