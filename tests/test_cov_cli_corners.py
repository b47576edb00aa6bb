"""Corners of ``npipes`` commands (src/npipes/_cli_commands.py), in process: ``recv --connect``
timing out or losing its peer, text-only framings refusing bytes from stdin, the progress
bar on a terminal, ``ls`` with nothing listed, ``serve -v`` logging each answer, and the
``--exec`` responder's limits (output cap, time limit, failing CMD, an exception while it
runs). Real pipes, sockets and processes; stdin/stdout/stderr are swapped for real OS
pipes, a pty or BytesIO-backed text streams."""

from __future__ import annotations

import _thread
import io
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import npipes
from npipes._cli_commands import _exec_responder
from npipes.cli import main

IS_WINDOWS = sys.platform == "win32"
WAIT = 10.0  # seconds for waits that must not expire

if not IS_WINDOWS:  # POSIX only (imported here so Windows still collects this file)
    import signal


def _python(code: str) -> str:
    """A CMD for ``serve --exec`` running ``code`` (split like a shell on POSIX)."""
    return f'"{sys.executable}" -c "{code}"'


@pytest.fixture
def npipes_logger() -> Iterator[None]:
    """``-v`` in process adds a handler to the ``npipes`` logger: take it off again."""
    logger = logging.getLogger("npipes")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


class _PipeOut:
    """A real OS pipe standing in for stdout: the test reads what the command wrote."""

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe()
        self.reader = os.fdopen(read_fd, "rb")
        self.stream = io.TextIOWrapper(os.fdopen(write_fd, "wb"), encoding="utf-8")

    def close(self) -> None:
        self.stream.close()
        self.reader.close()


# -- send: stdin ------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["lines", "npipes1", "dotnet"])
def test_send_non_utf8_stdin_under_a_text_only_framing_exits_2(
    pipe_name: str,
    framing: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xff\xfe not utf-8\n")))
    start = time.monotonic()
    code = main(["send", "--name", pipe_name, "--framing", framing, "--timeout", "60", "-"])
    assert code == 2
    assert time.monotonic() - start < WAIT  # refused before any wait for a receiver
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"npipes send: the input is not UTF-8 text and the {framing} framing carries only"
        " text: choose another --framing\n"
    )


@pytest.mark.posix
def test_send_large_stdin_shows_progress_on_a_terminal(
    pipe_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stdin has no size: the bar counts MiB read, then says it sends (stderr a tty)."""
    payload = bytes(range(256)) * (5 * 4096)  # 5 MiB, not UTF-8: a bytes message
    master, slave = os.openpty()
    tty = os.fdopen(slave, "w")
    shown = bytearray()

    def read_terminal() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the slave side is closed
                return
            if not chunk:
                return
            shown.extend(chunk)

    got: list[bytes | str] = []
    errors: list[BaseException] = []

    def take(listener: npipes.Listener) -> None:
        try:
            with listener.accept(timeout=WAIT) as conn:
                got.append(conn.recv(timeout=WAIT))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    terminal = threading.Thread(target=read_terminal, daemon=True)
    terminal.start()
    try:
        with npipes.listen(pipe_name) as listener:
            receiver = threading.Thread(target=take, args=(listener,))
            receiver.start()
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(payload)))
            monkeypatch.setattr(sys, "stderr", tty)
            code = main(["send", "--name", pipe_name, "--connect", "--timeout", str(WAIT), "-"])
            monkeypatch.undo()
            receiver.join(WAIT)
    finally:
        monkeypatch.undo()
        tty.close()
        terminal.join(WAIT)
        os.close(master)
    assert not errors, errors
    assert code == 0
    assert got == [payload]
    text = shown.decode("ascii", "replace")
    assert "\rreading 4 MiB" in text
    assert "\rreading 5 MiB" in text
    assert "\rsending 5 MiB..." in text


# -- recv --connect ---------------------------------------------------------------


def test_recv_connect_without_a_listener_times_out_exit_3(
    pipe_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["recv", "--name", pipe_name, "--connect", "--timeout", "0.3"])
    assert code == 3
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"npipes recv: no listener appeared on {pipe_name!r} within ")
    assert "start the sending program first, or raise --timeout" in err
    assert err.count("\n") == 1


def test_recv_connect_peer_closing_before_count_exits_1(
    pipe_name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--count 2, the listener sends one message and closes once it was printed."""
    stdout = _PipeOut()
    errors: list[BaseException] = []

    def peer(listener: npipes.Listener) -> None:
        try:
            with listener.accept(timeout=WAIT) as conn:
                conn.send("only one")
                assert stdout.reader.readline() == b"only one\n"  # recv printed it
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    try:
        with npipes.listen(pipe_name) as listener:
            thread = threading.Thread(target=peer, args=(listener,))
            thread.start()
            monkeypatch.setattr(sys, "stdout", stdout.stream)
            code = main(
                ["recv", "--name", pipe_name, "--connect", "--count", "2", "--timeout", str(WAIT)]
            )
            monkeypatch.undo()
            thread.join(WAIT)
    finally:
        monkeypatch.undo()
        stdout.close()
    assert not errors, errors
    assert code == 1
    _, err = capsys.readouterr()
    assert err == f"npipes recv: the peer on {pipe_name!r} closed after 1 of 2 messages\n"


def test_recv_connect_silent_listener_times_out_exit_3(
    pipe_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    done = threading.Event()
    errors: list[BaseException] = []

    def silent(listener: npipes.Listener) -> None:
        try:
            with listener.accept(timeout=WAIT):
                done.wait(WAIT)  # connected, sends nothing
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    with npipes.listen(pipe_name) as listener:
        thread = threading.Thread(target=silent, args=(listener,))
        thread.start()
        try:
            code = main(["recv", "--name", pipe_name, "--connect", "--timeout", "0.3"])
        finally:
            done.set()
            thread.join(WAIT)
    assert not errors, errors
    assert code == 3
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"npipes recv: no message arrived on {pipe_name!r} within ")
    assert f"start a sender ('npipes send --name {pipe_name} TEXT'), or raise --timeout" in err


# -- ls ---------------------------------------------------------------------------


@pytest.mark.posix
def test_ls_with_no_endpoints_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tmp_path.chmod(0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    from npipes._endpoints import where_listed

    assert where_listed().startswith(str(tmp_path))
    assert main(["ls"]) == 0
    out, err = capsys.readouterr()
    assert out == f"no endpoints in {where_listed()}\n"
    assert err == ""


# -- serve -v, in process ---------------------------------------------------------


def test_serve_verbose_logs_each_answer_and_ctrl_c_exits_130(
    pipe_name: str, npipes_logger: None, capsys: pytest.CaptureFixture[str]
) -> None:
    replies: list[bytes | str] = []
    errors: list[BaseException] = []
    returned = threading.Event()

    def client() -> None:
        try:
            with npipes.connect(pipe_name, timeout=WAIT, wait_for_listener=True) as conn:
                replies.append(conn.request("hello", timeout=WAIT))
                replies.append(conn.request(b"\x00\x01\x02", timeout=WAIT))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            if not returned.is_set():  # serve runs in the main thread: Ctrl+C it
                _thread.interrupt_main()

    thread = threading.Thread(target=client)
    thread.start()
    try:
        code = main(["serve", "--echo", "-v", "--name", pipe_name])
    finally:
        returned.set()
        thread.join(WAIT)
    assert not errors, errors
    assert replies == ["hello", b"\x00\x01\x02"]
    assert code == 130
    _, err = capsys.readouterr()
    assert f"npipes serve: serving echo on {pipe_name!r}" in err
    assert "npipes: npipes.cli: answering a text message of 5 characters/bytes\n" in err
    assert "npipes: npipes.cli: answering a bytes message of 3 characters/bytes\n" in err
    assert err.endswith("npipes serve: interrupted\n")


# -- serve --exec: the responder --------------------------------------------------


def test_exec_failing_cmd_reports_the_last_stderr_line() -> None:
    running: set[subprocess.Popen[bytes]] = set()
    respond = _exec_responder(
        _python(
            "import sys; sys.stdin.read();"
            " sys.stderr.write('x' * 70000 + chr(10) + 'bad input' + chr(10)); sys.exit(3)"
        ),
        WAIT,
        running,
        "npipes",
    )
    with pytest.raises(RuntimeError, match=r"exited with status 3: bad input$"):
        respond("some text")
    assert running == set()


def test_exec_cmd_past_the_timeout_is_killed() -> None:
    running: set[subprocess.Popen[bytes]] = set()
    respond = _exec_responder(
        _python("import time; time.sleep(60)"),
        0.3,
        running,
        "npipes",
    )
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"did not finish within .* \(--timeout\)$"):
        respond("x")
    assert time.monotonic() - start < 30  # killed, not waited for
    assert running == set()


def test_exec_cmd_past_max_reply_is_killed_and_its_output_dropped() -> None:
    running: set[subprocess.Popen[bytes]] = set()
    respond = _exec_responder(
        _python(
            "import sys, time; sys.stdout.write('y' * 200000); sys.stdout.flush(); time.sleep(60)"
        ),
        None,
        running,
        "npipes",
        max_reply=1000,
    )
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"wrote more than 1000 bytes \(serve --max-reply\)"):
        respond("x")
    assert time.monotonic() - start < 30
    assert running == set()


def test_exec_reply_types_follow_the_message_and_the_output() -> None:
    """Text in, UTF-8 out: text; text in, other bytes out: bytes; bytes in: bytes."""
    running: set[subprocess.Popen[bytes]] = set()
    upper = _exec_responder(
        # Binary I/O in CMD: its text streams use the locale's encoding (cp1252 on Windows).
        _python(
            "import sys; sys.stdout.buffer.write("
            "sys.stdin.buffer.read().decode('utf-8').upper().encode('utf-8'))"
        ),
        WAIT,
        running,
        "npipes",
    )
    assert upper("héllo") == "HÉLLO"
    assert upper(b"abc") == b"ABC"
    latin1 = _exec_responder(
        _python("import sys; sys.stdin.read(); sys.stdout.buffer.write(bytes([0xff, 0x41]))"),
        WAIT,
        running,
        "npipes",
    )
    assert latin1("text") == b"\xffA"
    assert running == set()


@pytest.mark.posix
def test_exec_an_exception_while_cmd_runs_kills_it(tmp_path: Path) -> None:
    """A signal handler raising in the thread that waits for CMD: CMD is killed at once
    (not waited for its 60 s) and the exception goes on."""

    class Stop(Exception):
        pass

    def raise_stop(signum: int, frame: object) -> None:
        raise Stop

    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    running: set[subprocess.Popen[bytes]] = set()
    # CMD reads its stdin to the end (so the responder is past its setup), says so
    # through the FIFO, then sleeps.
    respond = _exec_responder(
        _python(
            f"import sys, time; sys.stdin.read(); open(r'{fifo}', 'w').write('started');"
            " time.sleep(60)"
        ),
        None,
        running,
        "npipes",
    )
    main_thread = threading.main_thread().ident
    assert main_thread == threading.get_ident()
    errors: list[BaseException] = []

    def interrupt() -> None:
        try:
            with open(fifo) as started:  # opens once CMD opened it for writing
                assert started.read() == "started"
            assert main_thread is not None
            signal.pthread_kill(main_thread, signal.SIGUSR1)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    previous = signal.signal(signal.SIGUSR1, raise_stop)
    thread = threading.Thread(target=interrupt)
    try:
        thread.start()
        start = time.monotonic()
        with pytest.raises(Stop):
            respond("go")
        took = time.monotonic() - start
    finally:
        signal.signal(signal.SIGUSR1, previous)
        thread.join(WAIT)
    assert not errors, errors
    assert took < 30
    assert running == set()
