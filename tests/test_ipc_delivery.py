"""The ``IPC`` facade's delivery rule, between real processes.

A message that ``send_message`` returned from has reached a
``receive_message`` on the other side (the receiver acknowledges it). Two
senders that meet never "succeed" into nothing: they wait, or time out.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import npipes
import peers
from helpers import finish, start
from npipes.cli import main
from npipes.errors import ChecksumError, ConnectionClosedError, PipeTimeoutError, ProtocolError
from npipes.ipc import IPC

PEER = str(Path(__file__).with_name("ipc_peer.py"))
WAIT = 60.0
SHORT = 4.0
"""The timeout given to sides that are expected to time out."""


class Peer:
    """``ipc_peer.py`` in its own process; its output lines arrive on a queue."""

    def __init__(self, name: str, timeout: float, *steps: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, PEER, name, str(timeout), *steps],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put("<eof>")

    def line(self, timeout: float = WAIT) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"peer {self.proc.args[3:]} said nothing in {timeout} s") from None

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self) -> None:
        """Wait for the peer to exit; it must succeed."""
        self.proc.wait(timeout=WAIT)
        assert self.proc.returncode == 0, self.proc.returncode

    def stop(self) -> None:
        """Kill the peer if it still runs; close its pipes (teardown)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        self._reader.join(WAIT)


@pytest.fixture
def spawn(pipe_name: str) -> Iterator[Callable[..., Peer]]:
    """Start ``Peer(pipe_name, timeout, *steps)``; every peer is stopped at teardown."""
    started: list[Peer] = []

    def start(timeout: float, *steps: str) -> Peer:
        peer = Peer(pipe_name, timeout, *steps)
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.stop()


def _run(*peers: Peer) -> None:
    for peer in peers:
        peer.finish()


# -- two senders -------------------------------------------------------------------


def test_two_senders_both_time_out_with_the_ipc_timeout(spawn: Callable[..., Peer]) -> None:
    # The first listens (it is ready once constructed), the second connects to it:
    # today the second's message lands in the first sender's socket and is lost.
    first = spawn(SHORT, "wait", "send:from first")
    assert first.line() == "ready"
    second = spawn(SHORT, "send:from second")
    assert second.line() == "ready"
    first.go()
    assert first.line() == "go"
    assert second.line() == f"timeout {SHORT}"
    assert first.line() == f"timeout {SHORT}"
    _run(first, second)


def test_two_cli_senders_both_fail(pipe_name: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "npipes", "send", "--name", pipe_name, "--timeout", "4", text],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for text in ("one", "two")
    ]
    results = [proc.communicate(timeout=WAIT) for proc in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 3, err
        assert "no receiver took the message" in err


def test_two_senders_started_together_both_time_out(spawn: Callable[..., Peer]) -> None:
    first = spawn(SHORT, "send:a")
    second = spawn(SHORT, "send:b")
    assert first.line() == "ready"
    assert second.line() == "ready"
    outcomes = {first.line(), second.line()}
    _run(first, second)
    assert outcomes == {f"timeout {SHORT}"}


# -- what must keep working ---------------------------------------------------------


@pytest.mark.parametrize("first", ["sender", "receiver"])
def test_sender_that_exits_at_once_is_received(spawn: Callable[..., Peer], first: str) -> None:
    steps = {"sender": ("sendbytes:bye",), "receiver": ("recv",)}
    order = [first, "receiver" if first == "sender" else "sender"]
    peers: dict[str, Peer] = {}
    for role in order:
        peers[role] = spawn(WAIT, *steps[role])
        assert peers[role].line() == "ready"
    assert peers["sender"].line() == "sent"  # and then it exits, with os._exit
    assert peers["receiver"].line() == "got b'bye'"
    _run(*peers.values())


@pytest.mark.parametrize("first", ["A", "B"])
def test_conversation_send_recv_send_recv(spawn: Callable[..., Peer], first: str) -> None:
    scripts = {
        "A": ("send:question", "recv", "sendcrc:thanks"),
        "B": ("recv", "send:answer", "recvcrc"),
    }
    peers: dict[str, Peer] = {}
    for role in (first, "B" if first == "A" else "A"):
        peers[role] = spawn(WAIT, *scripts[role])
        assert peers[role].line() == "ready"
    a, b = peers["A"], peers["B"]
    assert a.line() == "sent"
    assert b.line() == "got 'question'"
    assert b.line() == "sent"
    assert a.line() == "got 'answer'"
    assert a.line() == "sent"
    assert b.line() == "got 'thanks'"
    _run(a, b)


def test_both_sending_first_time_out_without_hanging(spawn: Callable[..., Peer]) -> None:
    # b sends as soon as it is ready, a only on "go" and with a longer timeout,
    # so b gives up first and a's receive cannot acknowledge b in time.
    a = spawn(2 * SHORT, "wait", "send:from a", "recv")
    assert a.line() == "ready"
    b = spawn(SHORT, "send:from b")
    assert b.line() == "ready"
    start = time.monotonic()
    a.go()
    assert a.line() == "go"
    assert b.line() == f"timeout {SHORT}"
    assert a.line() == f"timeout {2 * SHORT}"
    assert time.monotonic() - start < 2 * SHORT + 20  # generous: the machine may be loaded
    # What a timed-out sender had handed over may still be received afterwards:
    # its timeout said "not confirmed", not "lost".
    assert a.line() == "got 'from b'"
    _run(a, b)


def test_a_receiver_killed_before_receiving_does_not_swallow_the_message(
    spawn: Callable[..., Peer],
) -> None:
    sender = spawn(WAIT, "send:keep me")  # first: it listens
    assert sender.line() == "ready"
    doomed = spawn(WAIT, "wait", "recv")  # connects, never receives
    assert doomed.line() == "ready"
    doomed.proc.kill()
    doomed.proc.wait()
    receiver = spawn(WAIT, "recv")
    assert receiver.line() == "ready"
    assert receiver.line() == "got 'keep me'"
    assert sender.line() == "sent"
    _run(sender, receiver)


def test_two_senders_of_big_messages_time_out_without_hanging(
    spawn: Callable[..., Peer],
) -> None:
    # 32 MiB each way fills every socket buffer: both block in the send itself.
    a = spawn(SHORT, "sendbig:32")
    b = spawn(SHORT, "sendbig:32")
    assert a.line() == "ready"
    assert b.line() == "ready"
    start = time.monotonic()
    assert {a.line(), b.line()} == {f"timeout {SHORT}"}
    assert time.monotonic() - start < SHORT + 20  # generous: the machine may be loaded
    _run(a, b)


def test_long_running_receiver_across_senders(pipe_name: str, spawn: Callable[..., Peer]) -> None:
    with IPC(pipe_name, timeout=WAIT) as ipc:
        for text in ("one", "two", "three"):
            sender = spawn(WAIT, f"send:{text}")
            assert sender.line() == "ready"
            assert ipc.receive_message() == text
            assert sender.line() == "sent"
            _run(sender)


def test_in_process_checksums_still_travel(pipe_name: str, spawn: Callable[..., Peer]) -> None:
    with IPC(pipe_name, timeout=WAIT) as ipc:
        sender = spawn(WAIT, "send:plain", "sendcrc:checked")
        assert sender.line() == "ready"
        with pytest.raises(ChecksumError):
            ipc.receive_message(crc=True)  # required, and absent
        assert ipc.receive_message(crc=True) == "checked"
        assert sender.line() == "sent"
        assert sender.line() == "sent"
        _run(sender)


# -- misuse fails at once -------------------------------------------------------------


def _at_once(start: float) -> None:
    assert time.monotonic() - start < SHORT / 2


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (12345, TypeError),
        ({"a": 1}, TypeError),
        (None, TypeError),
        (memoryview(b"abcdef")[::2], ValueError),
    ],
    ids=["int", "dict", "none", "non-contiguous"],
)
def test_send_message_wrong_type_fails_before_waiting(
    pipe_name: str, message: object, error: type[Exception]
) -> None:
    with IPC(pipe_name, timeout=SHORT) as ipc:
        start = time.monotonic()
        with pytest.raises(error, match=r"str or a bytes-like|contiguous"):
            ipc.send_message(message)  # type: ignore[arg-type]
        _at_once(start)


def test_crc_must_be_a_bool(pipe_name: str) -> None:
    with IPC(pipe_name, timeout=SHORT) as ipc:
        start = time.monotonic()
        with pytest.raises(TypeError, match="crc must be True or False"):
            ipc.send_message(b"x", crc="yes")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="crc must be True or False"):
            ipc.receive_message(crc=1)  # type: ignore[arg-type]
        _at_once(start)


def test_crc_with_a_framing_without_checksum_fails_before_waiting(pipe_name: str) -> None:
    with IPC(pipe_name, timeout=SHORT, framing="lines") as ipc:
        start = time.monotonic()
        with pytest.raises(ValueError, match="no checksum"):
            ipc.send_message("x", crc=True)
        with pytest.raises(ValueError, match="no checksum"):
            ipc.receive_message(crc=True)
        _at_once(start)


def test_calls_after_close_raise_connection_closed(pipe_name: str) -> None:
    ipc = IPC(pipe_name, timeout=SHORT)
    ipc.close()
    ipc.close()  # idempotent
    start = time.monotonic()
    with pytest.raises(ConnectionClosedError, match="closed"):
        ipc.send_message("x")
    with pytest.raises(ConnectionClosedError, match="closed"):
        ipc.receive_message()
    _at_once(start)
    # The name is free again.
    with IPC(pipe_name, timeout=SHORT) as other, pytest.raises(PipeTimeoutError):
        other.receive_message()


@pytest.mark.parametrize("command", ["send", "recv"])
def test_cli_crc_with_lines_fails_at_once(
    pipe_name: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [command, "--name", pipe_name, "--crc", "--framing", "lines", "--timeout", str(SHORT)]
    start = time.monotonic()
    assert main([*args, "text"] if command == "send" else args) == 2
    _at_once(start)
    err = capsys.readouterr().err
    assert "--crc" in err
    assert "lines" in err


# -- who can acknowledge --------------------------------------------------------------


def test_acknowledge_off_talks_to_plain_peers(pipe_name: str) -> None:
    with IPC(pipe_name, timeout=WAIT, acknowledge=False) as ipc:
        proc = start(peers.echo, pipe_name)
        try:
            ipc.send_message("plain")
            assert ipc.receive_message() == "plain"
            ipc.send_message(b"\x00bytes")
            assert ipc.receive_message() == b"\x00bytes"
        finally:
            ipc.close()
            code = finish(proc)
    assert code == 0


def test_a_plain_peer_gets_a_clear_error(pipe_name: str) -> None:
    with IPC(pipe_name, timeout=WAIT) as ipc:
        proc = start(peers.send_then_close, pipe_name, ["not an IPC"], 1)
        try:
            with pytest.raises(ProtocolError, match="acknowledge=False"):
                ipc.receive_message()
        finally:
            code = finish(proc)
    assert code == 0


def test_acknowledge_needs_the_npipes_framing(pipe_name: str) -> None:
    with pytest.raises(ValueError, match="acknowledge=True needs framing='npipes'"):
        IPC(pipe_name, framing="npipes1", acknowledge=True)
    with pytest.raises(TypeError, match="acknowledge must be"):
        IPC(pipe_name, acknowledge="yes")  # type: ignore[arg-type]


# -- threads ---------------------------------------------------------------------------


def test_close_from_another_thread_ends_a_waiting_call(pipe_name: str) -> None:
    ipc = IPC(pipe_name, timeout=WAIT)
    errors: list[BaseException] = []

    def receive() -> None:
        try:
            ipc.receive_message()
        except BaseException as exc:  # noqa: BLE001 - checked below
            errors.append(exc)

    thread = threading.Thread(target=receive)
    thread.start()
    time.sleep(0.2)  # lets the call start waiting; the outcome is the same if it has not
    start = time.monotonic()
    ipc.close()
    thread.join(WAIT)
    assert time.monotonic() - start < SHORT
    assert len(errors) == 1
    assert isinstance(errors[0], ConnectionClosedError), errors
    with npipes.listen(pipe_name):  # nobody listens again behind our back
        pass


def test_two_threads_receiving_on_one_ipc_each_get_a_whole_message(
    pipe_name: str, spawn: Callable[..., Peer]
) -> None:
    got: list[bytes | str] = []
    with IPC(pipe_name, timeout=WAIT) as ipc:
        threads = [threading.Thread(target=lambda: got.append(ipc.receive_message())) for _ in "ab"]
        for thread in threads:
            thread.start()
        sender = spawn(WAIT, "send:one", "sendbytes:two")
        assert sender.line() == "ready"
        for thread in threads:
            thread.join(WAIT)
        assert sender.line() == "sent"
        assert sender.line() == "sent"
        _run(sender)
    assert sorted(got, key=repr) == ["one", b"two"]
