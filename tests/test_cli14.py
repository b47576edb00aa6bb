"""The ``npipes`` command (issue 14 §1), every command and flag run as a subprocess.

Real peers only: other ``npipes`` processes, or the plain npipes programs of
tests/cli14_peers.py. Runs on POSIX and on Windows (under Wine too); the
signal and socket-file tests are in tests/test_cli14_posix.py.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import npipes
from cli14_helpers import (
    IS_WINDOWS,
    LONG,
    finish,
    npipes_cmd,
    one_error_line,
    private_runtime,  # noqa: F401 - a fixture
    run,
    start,
    start_peer,
    start_server,
    stop,
)
from helpers import running_under_wine
from npipes._names import resolve

# -- usage errors: exit 2 at once, before waiting for any peer ------------------


@pytest.mark.parametrize(
    "args",
    [
        ("send", "--crc", "--framing", "lines", "hi"),
        ("recv", "--crc", "--framing", "lines"),
        ("recv", "--json", "--binary"),
        ("serve",),
        ("serve", "--echo", "--exec", "cat"),
        ("recv", "--count", "-1"),
        ("ping", "--count", "-1"),
        ("ping", "--size", "-1"),
        ("send",),
        ("send", "hi", "--file", "x"),
        ("send", "--binary", "--framing", "lines", "hi"),
        ("recv", "--timeout", "-1"),
        ("send", "--name", "a b", "hi"),
        ("serve", "--echo", "--max-clients", "0"),
        ("serve", "--exec", "cat", "--max-reply", "-1"),
        ("ping", "--interval", "-1"),
        ("ping", "--interval", "nan"),
        ("bridge",),
        ("nosuchcommand",),
    ],
    ids=lambda a: " ".join(a),
)
def test_impossible_combinations_exit_2_at_once(args: tuple[str, ...], pipe_name: str) -> None:
    if "--name" not in args and args[0] != "nosuchcommand":
        args = (*args, "--name", pipe_name)
    started = time.monotonic()
    result = run(*args, timeout=60)
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - started < 30  # no peer was waited for (no --timeout given)
    assert b"Traceback" not in result.stderr


# -- send / recv ------------------------------------------------------------------


@pytest.mark.parametrize("receiver_first", [True, False])
def test_send_recv_text_either_side_first(pipe_name: str, receiver_first: bool) -> None:
    if receiver_first:
        receiver = start("recv", "--name", pipe_name, "--timeout", LONG)
        sender = start("send", "--name", pipe_name, "--timeout", LONG, "héllo wörld")
    else:
        sender = start("send", "--name", pipe_name, "--timeout", LONG, "héllo wörld")
        receiver = start("recv", "--name", pipe_name, "--timeout", LONG)
    code, _, err = finish(sender)
    assert code == 0, err
    code, out, err = finish(receiver)
    assert code == 0, err
    assert out.replace(b"\r\n", b"\n") == "héllo wörld\n".encode()


def test_recv_count_several_messages_in_order(pipe_name: str) -> None:
    receiver = start("recv", "--name", pipe_name, "--count", "3", "--timeout", LONG)
    for text in ("one", "two", "three"):
        assert run("send", "--name", pipe_name, "--timeout", LONG, text).returncode == 0
    code, out, err = finish(receiver)
    assert code == 0, err
    assert out.decode().splitlines() == ["one", "two", "three"]


BINARY = b"a\x00b\xff\xfe\x00\r\n\x80end"


def test_stdin_binary_with_nul_and_non_utf8_arrives_intact(pipe_name: str) -> None:
    receiver = start("recv", "--name", pipe_name, "--binary", "--timeout", LONG)
    sent = run("send", "--name", pipe_name, "--timeout", LONG, "-", stdin=BINARY)
    assert sent.returncode == 0, sent.stderr
    code, out, err = finish(receiver)
    assert code == 0, err
    assert out == BINARY


def test_stdin_utf8_text_arrives_as_text_verbatim(pipe_name: str) -> None:
    receiver = start("recv", "--name", pipe_name, "--json", "--timeout", LONG)
    sent = run("send", "--name", pipe_name, "--timeout", LONG, "-", stdin="ünï\n".encode())
    assert sent.returncode == 0, sent.stderr
    code, out, err = finish(receiver)
    assert code == 0, err
    record = json.loads(out)
    assert record["text"] == "ünï\n"
    assert record["size"] == len("ünï\n".encode())


def test_recv_json_fields_for_binary_message(pipe_name: str) -> None:
    receiver = start("recv", "--name", pipe_name, "--json", "--crc", "--timeout", LONG)
    sender = subprocess.Popen(
        npipes_cmd("send", "--name", pipe_name, "--crc", "--timeout", LONG, "-"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, err = sender.communicate(BINARY, timeout=120)
    assert sender.returncode == 0, err
    code, out, err = finish(receiver)
    assert code == 0, err
    lines = out.decode().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert set(record) == {"time", "size", "base64", "crc", "peer_pid"}
    assert base64.b64decode(record["base64"]) == BINARY
    assert record["size"] == len(BINARY)
    assert record["crc"] is True
    assert "T" in record["time"]
    assert record["peer_pid"] is None or isinstance(record["peer_pid"], int)
    if not IS_WINDOWS:
        assert record["peer_pid"] == sender.pid


def test_plain_recv_shows_binary_readably(pipe_name: str) -> None:
    receiver = start("recv", "--name", pipe_name, "--timeout", LONG)
    sent = run("send", "--name", pipe_name, "--timeout", LONG, "-", stdin=b"\x00\xffab")
    assert sent.returncode == 0, sent.stderr
    code, out, err = finish(receiver)
    assert code == 0, err
    assert out.decode().strip() == "[binary, 4 bytes] 00 ff 61 62"


def test_send_binary_flag_sends_bytes(pipe_name: str) -> None:
    receiver = start("recv", "--name", pipe_name, "--json", "--timeout", LONG)
    assert run("send", "--name", pipe_name, "--binary", "--timeout", LONG, "xyz").returncode == 0
    code, out, err = finish(receiver)
    assert code == 0, err
    assert base64.b64decode(json.loads(out)["base64"]) == b"xyz"


def test_send_file_large_binary(pipe_name: str, tmp_path: Path) -> None:
    data = os.urandom(3 << 20) + b"\x00\xff"
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    receiver = start("recv", "--name", pipe_name, "--binary", "--timeout", LONG)
    sent = run("send", "--name", pipe_name, "--timeout", LONG, "--file", str(path), "--binary")
    assert sent.returncode == 0, sent.stderr
    assert sent.stderr == b""  # no progress bar: stderr is not a terminal
    code, out, err = finish(receiver)
    assert code == 0, err
    assert out == data


def test_send_missing_file_exits_4_before_waiting(pipe_name: str, tmp_path: Path) -> None:
    result = run("send", "--name", pipe_name, "--file", str(tmp_path / "absent"))
    assert result.returncode == 4
    assert "absent" in one_error_line(result.stderr)


def test_recv_timeout_exit_3_rounded(pipe_name: str) -> None:
    result = run("recv", "--name", pipe_name, "--timeout", "0.5")
    assert result.returncode == 3
    line = one_error_line(result.stderr)
    assert "0.5 s" in line
    assert "raise --timeout" in line


def test_send_timeout_exit_3_rounded(pipe_name: str) -> None:
    result = run("send", "--name", pipe_name, "--timeout", "1", "nobody hears")
    assert result.returncode == 3
    line = one_error_line(result.stderr)
    assert "within 1 s" in line
    assert "npipes recv" in line


def test_send_connect_without_listener_exits_4(pipe_name: str) -> None:
    result = run("send", "--name", pipe_name, "--connect", "hi")
    assert result.returncode == 4
    assert "--wait" in one_error_line(result.stderr)


def test_send_wait_waits_for_listener(pipe_name: str) -> None:
    sender = start("send", "--name", pipe_name, "--wait", "--timeout", LONG, "late")
    peer = start_peer("listen_recv", pipe_name, "1")
    code, out, err = finish(peer)
    assert code == 0, err
    assert json.loads(out) == {"text": "late"}
    code, _, err = finish(sender)
    assert code == 0, err


def test_send_wait_times_out_exit_3(pipe_name: str) -> None:
    result = run("send", "--name", pipe_name, "--wait", "--timeout", "0.5", "x")
    assert result.returncode == 3
    assert "0.5 s" in one_error_line(result.stderr)


def test_recv_connect_reads_a_listening_program(pipe_name: str) -> None:
    peer = start_peer("listen_send", pipe_name, "text one", "hex:00ff10")
    result = run("recv", "--name", pipe_name, "--connect", "--count", "2", "--json")
    stop(peer)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert records[0]["text"] == "text one"
    assert base64.b64decode(records[1]["base64"]) == b"\x00\xff\x10"
    if not IS_WINDOWS:
        assert records[0]["peer_pid"] == peer.pid


def test_recv_connect_count_0_ends_when_peer_closes(pipe_name: str) -> None:
    peer = start_peer("listen_send", pipe_name, "a", "b")
    receiver = start("recv", "--name", pipe_name, "--connect", "--count", "0", "--timeout", LONG)
    # The peer closes once the receiver closes; here the receiver waits for more:
    # close the peer's side by ending it.
    deadline = time.monotonic() + 60
    assert receiver.stdout is not None
    got = [receiver.stdout.readline(), receiver.stdout.readline()]
    assert [g.strip() for g in got] == [b"a", b"b"]
    assert time.monotonic() < deadline
    stop(peer)
    code, _, err = finish(receiver)
    assert code == 0, err


def test_bad_checksum_exits_6(pipe_name: str) -> None:
    peer = start_peer("listen_bad_crc", pipe_name, "payload")
    result = run("recv", "--name", pipe_name, "--connect", "--crc", "--timeout", LONG)
    stop(peer)
    assert result.returncode == 6, result.stderr
    assert "CRC" in one_error_line(result.stderr)


def test_verbose_logs_on_stderr(pipe_name: str) -> None:
    peer = start_peer("listen_recv", pipe_name, "1")
    result = run("send", "-v", "--name", pipe_name, "--connect", "hello")
    stop(peer)
    assert result.returncode == 0, result.stderr
    err = result.stderr.decode()
    assert "connected to" in err
    assert "closed" in err
    assert result.stdout == b""


# -- serve, ping ------------------------------------------------------------------


def test_serve_echo_and_ping_summary(pipe_name: str) -> None:
    server = start_server("--echo", "--name", pipe_name)
    try:
        result = run("ping", "--name", pipe_name, "--count", "5", "--timeout", LONG)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.decode().splitlines()
        replies = [line for line in lines if line.startswith("reply from")]
        assert len(replies) == 5
        assert "seq=5" in replies[-1]
        assert "5 sent, 5 received, 0 lost" in lines
        summary = lines[-1]
        assert summary.startswith("round trip min/median/p99 = ")
        lo, mid, hi = (float(x) for x in summary.split("= ")[1].split(" ")[0].split("/"))
        assert 0 < lo <= mid <= hi
    finally:
        stop(server)


def test_ping_interval_paces_the_trips(pipe_name: str) -> None:
    """``--interval`` pauses between trips: 3 trips at 0.5 s take at least 1 s (a lower
    bound only: sleeping is not performance)."""
    server = start_server("--echo", "--name", pipe_name)
    try:
        began = time.monotonic()
        result = run(
            "ping", "--name", pipe_name, "--count", "3", "--interval", "0.5", "--timeout", LONG
        )
        took = time.monotonic() - began
        assert result.returncode == 0, result.stderr
        assert "3 sent, 3 received, 0 lost" in result.stdout.decode()
        assert took >= 1.0
    finally:
        stop(server)


def test_serve_max_clients_serves_that_many_at_once(pipe_name: str) -> None:
    """``--max-clients 1``: a second client waits (in connect on Windows, for its reply
    on POSIX) while the first is connected, then is served."""
    import threading

    server = start_server("--echo", "--max-clients", "1", "--name", pipe_name)
    replies: list[object] = []

    def second_client() -> None:
        try:
            with npipes.connect(pipe_name, timeout=float(LONG)) as second:
                second.send("two")
                replies.append(second.recv(timeout=float(LONG)))
        except Exception as exc:  # noqa: BLE001 - checked below
            replies.append(exc)

    try:
        with npipes.connect(pipe_name, timeout=float(LONG)) as first:
            first.send("one")
            assert first.recv(timeout=float(LONG)) == "one"
            thread = threading.Thread(target=second_client)
            thread.start()
            thread.join(1.5)
            assert replies == []  # no slot while the first is connected
        thread.join(float(LONG))
        assert replies == ["two"]
    finally:
        stop(server)


def test_serve_echo_many_clients_at_once(pipe_name: str) -> None:
    server = start_server("--echo", "--name", pipe_name)
    try:
        pings = [
            start("ping", "--name", pipe_name, "--count", "3", "--size", "1000", "--timeout", LONG)
            for _ in range(4)
        ]
        for p in pings:
            code, out, err = finish(p)
            assert code == 0, err
            assert b"3 sent, 3 received" in out
        with npipes.connect(pipe_name, timeout=60) as conn:
            assert conn.request(b"\x00bytes\xff", timeout=60) == b"\x00bytes\xff"
    finally:
        stop(server)


UPPER = (
    f'"{sys.executable}" -c "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read().upper())"'
)


def test_serve_exec_pipes_each_message_through_command(pipe_name: str) -> None:
    server = start_server("--exec", UPPER, "--name", pipe_name)
    try:
        with npipes.connect(pipe_name, timeout=60) as conn:
            assert conn.request("hello", timeout=60) == "HELLO"
            assert conn.request(b"ab\x00\xff", timeout=60) == b"AB\x00\xff"
        with npipes.connect(pipe_name, timeout=60) as conn:  # a second client
            assert conn.request("again", timeout=60) == "AGAIN"
    finally:
        stop(server)


def test_serve_exec_failing_command_is_a_remote_error(pipe_name: str) -> None:
    failing = f'"{sys.executable}" -c "import sys; sys.exit(3)"'
    server = start_server("--exec", failing, "--name", pipe_name)
    try:
        with npipes.connect(pipe_name, timeout=60) as conn:
            with pytest.raises(npipes.RemoteError, match="status 3"):
                conn.request("x", timeout=60)
            with pytest.raises(npipes.RemoteError):  # the connection still serves
                conn.request("y", timeout=60)
    finally:
        stop(server)


def test_ping_non_echo_peer_exits_1(pipe_name: str) -> None:
    server = start_server("--exec", UPPER, "--name", pipe_name)
    try:
        result = run("ping", "--name", pipe_name, "--count", "1", "--timeout", LONG)
        assert result.returncode == 1
        assert "not an echo peer" in result.stderr.decode()
    finally:
        stop(server)


def test_ping_without_server_times_out_exit_3(pipe_name: str) -> None:
    result = run("ping", "--name", pipe_name, "--timeout", "0.5")
    assert result.returncode == 3
    assert "npipes serve --echo" in one_error_line(result.stderr)


def test_serve_on_a_live_name_fails(pipe_name: str) -> None:
    server = start_server("--echo", "--name", pipe_name)
    try:
        result = run("serve", "--echo", "--name", pipe_name)
        if not IS_WINDOWS:  # Wine ignores FILE_FLAG_FIRST_PIPE_INSTANCE (windows-under-wine.md)
            assert result.returncode == 1
            one_error_line(result.stderr)
    finally:
        stop(server)


# -- where, ls, clean ---------------------------------------------------------------


def test_where_prints_the_os_address(pipe_name: str) -> None:
    result = run("where", pipe_name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == resolve(pipe_name).path
    result = run("where", "--name", pipe_name)
    assert result.stdout.decode().strip() == resolve(pipe_name).path


def test_where_rejects_a_bad_name_exit_2() -> None:
    result = run("where", "not/ok name")
    assert result.returncode == 2
    one_error_line(result.stderr)


@pytest.mark.usefixtures("private_runtime")
def test_ls_shows_a_live_server(pipe_name: str) -> None:
    server = start_server("--echo", "--name", pipe_name)
    try:
        result = run("ls", "--json")
        if running_under_wine():
            # Wine cannot enumerate \\.\pipe\ (FindFirstFile: WinError 66; Windows can).
            assert result.returncode == 1
            assert "cannot list" in one_error_line(result.stderr)
            return
        assert result.returncode == 0, result.stderr
        found = [e for e in json.loads(result.stdout) if e["name"] == pipe_name]
        assert len(found) == 1, result.stdout[:2000]
        entry = found[0]
        assert entry["state"] == "alive"
        assert entry["address"] == resolve(pipe_name).path
        if not IS_WINDOWS:
            assert entry["pid"] == server.pid
        text = run("ls")
        assert text.returncode == 0
        assert any(
            pipe_name in line and "alive" in line for line in text.stdout.decode().splitlines()
        )
    finally:
        stop(server)


@pytest.mark.usefixtures("private_runtime")
def test_clean_never_removes_a_live_endpoint(pipe_name: str) -> None:
    server = start_server("--echo", "--name", pipe_name)
    try:
        result = run("clean")
        assert result.returncode == 0, result.stderr
        assert pipe_name not in result.stdout.decode()
        ping = run("ping", "--name", pipe_name, "--count", "1", "--timeout", LONG)
        assert ping.returncode == 0, ping.stderr
    finally:
        stop(server)


# -- bridge wiring --------------------------------------------------------------------


def test_bridge_takes_the_common_options() -> None:
    result = run("bridge", "--help")
    assert result.returncode == 0
    out = result.stdout.decode()
    for flag in ("--name", "--framing", "--crc", "--timeout", "--verbose", "--zmq-bind"):
        assert flag in out


def _bridge_child(setup: str) -> subprocess.CompletedProcess[bytes]:
    code = (
        f"import sys, types; {setup}; from npipes.cli import main;"
        " sys.exit(main(['bridge', '--name', 'b14', '--zmq-bind', 'tcp://127.0.0.1:5599']))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=120, stdin=subprocess.DEVNULL
    )


FAKE_BRIDGE = (
    "m = types.ModuleType('npipes.bridge');"
    " m.add_arguments = lambda p: p.add_argument('--zmq-bind');"
    " m.run = lambda a: (_ for _ in ()).throw(ImportError(\"No module named 'zmq'\", name='zmq'));"
    " sys.modules['npipes.bridge'] = m"
)


def test_bridge_run_missing_pyzmq_exits_1_with_the_install_hint() -> None:
    result = _bridge_child(FAKE_BRIDGE)
    assert result.returncode == 1, result.stderr
    assert "pip install 'npipes[bridge]'" in one_error_line(result.stderr)


def test_bridge_passes_common_options_and_maps_its_errors() -> None:
    fake = (
        "m = types.ModuleType('npipes.bridge');"
        " m.add_arguments = lambda p: p.add_argument('--zmq-bind');"
        " import npipes;"
        " m.run = lambda a: (_ for _ in ()).throw(npipes.PipeTimeoutError("
        "f'{a.name} {a.framing} {a.crc} {a.timeout} {a.verbose} {a.zmq_bind}'));"
        " sys.modules['npipes.bridge'] = m"
    )
    result = _bridge_child(fake)
    assert result.returncode == 3, result.stderr
    line = one_error_line(result.stderr)
    assert line == "npipes bridge: b14 npipes False None False tcp://127.0.0.1:5599"


def test_bridge_without_pyzmq_never_tracebacks() -> None:
    # The real bridge module, in a child where `import zmq` fails.
    result = _bridge_child("sys.modules['zmq'] = None")
    assert result.returncode == 1, result.stderr
    one_error_line(result.stderr)


@pytest.mark.parametrize("framing", ["lines", "npipes1"])
def test_send_recv_other_framings(pipe_name: str, framing: str) -> None:
    receiver = start("recv", "--name", pipe_name, "--framing", framing, "--timeout", LONG)
    sent = run("send", "--name", pipe_name, "--framing", framing, "--timeout", LONG, "plain")
    assert sent.returncode == 0, sent.stderr
    code, out, err = finish(receiver)
    assert code == 0, err
    assert out.decode().strip() == "plain"


def test_serve_verbose_logs_each_answer(pipe_name: str) -> None:
    server = start_server("--echo", "-v", "--name", pipe_name)
    try:
        assert run("ping", "--name", pipe_name, "--count", "1", "--timeout", LONG).returncode == 0
    finally:
        stop_code = server.poll()
        server.kill()
        _, err = server.communicate(timeout=60)
    assert stop_code is None
    assert b"answering a text message" in err
    assert b"accepted a client" in err  # -v logs connect, accept and close (issue 14 §1)
    assert b"closed a connection" in err


def test_recv_verbose_logs_meeting_and_close(pipe_name: str) -> None:
    receiver = start("recv", "-v", "--name", pipe_name, "--timeout", LONG)
    assert run("send", "--name", pipe_name, "--timeout", LONG, "x").returncode == 0
    code, out, err = finish(receiver)
    assert code == 0, err
    assert out.strip() == b"x"
    assert b"meeting a peer" in err
    # whichever side came first listened: the receiver logs the accept or the connect
    assert b"accepted a client" in err or b"connected to" in err
    assert b"closed" in err


def test_error_lines_are_one_line() -> None:
    """Rounding durations is the library's (tests/test_messages14.py); the CLI joins lines."""
    from npipes.cli import one_line

    exc = npipes.PipeTimeoutError("no reply within\n1 s on /tmp/a1.23456.sock")
    assert one_line(exc) == "no reply within 1 s on /tmp/a1.23456.sock"


def test_main_in_process_with_a_text_stdout(
    pipe_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from npipes.cli import main

    sender = start("send", "--name", pipe_name, "--timeout", LONG, "to a StringIO")
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["recv", "--name", pipe_name, "--timeout", LONG]) == 0
    assert out.getvalue() == "to a StringIO\n"
    code, _, err = finish(sender)
    assert code == 0, err


def test_where_dotnet_prints_the_dotnet_address(tmp_path: Path) -> None:
    """``where --dotnet NAME``: .NET's address for NAME (``$TMPDIR/CoreFxPipe_NAME`` on
    POSIX, the pipe's own name on Windows), as ``connect(name, dotnet=True)`` uses it."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        npipes_cmd("where", "--dotnet", "svc14"), capture_output=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    shown = done.stdout.decode().strip()
    if IS_WINDOWS:
        assert shown == r"\\.\pipe\svc14"
    else:
        assert shown == str(tmp_path / "CoreFxPipe_svc14")
