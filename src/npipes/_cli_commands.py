"""The work of each ``npipes`` command; :mod:`npipes.cli` parses and maps errors.

Pairing (docs/cli.md, "How send and recv pair"): ``send`` and ``recv`` use the
:class:`~npipes.ipc.IPC` facade by default, so either may start first and a
``send`` returns once a ``recv`` took the message. ``recv --connect`` and
``send --connect``/``--wait`` talk to a program that listens instead (plain
``npipes.connect``, no IPC acknowledgement). ``serve`` and ``ping`` use
``npipes.serve(..., respond=...)`` and ``Connection.request``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, BinaryIO, Final

from ._deadline import seconds
from ._frame import DEFAULT_MAX_MESSAGE_SIZE
from ._framings import get_codec
from .connection import Connection, connect
from .errors import (
    ConnectionClosedError,
    MessageTooLargeError,
    NpipesError,
    PipeNotFoundError,
    PipeTimeoutError,
)
from .ipc import IPC
from .server import serve

__all__ = ["COMMANDS", "MAX_REPLY", "TEXT_ONLY", "OutputClosed", "UsageError"]

log = logging.getLogger("npipes.cli")

TEXT_ONLY: Final = frozenset({"lines", "npipes1", "dotnet"})
"""Framings that deliver only text (see ``npipes.serve``'s docstring)."""

_PROGRESS_MIN: Final = 4 << 20  # input from this size up gets a progress bar on a tty
_CHUNK: Final = 1 << 20
_HEX_SHOWN: Final = 32  # bytes of a binary message shown by plain ``recv``


class UsageError(Exception):
    """An impossible option or combination: exit 2 (or ``code``) before any wait."""

    def __init__(self, message: str, *, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class OutputClosed(Exception):
    """Whoever read stdout is gone (``npipes recv | head -1``): stop quietly."""


def _out(data: bytes) -> None:
    try:
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is None:  # a text-only stdout (main() called in-process, io.StringIO)
            sys.stdout.write(data.decode("utf-8", "replace"))
            sys.stdout.flush()
            return
        buffer.write(data)
        buffer.flush()
    except BrokenPipeError:
        # Python's advice: point stdout at devnull so the flush at exit is quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        raise OutputClosed from None


def _within(args: argparse.Namespace) -> str:
    return "" if args.timeout is None else f" within {seconds(args.timeout)}"


# -- send ------------------------------------------------------------------------


def _read_all(stream: BinaryIO, total: int | None) -> bytes:
    """Read ``stream`` to the end, with a progress bar on stderr for large input on a tty."""
    show = sys.stderr.isatty() and (total is None or total >= _PROGRESS_MIN)
    chunks: list[bytes] = []
    got = 0
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
        if got > DEFAULT_MAX_MESSAGE_SIZE:  # endless input (/dev/zero, yes): stop
            raise MessageTooLargeError(
                f"the input is larger than {DEFAULT_MAX_MESSAGE_SIZE} bytes, the largest"
                " message npipes sends; split it into several messages",
                size=got,
                limit=DEFAULT_MAX_MESSAGE_SIZE,
            )
        if show and got >= _PROGRESS_MIN:
            if total:
                done = min(got * 30 // total, 30)
                bar = "#" * done + "." * (30 - done)
                sys.stderr.write(f"\rreading [{bar}] {got >> 20} / {total >> 20} MiB")
            else:
                sys.stderr.write(f"\rreading {got >> 20} MiB")
            sys.stderr.flush()
    if show and got >= _PROGRESS_MIN:
        sys.stderr.write(f"\rsending {got >> 20} MiB...{' ' * 30}\n")
        sys.stderr.flush()
    return b"".join(chunks)


def _payload(args: argparse.Namespace) -> bytes | str:
    """The message: MESSAGE, or bytes read from stdin or --file; text if UTF-8."""
    if args.file is None and args.message != "-":
        text: str = args.message
        data = text.encode("utf-8", "surrogateescape")  # argv's undecodable bytes come back
        if args.binary or data.isascii():
            return data if args.binary else text
    elif args.file is not None:
        with open(args.file, "rb") as stream:
            data = _read_all(stream, os.fstat(stream.fileno()).st_size)
    else:
        data = _read_all(sys.stdin.buffer, None)
    if args.binary:
        return data
    if args.framing == "lines" and data.endswith(b"\n"):
        data = data[:-1]  # a line's own newline (echo TEXT | ...) is the framing's
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        if args.framing in TEXT_ONLY:
            raise UsageError(
                f"the input is not UTF-8 text and the {args.framing} framing carries only"
                " text: choose another --framing"
            ) from None
        return data  # never mangle bytes: non-UTF-8 input travels as a bytes message


def _connect(args: argparse.Namespace, *, wait: bool) -> Connection:
    conn = connect(
        args.name,
        timeout=args.timeout,
        wait_for_listener=wait,
        framing=args.framing,
        crc=args.crc,
    )
    log.debug("connected to %r (pid %s)", args.name, conn.peer.pid)
    return conn


def _open_ipc(args: argparse.Namespace) -> IPC:
    ipc = IPC(args.name, timeout=args.timeout, framing=args.framing)
    log.debug("meeting a peer on %r (either side may start first)", args.name)
    return ipc


def cmd_send(args: argparse.Namespace) -> int:
    message = _payload(args)  # before any wait: a bad --file fails at once
    if args.framing != "npipes":  # it carries any message: no extra pass over a large one
        try:  # a message the framing cannot carry (a newline under lines) fails at once too
            get_codec(args.framing).encode(message, crc=args.crc, max_size=None)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{exc}: change the message or choose another --framing") from None
    if args.connect or args.wait:
        try:
            with _connect(args, wait=args.wait) as conn:
                conn.send(message, timeout=args.timeout)
            log.debug("closed")
        except PipeNotFoundError as exc:
            raise PipeNotFoundError(
                f"nobody listens on {args.name!r} ({exc.address or args.name});"
                " start the listener first, or pass --wait (with --timeout)",
                name=args.name,
                address=exc.address,
            ) from exc
        except PipeTimeoutError as exc:
            raise PipeTimeoutError(
                f"no listener on {args.name!r}{_within(args)}; start it, or raise --timeout",
                timeout=args.timeout,
            ) from exc
        return 0
    try:
        with _open_ipc(args) as ipc:
            ipc.send_message(message, crc=args.crc)
        log.debug("delivered; closed")
    except PipeTimeoutError as exc:
        raise PipeTimeoutError(
            f"no receiver took the message on {args.name!r}{_within(args)};"
            f" start 'npipes recv --name {args.name}' there, or raise --timeout",
            timeout=args.timeout,
        ) from exc
    return 0


# -- recv ------------------------------------------------------------------------


def _peer_pid(source: IPC | Connection) -> int | None:
    peer = source.peer
    return None if peer is None else peer.pid


def describe_binary(data: bytes) -> str:
    """How plain ``recv`` shows a bytes message: size and hex, never ``b'...'``."""
    shown = data[:_HEX_SHOWN].hex(" ")
    more = " ..." if len(data) > _HEX_SHOWN else ""
    return f"[binary, {len(data)} bytes] {shown}{more}".rstrip()


# C0 controls but tab and newline, DEL, C1 controls: escape sequences a peer could
# aim at the user's terminal (retitle, clear, answerback).
_CONTROLS: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _shown(text: str) -> str:
    """``text`` with its control characters written as ``\\xNN`` (for a terminal)."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _emit(args: argparse.Namespace, message: bytes | str, peer_pid: int | None) -> None:
    raw = message.encode("utf-8", "surrogateescape") if isinstance(message, str) else message
    if args.binary:
        _out(raw)
    elif args.json:
        record: dict[str, object] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "size": len(raw),
        }
        if isinstance(message, str):
            record["text"] = message
        else:
            record["base64"] = base64.b64encode(message).decode("ascii")
        record["crc"] = bool(args.crc)
        record["peer_pid"] = peer_pid
        _out(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
    elif isinstance(message, str):
        if sys.stdout.isatty():  # a pipeline gets the text exact; a terminal, no escapes
            raw = _shown(message).encode("utf-8", "surrogateescape")
        _out(raw if raw.endswith(b"\n") else raw + b"\n")
    else:
        _out(describe_binary(message).encode("ascii") + b"\n")


def cmd_recv(args: argparse.Namespace) -> int:
    received = 0
    if args.connect:
        try:
            conn = _connect(args, wait=True)
        except PipeTimeoutError as exc:
            raise PipeTimeoutError(
                f"no listener appeared on {args.name!r}{_within(args)};"
                " start the sending program first, or raise --timeout",
                timeout=args.timeout,
            ) from exc
        with conn:
            while args.count == 0 or received < args.count:
                try:
                    message = conn.recv(timeout=args.timeout)
                except ConnectionClosedError:
                    log.debug("the peer closed the connection")
                    if args.count == 0:
                        return 0
                    raise ConnectionClosedError(
                        f"the peer on {args.name!r} closed after {received} of"
                        f" {args.count} messages",
                        name=args.name,
                    ) from None
                except PipeTimeoutError as exc:
                    raise _no_message(args) from exc
                _emit(args, message, conn.peer.pid)
                received += 1
        log.debug("closed")
        return 0
    with _open_ipc(args) as ipc:
        while args.count == 0 or received < args.count:
            try:
                message = ipc.receive_message(crc=args.crc)
            except PipeTimeoutError as exc:
                raise _no_message(args) from exc
            _emit(args, message, _peer_pid(ipc))
            received += 1
    log.debug("closed")
    return 0


def _no_message(args: argparse.Namespace) -> PipeTimeoutError:
    return PipeTimeoutError(
        f"no message arrived on {args.name!r}{_within(args)}; start a sender"
        f" ('npipes send --name {args.name} TEXT'), or raise --timeout",
        timeout=args.timeout,
    )


# -- serve -----------------------------------------------------------------------


class _Terminated(BaseException):
    """SIGTERM arrived: stop serving cleanly (exit 0)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


MAX_REPLY: Final = 16 * 1024 * 1024
"""Default cap on one CMD's output (``serve --exec``): past it CMD is killed and the
client gets an error reply, so a flooding CMD (``yes``) cannot exhaust memory."""


def _read_capped(stream: IO[bytes], cap: int, into: bytearray) -> bool:
    """Read ``stream`` to its end into ``into``, at most ``cap`` bytes; False if more came."""
    while chunk := stream.read(65536):
        if len(into) + len(chunk) > cap:
            return False
        into += chunk
    return True


def _exec_responder(
    command: str,
    timeout: float | None,
    running: set[subprocess.Popen[bytes]],
    framing: str,
    max_reply: int = MAX_REPLY,
) -> Callable[[bytes | str], bytes | str]:
    # POSIX: split like a shell; Windows: CreateProcess takes the command line as is.
    argv: list[str] | str = shlex.split(command) if os.name == "posix" else command

    def feed(proc: subprocess.Popen[bytes], data: bytes) -> None:
        assert proc.stdin is not None
        with contextlib.suppress(OSError):  # CMD exited without reading it all
            proc.stdin.write(data)
        with contextlib.suppress(OSError):
            proc.stdin.close()

    def drain_stderr(proc: subprocess.Popen[bytes], tail: list[bytes]) -> None:
        assert proc.stderr is not None
        while chunk := proc.stderr.read(65536):
            tail[:] = [(tail[0] + chunk)[-4096:] if tail else chunk[-4096:]]  # the end only

    def respond(message: bytes | str) -> bytes | str:
        data = message.encode("utf-8") if isinstance(message, str) else message
        stdout = bytearray()
        stderr_tail: list[bytes] = []
        # Each CMD is in ``running`` while it runs, so stopping serve ends it too
        # (handlers are daemon threads: an orphaned CMD would outlive serve). Its
        # output is read up to ``max_reply`` bytes; a timer kills it at --timeout.
        with subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ) as proc:
            running.add(proc)
            helpers = [
                threading.Thread(target=feed, args=(proc, data), daemon=True),
                threading.Thread(target=drain_stderr, args=(proc, stderr_tail), daemon=True),
            ]
            expired = threading.Event()

            def expire() -> None:
                expired.set()
                proc.kill()

            timer = None if timeout is None else threading.Timer(timeout, expire)
            try:
                for helper in helpers:
                    helper.start()
                if timer is not None:
                    timer.daemon = True
                    timer.start()
                assert proc.stdout is not None
                whole = _read_capped(proc.stdout, max_reply, stdout)
                if not whole:
                    proc.kill()
                returncode = proc.wait()
                for helper in helpers:
                    helper.join()
            except BaseException:
                proc.kill()
                raise
            finally:
                if timer is not None:
                    timer.cancel()
                running.discard(proc)
        if not whole:
            raise RuntimeError(
                f"{command!r} wrote more than {max_reply} bytes (serve --max-reply);"
                " its output was dropped"
            )
        if expired.is_set():
            raise RuntimeError(f"{command!r} did not finish within {seconds(timeout)} (--timeout)")
        if framing == "lines" and stdout.endswith(b"\n"):
            del stdout[-1:]  # CMD's line end is the framing's (wc -c, date, awk...)
        if returncode != 0:
            lines = b"".join(stderr_tail).decode("utf-8", "replace").strip().splitlines()
            detail = f": {lines[-1]}" if lines else ""
            raise RuntimeError(f"{command!r} exited with status {returncode}{detail}")
        reply = bytes(stdout)
        if isinstance(message, str):
            try:
                return reply.decode("utf-8")
            except UnicodeDecodeError:
                return reply
        return reply

    return respond


def _echo(message: bytes | str) -> bytes | str:
    return message


def _logged(respond: Callable[[bytes | str], bytes | str]) -> Callable[[bytes | str], bytes | str]:
    def answer(message: bytes | str) -> bytes | str:
        kind = "text" if isinstance(message, str) else "bytes"
        log.debug("answering a %s message of %d characters/bytes", kind, len(message))
        return respond(message)

    return answer


def cmd_serve(args: argparse.Namespace) -> int:
    running: set[subprocess.Popen[bytes]] = set()
    respond = (
        _echo
        if args.echo
        else _exec_responder(args.exec_cmd, args.timeout, running, args.framing, args.max_reply)
    )
    if args.verbose:
        respond = _logged(respond)
    server = serve(
        args.name,
        respond=respond,
        max_connections=args.max_clients,
        framing=args.framing,
        crc=args.crc,
    )
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        what = "echo" if args.echo else f"exec {args.exec_cmd!r}"
        sys.stderr.write(
            f"npipes serve: serving {what} on {args.name!r} ({server.address}); Ctrl+C to stop\n"
        )
        sys.stderr.flush()
        server.serve_forever()
    except _Terminated:
        log.debug("SIGTERM: closing")
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one while closing
        _kill_all(running)
        server.close()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        _kill_all(running)
        server.close()
        _kill_all(running)  # one a handler started while closing
    return 0


def _kill_all(running: set[subprocess.Popen[bytes]]) -> None:
    for proc in list(running):
        with contextlib.suppress(OSError):  # already reaped
            proc.kill()


# -- ping ------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def cmd_ping(args: argparse.Namespace) -> int:
    try:
        conn = _connect(args, wait=True)
    except PipeTimeoutError as exc:
        raise PipeTimeoutError(
            f"no echo peer on {args.name!r}{_within(args)};"
            f" start 'npipes serve --echo --name {args.name}', or raise --timeout",
            timeout=args.timeout,
        ) from exc
    payload = "x" * args.size
    times: list[float] = []
    sent = 0
    write = sys.stdout.write
    write(
        f"PING {args.name} ({(conn.peer.pid and f'pid {conn.peer.pid}') or 'pid ?'}):"
        f" {args.size} bytes\n"
    )
    try:
        with conn:
            while args.count == 0 or sent < args.count:
                if sent and args.interval:
                    time.sleep(args.interval)
                sent += 1
                start = time.perf_counter()
                reply = conn.request(payload, timeout=args.timeout)
                took = time.perf_counter() - start
                if reply != payload:
                    raise NpipesError(
                        f"the peer on {args.name!r} is not an echo peer: its reply differs"
                        " from the message; run 'npipes serve --echo' there"
                    )
                times.append(took)
                write(f"reply from {args.name}: seq={sent} size={args.size} time={_ms(took)} ms\n")
                sys.stdout.flush()
    finally:
        _summary(args.name, sent, times)
    return 0


def _summary(name: str, sent: int, times: list[float]) -> None:
    write = sys.stdout.write
    write(f"--- {name} ping statistics ---\n")
    lost = sent - len(times)
    write(f"{sent} sent, {len(times)} received, {lost} lost\n")
    if times:
        ordered = sorted(times)
        p99 = ordered[max(0, -(-99 * len(ordered) // 100) - 1)]  # nearest rank
        write(
            f"round trip min/median/p99 = {_ms(ordered[0])}/{_ms(statistics.median(ordered))}"
            f"/{_ms(p99)} ms\n"
        )
    sys.stdout.flush()


# -- ls, clean, where ------------------------------------------------------------


def cmd_ls(args: argparse.Namespace) -> int:
    from . import _endpoints

    found = _endpoints.list_endpoints()
    if args.json:
        _out(json.dumps([e.as_dict() for e in found], indent=1).encode("utf-8") + b"\n")
        return 0
    if not found:
        sys.stdout.write(f"no endpoints in {_endpoints.where_listed()}\n")
        return 0
    rows = [("NAME", "STATE", "PID", "OWNER", "ADDRESS")]
    for e in found:
        pid = "-" if e.pid is None else str(e.pid)
        rows.append((e.name, e.state, pid, e.owner or "-", e.address))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        cells = [r[i].ljust(widths[i]) for i in range(4)]
        sys.stdout.write("  ".join([*cells, r[4]]) + "\n")
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from . import _endpoints

    removed = _endpoints.clean(dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for path in removed:
        sys.stdout.write(f"{verb} {path}\n")
    if not removed:
        sys.stdout.write("nothing stale\n")
    return 0


def cmd_where(args: argparse.Namespace) -> int:
    from ._names import resolve

    address = resolve(args.where_name or args.name, dotnet=args.dotnet)
    sys.stdout.write(address.path + "\n")
    return 0


COMMANDS: Final[dict[str, Callable[[argparse.Namespace], int]]] = {
    "send": cmd_send,
    "recv": cmd_recv,
    "serve": cmd_serve,
    "ping": cmd_ping,
    "ls": cmd_ls,
    "clean": cmd_clean,
    "where": cmd_where,
}
