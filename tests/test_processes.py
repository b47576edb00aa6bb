"""Messages between real processes: sizes, types, huge messages, dying and leaving peers,
many clients, the seed's two-liner and the IPC facade."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

import npipes
import peers
from helpers import CTX, finish, start
from npipes import ConnectionClosedError, IncompleteMessageError
from npipes.ipc import IPC

MiB = 1024 * 1024
WAIT = 30.0

# (sent, expected back): str stays str, any bytes-like comes back as bytes.
MESSAGES: list[tuple[bytes | bytearray | str, bytes | str]] = [
    (b"", b""),
    (b"\xff", b"\xff"),
    (bytearray(b"\x00"), b"\x00"),
    (bytes(range(256)) * (MiB // 256), bytes(range(256)) * (MiB // 256)),
    ("", ""),
    ("x", "x"),
    ("é" * (MiB // 2), "é" * (MiB // 2)),  # 1 MiB of UTF-8
]


@pytest.mark.parametrize("crc", [False, True], ids=["nocrc", "crc"])
def test_sizes_and_types_both_directions(pipe_name: str, crc: bool) -> None:
    with npipes.listen(pipe_name, crc=crc) as listener:
        proc = start(peers.echo, pipe_name, crc)
        with listener.accept(timeout=WAIT) as conn:
            for sent, expected in MESSAGES:
                conn.send(sent, timeout=WAIT)
                got = conn.recv(timeout=WAIT)
                assert type(got) is type(expected)
                assert len(got) == len(expected)
                assert got == expected
    assert finish(proc) == 0


@pytest.mark.slow
def test_256_mib_message_costs_its_size_once(pipe_name: str) -> None:
    size = 256 * MiB
    with npipes.listen(pipe_name) as listener:
        # Start the receiver before the payload exists: a spawned child's ru_maxrss
        # starts from its parent's RSS at exec time on Linux.
        proc = start(peers.receive_big, pipe_name)
        data = bytes(range(256)) * (size // 256)
        digest = hashlib.sha256(data).hexdigest()
        with listener.accept(timeout=WAIT) as conn:
            conn.send(data, timeout=120)
            del data
            report = json.loads(conn.recv(timeout=120))
    assert finish(proc) == 0
    assert report["type"] == "bytes"
    assert report["size"] == size
    assert report["sha256"] == digest
    assert report["peak_bytes"] <= size + 64 * MiB, report["peak_bytes"] / MiB


@pytest.mark.parametrize("unread", [False, True], ids=["clean", "unread-data-at-peer"])
def test_peer_killed_mid_message_is_incomplete(pipe_name: str, unread: bool) -> None:
    # With unread: the dying peer has data it never read, which makes Linux report
    # ECONNRESET instead of end-of-stream; it must still be IncompleteMessageError.
    ready = CTX.Event()
    killed_at: list[float] = []

    with npipes.listen(pipe_name) as listener:
        proc = start(peers.die_mid_message, pipe_name, 10 * MiB, 1 * MiB, ready)

        def kill_when_ready() -> None:
            if ready.wait(WAIT):
                killed_at.append(time.monotonic())
                proc.kill()  # SIGKILL on POSIX, TerminateProcess on Windows

        killer = threading.Thread(target=kill_when_ready)
        with listener.accept(timeout=WAIT) as conn:
            if unread:
                conn.send("unread", timeout=WAIT)
            killer.start()
            with pytest.raises(IncompleteMessageError):
                conn.recv(timeout=WAIT)  # a hang would end as PipeTimeoutError instead
            noticed = time.monotonic()
            assert conn.closed
            killer.join(WAIT)
    assert killed_at, "the peer never signalled that it had written half a message"
    assert noticed - killed_at[0] < 5
    assert finish(proc) != 0


@pytest.mark.slow
def test_32_clients_1000_messages_each_with_crc(pipe_name: str) -> None:
    clients, count = 32, 1000
    results: dict[str, list[int]] = {}
    errors: list[str] = []

    def serve(conn: npipes.Connection) -> None:
        seen: list[int] = []
        client = None
        try:
            with conn:
                while True:
                    message = conn.recv(timeout=60)
                    assert isinstance(message, str)
                    sender, _, seq = message.partition(":")
                    client = client or sender
                    if sender != client:
                        errors.append(f"client {client} got a message of {sender}")
                    if seq == "end":
                        conn.send(f"{client}:{len(seen)}", timeout=WAIT)
                        break
                    seen.append(int(seq))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(f"client {client}: {exc!r}")
        results[str(client)] = seen

    with npipes.listen(pipe_name, crc=True) as listener:
        procs = [start(peers.count_client, pipe_name, i, count) for i in range(clients)]
        threads = []
        for _ in range(clients):
            thread = threading.Thread(target=serve, args=(listener.accept(timeout=60),))
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(90)
        codes = [finish(proc) for proc in procs]
    assert not errors
    assert codes == [0] * clients
    assert sorted(results) == sorted(str(i) for i in range(clients))
    for seen in results.values():
        assert seen == list(range(count))


SEED_SENDER = "from npipes.ipc import IPC\nipc = IPC()\nipc.send_message('Hello', crc=True)"
SEED_RECEIVER = (
    "from npipes.ipc import IPC\nipc = IPC()\nmsg = ipc.receive_message(crc = True)\n"
    "print(msg)\nprint(ipc.message)"
)


@pytest.mark.parametrize("crc", [True, False], ids=["crc", "nocrc"])
@pytest.mark.parametrize("first", ["receiver", "sender"])
def test_seed_lines_verbatim(crc: bool, first: str) -> None:
    sender, receiver = SEED_SENDER, SEED_RECEIVER
    if not crc:
        sender = sender.replace(", crc=True", "")
        receiver = receiver.replace("crc = True", "")
    with tempfile.TemporaryDirectory(prefix="npx") as runtime:
        # The seed uses the default name: on POSIX a private XDG_RUNTIME_DIR keeps it
        # apart from any other test or program (Windows has one namespace: these
        # cases run one after the other, each ending before the next starts).
        env = dict(os.environ, XDG_RUNTIME_DIR=runtime)
        socket_file = Path(runtime, "npipes", "IPC_PIPE_DEFAULT.sock")
        scripts = {"sender": sender, "receiver": receiver}
        order = [first, "sender" if first == "receiver" else "receiver"]
        procs: dict[str, subprocess.Popen[str]] = {}
        try:
            for role in order:
                procs[role] = subprocess.Popen(
                    [sys.executable, "-c", scripts[role]],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                if role == first and sys.platform != "win32":
                    _wait_until_listening(socket_file, procs[role])
            out = {role: proc.communicate(timeout=60) for role, proc in procs.items()}
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
    for role, proc in procs.items():
        assert proc.returncode == 0, (role, out[role][1])
    assert out["receiver"][0].splitlines() == ["Hello", "Hello"]
    assert out["sender"][0] == ""


def _wait_until_listening(socket_file: Path, proc: subprocess.Popen[str]) -> None:
    """Wait for the first process to listen (its socket file appears once it does)."""
    deadline = time.monotonic() + 30
    while not socket_file.exists():
        assert proc.poll() is None, "the first process exited before it listened"
        assert time.monotonic() < deadline, "the first process never listened"
        time.sleep(0.005)  # polls a condition; orders nothing by itself


def test_ipc_persistent_connection_both_ways(pipe_name: str) -> None:
    with IPC(pipe_name, timeout=WAIT) as ipc:  # nobody there yet: this side listens
        proc = start(peers.ipc_conversation, pipe_name)
        assert ipc.message is None
        ipc.send_message("one")
        ipc.send_message(b"two")
        third = ipc.receive_message()
        assert type(third) is bytes
        assert third == b"three"
        assert ipc.message == b"three"
        fourth = ipc.receive_message(crc=True)
        assert type(fourth) is str
        assert fourth == "four"
        ipc.send_message("five", crc=True)
        last = ipc.receive_message()  # sent right before the peer's os._exit
        assert last == peers.IPC_LAST
        assert ipc.message == peers.IPC_LAST
    assert finish(proc) == 0


def test_clean_close_is_not_incomplete_and_ends_iteration(pipe_name: str) -> None:
    messages: list[bytes | str] = ["a", b"b", "c" * 70_000]
    with npipes.listen(pipe_name) as listener:
        proc = start(peers.send_then_close, pipe_name, messages, 2)
        with listener.accept(timeout=WAIT) as conn:
            assert [conn.recv(timeout=WAIT) for _ in messages] == messages
            with pytest.raises(ConnectionClosedError) as info:
                conn.recv(timeout=WAIT)
            assert type(info.value) is ConnectionClosedError
            assert conn.closed
        with listener.accept(timeout=WAIT) as conn:
            assert list(conn) == messages
            assert conn.closed
    assert finish(proc) == 0
