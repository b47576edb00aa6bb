"""``npipes bridge``: relay messages between a local endpoint and a ZeroMQ socket.

Two bridges, one with ``--zmq-bind`` and one with ``--zmq-connect``, link two
local npipes programs on two hosts without changing their code. Choices:

- Local side: the bridge listens on ``--name`` (a local program ``connect``\\ s
  to it as if the far program were local), or with ``--connect`` it connects to a
  local listener (reconnecting whenever that connection ends). One local
  connection at a time: the link is point to point.
- ZeroMQ side: a DEALER socket at each end (asynchronous both ways, reconnects by
  itself), ``ZMQ_IMMEDIATE`` on, heartbeats every 2 s (a dead peer is noticed
  within 10 s). Each message is two frames, a 24-byte header (kind TEXT/BINARY/
  ACK, CRC-32, session, sequence number) and the payload: see
  :mod:`npipes._bridge_wire`. Text stays ``str``, binary stays ``bytes``.
- CRC end to end: the sending bridge computes the CRC-32 of each payload, the
  receiving bridge verifies it before delivering. A mismatch is logged and
  counted, and the message is dropped (not delivered); the local receiver sees
  a gap, never the corrupt bytes.
- Backpressure bounded in bytes: a credit window. A bridge sends a message only
  while the bytes it sent and the far bridge has not yet acknowledged are below
  ``max_queue_bytes``; the far bridge acknowledges a message once it handed it
  to its local program. When the far side is slow, the window fills, this bridge
  stops reading its local connection and the local sender blocks. The bytes
  inside both bridges and ZeroMQ stay under ``max_queue_bytes`` plus one message
  per direction (``SNDHWM``/``RCVHWM`` bound the message count as well). The
  window is reset only when a connection that completed its ZeroMQ handshake
  ends (monitor events): a port scan or a refused key does not reset it.
- Restart or link drop: messages in flight (sent but not acknowledged: at most
  ``max_queue_bytes``) are lost, never duplicated or reordered; the receiving
  bridge logs the gap it sees (sequence numbers). A restarted bridge has a new
  session; the link resumes by itself. The local program connected to a
  restarted bridge sees its connection end (``reconnect=True`` reconnects).
- CurveZMQ: ``--curve-secret-key`` (this bridge's certificate, made by
  ``zmq.auth.create_certificates``), with ``--curve-server-key`` (the binding
  bridge's public certificate) when connecting, or ``--curve-clients DIR`` (the
  allowed connecting bridges' public certificates) when binding. Without Curve,
  a non-loopback ``tcp://`` endpoint is refused unless ``--insecure``.

Interface used by :mod:`npipes.cli` (the command's common options ``--name``,
``--framing``, ``--crc``, ``--timeout`` and ``-v`` are added there):
``add_arguments(parser)`` adds the bridge's own options, ``run(args)`` runs it and
returns the exit code (2 for a usage error, printed as one line on stderr),
raising :class:`npipes.errors.NpipesError` subclasses for the CLI to map onto its
exit codes.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, final

from . import _bridge_wire as wire
from ._crc import crc32
from .connection import Connection, Listener, connect, listen
from .errors import (
    ChecksumError,
    ConnectionClosedError,
    NpipesError,
    PipeInUseError,
    PipeNotFoundError,
    PipeTimeoutError,
    ProtocolError,
)

if TYPE_CHECKING:
    from types import FrameType

__all__ = ["DEFAULT_MAX_QUEUE_BYTES", "Bridge", "InsecureEndpointError", "add_arguments", "run"]

InsecureEndpointError = wire.InsecureEndpointError

log = logging.getLogger("npipes.bridge")

DEFAULT_MAX_QUEUE_BYTES: Final = 8 * 1024 * 1024
_HWM: Final = 1000  # messages; the byte window is the real bound
_POLL_MS: Final = 500


def _import_zmq() -> Any:
    try:
        import zmq
    except ImportError as exc:
        raise ImportError(
            "npipes bridge needs pyzmq: pip install 'npipes[bridge]'", name="zmq"
        ) from exc
    return zmq


@final
@dataclass(slots=True)
class _Incoming:
    session: bytes
    seq: int
    message: bytes | str | None  # None: corrupt, acknowledged but not delivered
    size: int


@final
@dataclass(slots=True)
class Stats:
    """What a bridge did (all counts since it started)."""

    sent: int = 0
    """Messages read from the local side and sent to the far bridge."""
    delivered: int = 0
    """Messages from the far bridge handed to the local side."""
    corrupt: int = 0
    """Messages from the far bridge dropped: CRC mismatch or a malformed frame."""
    lost: int = 0
    """Gaps in the far bridge's sequence numbers (its restart, a link drop)."""
    local_errors: int = 0
    """Local messages that failed their own checks (ChecksumError, bad UTF-8)."""


@final
class Bridge:
    """Relay messages between the local endpoint ``name`` and a ZeroMQ socket.

    Args:
        name: the local pipe name.
        zmq_bind, zmq_connect: the ZeroMQ endpoint to bind or connect (exactly one).
        connect: connect to a local listener on ``name`` instead of listening.
        curve_secret_key: this bridge's Curve certificate file (secret), or None
            for no Curve.
        curve_server_key: connecting with Curve: the binding bridge's public
            certificate file.
        curve_clients: binding with Curve: directory of the public certificates
            of the bridges allowed to connect.
        insecure: allow plain TCP to a non-loopback address.
        max_queue_bytes: the credit window, in bytes (see the module docstring).
        options: local npipes options (``framing``, ``crc``, ``max_message_size``).
    Raises:
        ImportError: pyzmq is not installed.
        ValueError: a bad combination of arguments.
        InsecureEndpointError: off-host plain TCP without ``insecure``.
        PipeInUseError: the ZeroMQ endpoint is bound already, or as :func:`npipes.listen`.
        NpipesError: as :func:`npipes.listen`.
    """

    def __init__(
        self,
        name: str,
        *,
        zmq_bind: str | None = None,
        zmq_connect: str | None = None,
        connect: bool = False,
        curve_secret_key: str | None = None,
        curve_server_key: str | None = None,
        curve_clients: str | None = None,
        insecure: bool = False,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        **options: Any,
    ) -> None:
        if (zmq_bind is None) == (zmq_connect is None):
            raise ValueError("give exactly one of zmq_bind and zmq_connect")
        endpoint = zmq_bind if zmq_bind is not None else zmq_connect
        assert endpoint is not None
        curve = curve_secret_key is not None
        if not curve and (curve_server_key or curve_clients):
            raise ValueError("--curve-server-key and --curve-clients need --curve-secret-key")
        if curve and zmq_bind is not None and not curve_clients:
            raise ValueError(
                "binding with Curve needs --curve-clients DIR: the public certificates"
                " of the bridges allowed to connect"
            )
        if curve and zmq_connect is not None and not curve_server_key:
            raise ValueError(
                "connecting with Curve needs --curve-server-key FILE: the binding"
                " bridge's public certificate"
            )
        if zmq_bind is not None and curve_server_key:
            raise ValueError(
                "--curve-server-key is for --zmq-connect; binding uses --curve-clients"
            )
        if zmq_connect is not None and curve_clients:
            raise ValueError(
                "--curve-clients is for --zmq-bind; connecting uses --curve-server-key"
            )
        if max_queue_bytes < 1:
            raise ValueError(f"max_queue_bytes must be at least 1, not {max_queue_bytes}")
        wire.check_endpoint(endpoint, curve=curve, insecure=insecure)
        zmq = _import_zmq()
        keys = _load_keys(curve_secret_key, curve_server_key, curve_clients)
        self._zmq = zmq
        self.name: Final = name
        self.endpoint: Final = endpoint
        self.binding: Final = zmq_bind is not None
        self.connecting_locally: Final = connect
        self.curve: Final = curve
        self.max_queue_bytes: Final = max_queue_bytes
        self.stats = Stats()
        self._options = options
        self._session = os.urandom(8)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._closed = False
        self._runner: threading.Thread | None = None  # the thread in run()
        self._done = threading.Event()  # run() returned
        self._failure: Exception | None = None
        # ZeroMQ connections by descriptor (monitor events): a window reset only
        # when one that completed its handshake ends.
        self._pending_fds: set[int] = set()
        self._linked_fds: set[int] = set()
        self._handshake_failed = False
        # sending direction (local -> zmq)
        self._outbox: tuple[int, bytes] | None = None  # (kind, payload) read, not yet sent
        self._window: collections.deque[tuple[int, int]] = collections.deque()  # (seq, size)
        self._inflight = 0
        self._seq = 0
        # receiving direction (zmq -> local)
        self._inbox: collections.deque[_Incoming] = collections.deque()
        self._inbox_bytes = 0
        self._peer_session: bytes | None = None
        self._peer_seq = 0
        self._ack: tuple[bytes, int] | None = None
        self._conn: Connection | None = None
        self._listener: Listener | None = None
        self._threads: list[threading.Thread] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._auth: Any = None
        self._ctx = zmq.Context()
        self._sock: Any = None
        self._monitor: Any = None
        try:
            sock = self._make_socket(keys, curve_clients)
            self._monitor = sock.get_monitor_socket()
            try:
                if self.binding:
                    sock.bind(endpoint)
                else:
                    sock.connect(endpoint)
            except zmq.ZMQError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PipeInUseError(
                        f"ZeroMQ endpoint {endpoint!r} is in use; stop what binds it or"
                        " choose another port"
                    ) from exc
                raise ValueError(f"bad ZeroMQ endpoint {endpoint!r}: {exc}") from exc
            if not connect:
                self._listener = listen(name, **options)
        except BaseException:
            self._close_zmq()
            raise

    def _make_socket(
        self, keys: tuple[bytes, bytes, bytes | None] | None, clients: str | None
    ) -> Any:
        zmq = self._zmq
        sock = self._sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # no queue for a peer that is not there
        sock.setsockopt(zmq.SNDHWM, _HWM)
        sock.setsockopt(zmq.RCVHWM, _HWM)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 2000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 10000)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        limit = self._options.get("max_message_size")
        if limit is None:
            from ._frame import DEFAULT_MAX_MESSAGE_SIZE

            limit = DEFAULT_MAX_MESSAGE_SIZE
        sock.setsockopt(zmq.MAXMSGSIZE, limit + wire.HEADER.size)
        if keys is None:
            return sock
        public, secret, server_public = keys
        sock.curve_publickey = public
        sock.curve_secretkey = secret
        if self.binding:
            from zmq.auth.thread import ThreadAuthenticator

            self._auth = ThreadAuthenticator(self._ctx, log=log.getChild("auth"))
            self._auth.start()
            self._auth.configure_curve(domain="*", location=clients)
            sock.curve_server = True
        else:
            sock.curve_serverkey = server_public
        return sock

    # -- running -------------------------------------------------------------

    def run(self) -> None:
        """Relay until :meth:`stop` (or :meth:`close`) is called from another thread
        or a signal handler; closes the bridge when it returns.

        Raises:
            Exception: what broke one of the bridge's threads (after closing).
        """
        self._runner = threading.current_thread()
        try:
            self._start_threads()
            while not self._stop.is_set():
                self._step()
        finally:
            self.close()
            self._done.set()
        if self._failure is not None:
            raise self._failure

    def stop(self) -> None:
        """Ask :meth:`run` to return; safe from any thread and from a signal handler."""
        self._stop.set()
        self._wake()

    def _start_threads(self) -> None:
        for target, what in ((self._local_loop, "local"), (self._writer_loop, "writer")):
            thread = threading.Thread(target=self._guarded, args=(target,), name=f"bridge-{what}")
            thread.daemon = True
            thread.start()
            self._threads.append(thread)

    def _guarded(self, target: Any) -> None:
        try:
            target()
        except Exception as exc:
            if not self._stop.is_set():
                log.exception("bridge thread failed; stopping")
                self._failure = exc
            self.stop()

    def _wake(self) -> None:
        # Full (a wake-up is pending anyway) or closed (stopping): nothing to do.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    # -- the ZeroMQ side (the thread in run) -----------------------------------

    def _step(self) -> None:
        zmq = self._zmq
        with self._cond:
            want_out = self._ack is not None or self._outbox is not None
            can_read = not self._inbox or self._inbox_bytes - self._inbox[-1].size < (
                self.max_queue_bytes
            )
        flags = (zmq.POLLIN if can_read else 0) | (zmq.POLLOUT if want_out else 0)
        poller = zmq.Poller()
        if flags:
            poller.register(self._sock, flags)
        poller.register(self._monitor, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        ready = dict(poller.poll(_POLL_MS))
        if self._wake_r in ready or self._wake_r.fileno() in ready:
            try:
                while self._wake_r.recv(4096):
                    pass
            except BlockingIOError:
                pass
        if self._monitor in ready:
            self._monitor_events()
        events = ready.get(self._sock, 0)
        if events & zmq.POLLIN:
            self._receive()
        if want_out:
            self._send_pending()

    def _monitor_events(self) -> None:
        zmq = self._zmq
        from zmq.utils.monitor import recv_monitor_message

        while True:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            kind = event["event"]
            where = event.get("endpoint", b"")
            if isinstance(where, bytes):
                where = where.decode(errors="replace")
            value = event["value"]
            if kind in (zmq.EVENT_ACCEPTED, zmq.EVENT_CONNECTED):
                self._pending_fds.add(value)
            elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                # Its value is no descriptor: every connection still shaking hands
                # may be the one (conservative: its end then resets the window).
                self._linked_fds |= self._pending_fds
                self._pending_fds.clear()
                log.info("link up (%s)", where)
            elif kind == zmq.EVENT_DISCONNECTED:
                if value not in self._linked_fds or self._handshake_failed:
                    # Never a link (a failed handshake, a port scan): nothing of
                    # ours was in it, so the window stays.
                    self._pending_fds.discard(value)
                    self._linked_fds.discard(value)
                    self._handshake_failed = False
                    continue
                self._linked_fds.discard(value)
                with self._cond:
                    count, size = len(self._window), self._inflight
                    self._window.clear()
                    self._inflight = 0
                    self._cond.notify_all()
                log.info(
                    "link down (%s): %d message(s), %d bytes not acknowledged may be lost",
                    where,
                    count,
                    size,
                )
            elif kind in (
                zmq.EVENT_HANDSHAKE_FAILED_AUTH,
                zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
            ):
                # libzmq reports that connection's DISCONNECTED next, from the same
                # I/O thread (one I/O thread: the Context default).
                self._handshake_failed = True
                log.warning(
                    "link refused (%s): ZeroMQ handshake failed (%s): %s",
                    where,
                    "authentication" if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH else "protocol",
                    "a Curve key is not allowed or not the expected one"
                    if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH
                    else "the peer is not a bridge with matching Curve settings",
                )

    def _receive(self) -> None:
        zmq = self._zmq
        for _ in range(256):
            with self._cond:
                if self._inbox and self._inbox_bytes - self._inbox[-1].size >= self.max_queue_bytes:
                    return  # a peer beyond its credit: let ZeroMQ's HWM and TCP hold it
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            header = wire.unpack(frames[0]) if len(frames) == 2 else None
            if header is None:
                self.stats.corrupt += 1
                log.warning("dropped a malformed ZeroMQ message (%d frame(s))", len(frames))
                continue
            if header.kind == wire.ACK:
                self._acknowledged(header.session, header.seq)
            elif header.session == self._session:
                self._connected_to_itself()
            else:
                self._incoming(header, frames[1])

    def _connected_to_itself(self) -> None:
        """Our own message came back: a TCP connect to a loopback port nobody
        listens on can connect the socket to itself (simultaneous open). Drop the
        connection and connect again; what we sent meanwhile is lost."""
        log.warning(
            "connected to itself (nobody listens on %s yet); connecting again", self.endpoint
        )
        if not self.binding:
            self._sock.disconnect(self.endpoint)
            self._sock.connect(self.endpoint)

    def _acknowledged(self, session: bytes, seq: int) -> None:
        if session != self._session:
            return  # for an earlier run of this bridge
        with self._cond:
            window = self._window
            while window and window[0][0] <= seq:
                self._inflight -= window.popleft()[1]
            self._cond.notify_all()

    def _incoming(self, header: wire.Header, payload: bytes) -> None:
        if header.session != self._peer_session:
            if self._peer_session is not None:
                log.info("the far bridge restarted (new session)")
            self._peer_session = header.session
            self._peer_seq = header.seq - 1
        gap = header.seq - self._peer_seq - 1
        if gap > 0:
            self.stats.lost += gap
            log.warning("%d message(s) from the far bridge lost in the link", gap)
        self._peer_seq = max(self._peer_seq, header.seq)
        message: bytes | str | None = payload
        if crc32(payload) != header.crc:
            self.stats.corrupt += 1
            log.warning(
                "checksum mismatch: dropped message %d from the far bridge (%d bytes)",
                header.seq,
                len(payload),
            )
            message = None
        elif header.kind == wire.TEXT:
            try:
                message = payload.decode("utf-8")
            except UnicodeDecodeError:
                self.stats.corrupt += 1
                log.warning("dropped text message %d: not UTF-8", header.seq)
                message = None
        with self._cond:
            self._inbox.append(_Incoming(header.session, header.seq, message, len(payload)))
            self._inbox_bytes += len(payload)
            self._cond.notify_all()

    def _send_pending(self) -> None:
        zmq = self._zmq
        with self._cond:
            ack, outbox = self._ack, self._outbox
        try:
            if ack is not None:
                self._sock.send_multipart(
                    [wire.pack(wire.ACK, 0, ack[0], ack[1]), b""], zmq.NOBLOCK
                )
                with self._cond:
                    if self._ack == ack:
                        self._ack = None
            if outbox is not None:
                kind, payload = outbox
                seq = self._seq + 1
                header = wire.pack(kind, crc32(payload), self._session, seq)
                self._sock.send_multipart([header, payload], zmq.NOBLOCK, copy=False)
                self._seq = seq
                self.stats.sent += 1
                with self._cond:
                    self._window.append((seq, len(payload)))
                    self._inflight += len(payload)
                    self._outbox = None
                    self._cond.notify_all()
        except zmq.Again:
            pass  # no peer, or its queue is full: poll for POLLOUT again

    # -- the local side (its own threads) -----------------------------------------

    def _local_loop(self) -> None:
        """Accept (or connect to) one local peer at a time and read its messages."""
        while not self._stop.is_set():
            conn = self._open_local()
            if conn is None:
                continue
            log.info("local peer connected on %r", self.name)
            with self._cond:
                self._conn = conn
                self._cond.notify_all()
            try:
                self._read_local(conn)
            finally:
                with self._cond:
                    self._conn = None
                    self._cond.notify_all()
                conn.close()
                log.info("local peer on %r gone", self.name)

    def _open_local(self) -> Connection | None:
        try:
            if self._listener is not None:
                return self._listener.accept(timeout=_POLL_MS / 1000)
            return connect(
                self.name, timeout=_POLL_MS / 1000, wait_for_listener=True, **self._options
            )
        except (PipeTimeoutError, PipeNotFoundError):
            return None
        except ConnectionClosedError:
            if self._stop.is_set():
                return None
            raise
        except NpipesError as exc:
            if self._stop.is_set():
                return None
            log.warning("local connection failed: %s", exc)
            self._stop.wait(_POLL_MS / 1000)
            return None

    def _read_local(self, conn: Connection) -> None:
        cond = self._cond
        while not self._stop.is_set():
            with cond:
                while not self._stop.is_set() and (
                    self._outbox is not None or self._inflight >= self.max_queue_bytes
                ):
                    cond.wait()
            if self._stop.is_set():
                return
            try:
                message = conn.recv()
            except (ChecksumError, ProtocolError) as exc:
                if conn.closed:
                    return
                self.stats.local_errors += 1
                log.warning("dropped a local message: %s", exc)
                continue
            except (NpipesError, OSError):
                return
            if isinstance(message, str):
                item = (wire.TEXT, message.encode("utf-8"))
            else:
                item = (wire.BINARY, message)
            with cond:
                self._outbox = item
            self._wake()

    def _writer_loop(self) -> None:
        """Hand messages from the far bridge to the local peer, in order, and
        acknowledge each once handed over (or dropped as corrupt)."""
        cond = self._cond
        while not self._stop.is_set():
            with cond:
                while not self._stop.is_set() and not (
                    self._inbox and (self._conn is not None or self._inbox[0].message is None)
                ):
                    cond.wait()
                if self._stop.is_set():
                    return
                item = self._inbox[0]
                conn = self._conn
            if item.message is not None:
                assert conn is not None
                try:
                    conn.send(item.message)
                except (NpipesError, OSError) as exc:
                    # Kept for the next local peer; the reader sees this one closed.
                    log.debug("local send failed (%s); the message waits for the next peer", exc)
                    conn.close()
                    with cond:
                        while self._conn is conn and not self._stop.is_set():
                            cond.wait()
                    continue
                except (TypeError, ValueError) as exc:
                    # Not for the local framing (a newline under lines, bytes under a
                    # text-only one): nothing was sent, so drop it and go on.
                    self.stats.local_errors += 1
                    log.warning("dropped message %d from the far bridge: %s", item.seq, exc)
                else:
                    self.stats.delivered += 1
            with cond:
                self._inbox.popleft()
                self._inbox_bytes -= item.size
                self._ack = (item.session, item.seq)
            self._wake()

    # -- closing -------------------------------------------------------------

    def close(self) -> None:
        """Stop relaying and release everything; idempotent. Messages not yet
        acknowledged by the far bridge, and those not yet delivered here, are lost.

        From another thread than :meth:`run`'s, it stops it and waits for it to close.
        """
        runner = self._runner
        if runner is not None and runner is not threading.current_thread():
            self.stop()
            self._done.wait()
            return
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
            conn = self._conn
        if conn is not None:
            conn.close()
        if self._listener is not None:
            self._listener.close()
        for thread in self._threads:
            thread.join(10)
        self._close_zmq()
        log.info(
            "stopped: %d sent, %d delivered, %d corrupt dropped, %d lost in the link",
            self.stats.sent,
            self.stats.delivered,
            self.stats.corrupt,
            self.stats.lost,
        )

    def _close_zmq(self) -> None:
        self._closed = True
        sock = self._sock
        if sock is not None:
            if self._monitor is not None:
                sock.disable_monitor()
                self._monitor.close(0)
            sock.close(0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> Bridge:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _load_keys(
    secret_file: str | None, server_file: str | None, clients: str | None
) -> tuple[bytes, bytes, bytes | None] | None:
    """(public, secret, server public) from the certificate files, or None without Curve.

    Raises:
        ValueError: a file is missing or unreadable, or holds no secret key.
    """
    if secret_file is None:
        return None
    import zmq.auth

    try:
        public, secret = zmq.auth.load_certificate(secret_file)
        server_public = None
        if server_file is not None:
            server_public, _ = zmq.auth.load_certificate(server_file)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read a Curve certificate: {exc}") from exc
    if secret is None:
        raise ValueError(f"{secret_file!r} holds no secret key; pass the .key_secret file")
    if clients is not None and not os.path.isdir(clients):
        raise ValueError(f"--curve-clients {clients!r} is not a directory")
    return public, secret, server_public


# -- the command line ----------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the bridge's own options to its subcommand's parser."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--zmq-bind", metavar="ENDPOINT", help="bind a ZeroMQ socket here")
    where.add_argument("--zmq-connect", metavar="ENDPOINT", help="connect a ZeroMQ socket here")
    parser.add_argument(
        "--connect",
        action="store_true",
        help="connect to the local listener NAME (reconnecting) instead of listening on NAME",
    )
    parser.add_argument(
        "--curve-secret-key",
        metavar="FILE",
        help="turn on CurveZMQ: this bridge's secret certificate (zmq.auth .key_secret file)",
    )
    parser.add_argument(
        "--curve-server-key",
        metavar="FILE",
        help="with --zmq-connect: the binding bridge's public certificate (.key file)",
    )
    parser.add_argument(
        "--curve-clients",
        metavar="DIR",
        help="with --zmq-bind: directory of the public certificates allowed to connect",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow plain TCP (no Curve) to or on a non-loopback address",
    )
    parser.add_argument(
        "--max-queue-bytes",
        type=int,
        default=DEFAULT_MAX_QUEUE_BYTES,
        metavar="N",
        help="bytes in flight per direction before the local sender is held back"
        f" (default {DEFAULT_MAX_QUEUE_BYTES})",
    )


def _usage_error(message: str) -> int:
    sys.stderr.write(f"npipes bridge: {message}\n")
    return 2


def run(args: argparse.Namespace) -> int:
    """Run the bridge until interrupted (Ctrl+C: 130; SIGTERM: 0); return the exit code."""
    level = logging.DEBUG if getattr(args, "verbose", False) else logging.INFO
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("npipes bridge: %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(level)
    options: dict[str, Any] = {"framing": getattr(args, "framing", None) or "npipes"}
    if getattr(args, "crc", False):
        options["crc"] = True
    try:
        bridge = Bridge(
            args.name,
            zmq_bind=args.zmq_bind,
            zmq_connect=args.zmq_connect,
            connect=args.connect,
            curve_secret_key=args.curve_secret_key,
            curve_server_key=args.curve_server_key,
            curve_clients=args.curve_clients,
            insecure=args.insecure,
            max_queue_bytes=args.max_queue_bytes,
            **options,
        )
    except InsecureEndpointError as exc:
        return _usage_error(str(exc))
    except ValueError as exc:
        if isinstance(exc, NpipesError):
            raise
        return _usage_error(str(exc))

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        bridge.stop()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    sys.stderr.write(
        f"npipes bridge: ready: local {args.name!r}"
        f" ({'connecting' if args.connect else 'listening'}),"
        f" zmq {'bind' if args.zmq_bind else 'connect'} {bridge.endpoint},"
        f" curve {'on' if bridge.curve else 'off'}\n"
    )
    sys.stderr.flush()
    try:
        bridge.run()
    except KeyboardInterrupt:
        bridge.close()
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
