"""Windows named-pipe corners, each on real pipes (run under Wine in CI).

Where Wine 8 accepts but does not enforce a Windows feature (first-instance
exclusivity, DACL access checks, the SQOS impersonation level) the test skips
under Wine only, saying so; docs/windows.md records what real Windows does.
"""

from __future__ import annotations

import _thread
import sys
import threading
import time
from collections.abc import Iterator

import pytest

import npipes
from helpers import CTX, finish, running_under_wine, start
from npipes._frame import encode_frame

pytestmark = pytest.mark.windows

if sys.platform == "win32":
    import pywintypes
    import win32con
    import win32file
    import win32pipe
    import win32security

    import winpeers
    from npipes._backend import ListenOptions, windows_security
    from npipes._backend import windows as backend

WINE = running_under_wine()


def needs_real_windows(what: str) -> pytest.MarkDecorator:
    """Skip under Wine only, naming the Windows feature Wine 8 does not enforce."""
    return pytest.mark.skipif(WINE, reason=f"Wine 8 does not enforce {what} (docs/windows.md)")


MiB = 1 << 20


def _path(name: str) -> str:
    return "\\\\.\\pipe\\" + name


def _raw_client(name: str, *, message_mode: bool = True) -> object:
    handle = win32file.CreateFile(
        _path(name),
        win32file.GENERIC_READ | win32file.GENERIC_WRITE,
        0,
        None,
        win32file.OPEN_EXISTING,
        0,
        None,
    )
    if message_mode:
        win32pipe.SetNamedPipeHandleState(handle, win32pipe.PIPE_READMODE_MESSAGE, None, None)
    return handle


@pytest.fixture
def listener(pipe_name: str) -> Iterator[npipes.Listener]:
    with npipes.listen(pipe_name) as lst:
        yield lst


def test_address_is_the_pipe_path(listener: npipes.Listener, pipe_name: str) -> None:
    assert listener.address == _path(pipe_name)


def test_client_before_accept_is_connected(listener: npipes.Listener) -> None:
    # ConnectNamedPipe then reports ERROR_PIPE_CONNECTED: that is success.
    with npipes.connect(listener.name, timeout=10) as client:
        client.send("early")
        with listener.accept(timeout=10) as conn:
            assert conn.recv(timeout=10) == "early"
            conn.send(b"reply")
            assert client.recv(timeout=10) == b"reply"


def test_more_data_is_never_truncation(listener: npipes.Listener) -> None:
    # One pipe message far above the 64 KiB buffer and read size (ERROR_MORE_DATA).
    payload = bytes(range(256)) * (3 * MiB // 256)
    handle = _raw_client(listener.name)
    try:
        with listener.accept(timeout=10) as conn:
            frame = encode_frame(payload, crc=True)
            writer = threading.Thread(target=win32file.WriteFile, args=(handle, frame))
            writer.start()  # one WriteFile: blocks until the reader has taken it all
            assert conn.recv(timeout=30) == payload
            writer.join(30)
    finally:
        win32file.CloseHandle(handle)


def test_frame_split_over_pipe_messages_and_frames_sharing_one(
    listener: npipes.Listener,
) -> None:
    # A C#/C++ peer often writes header and payload with separate WriteFile calls.
    handle = _raw_client(listener.name)
    frame = encode_frame(b"0123456789" * 1000, crc=True)
    try:
        with listener.accept(timeout=10) as conn:
            for piece in (frame[:3], frame[3:16], frame[16:5000], frame[5000:-2], frame[-2:]):
                win32file.WriteFile(handle, piece)
            win32file.WriteFile(handle, encode_frame("a") + encode_frame(b"b") + encode_frame("c"))
            assert conn.recv(timeout=10) == b"0123456789" * 1000
            assert [conn.recv(timeout=10) for _ in range(3)] == ["a", b"b", "c"]
    finally:
        win32file.CloseHandle(handle)


def test_pipe_busy_waits_inside_the_deadline(listener: npipes.Listener) -> None:
    with npipes.connect(listener.name, timeout=10) as first:  # takes the waiting instance
        start_at = time.monotonic()
        with pytest.raises(npipes.PipeBusyError):
            npipes.connect(listener.name, timeout=0.5)
        assert 0.4 <= time.monotonic() - start_at < 5
        accepted: list[npipes.Connection] = []
        thread = threading.Thread(target=lambda: accepted.append(listener.accept(timeout=10)))
        thread.start()
        with npipes.connect(listener.name, timeout=10) as second:  # WaitNamedPipe, then in
            thread.join(10)
            with accepted[0] as conn:
                first.send("one")
                assert conn.recv(timeout=10) == "one"
            second.send("two")
            with listener.accept(timeout=10) as conn2:
                assert conn2.recv(timeout=10) == "two"


def test_broken_pipe_is_connection_closed(listener: npipes.Listener) -> None:
    with npipes.connect(listener.name, timeout=10) as client:
        conn = listener.accept(timeout=10)
        conn.close()
        with pytest.raises(npipes.ConnectionClosedError) as info:
            client.recv(timeout=10)
        assert type(info.value) is npipes.ConnectionClosedError
        with pytest.raises(npipes.ConnectionClosedError):
            client.send(b"x" * 10, timeout=10)


def test_win32_errors_are_translated_and_chained(pipe_name: str) -> None:
    with pytest.raises(npipes.PipeNotFoundError) as info:
        npipes.connect(pipe_name)
    assert isinstance(info.value.__cause__, pywintypes.error)
    assert info.value.__cause__.winerror == 2


def test_byte_mode_server(pipe_name: str) -> None:
    handle = win32pipe.CreateNamedPipe(
        _path(pipe_name),
        win32pipe.PIPE_ACCESS_DUPLEX,
        win32pipe.PIPE_TYPE_BYTE | win32pipe.PIPE_READMODE_BYTE | win32pipe.PIPE_WAIT,
        1,
        65536,
        65536,
        0,
        None,
    )
    got: list[bytes] = []

    def serve() -> None:
        win32pipe.ConnectNamedPipe(handle, None)
        data = b""
        frame = encode_frame("ping")
        while len(data) < len(frame):
            data += win32file.ReadFile(handle, 65536)[1]
        got.append(data)
        win32file.WriteFile(handle, encode_frame(b"pong"))

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with npipes.connect(pipe_name, timeout=10) as conn:
            conn.send("ping")
            assert conn.recv(timeout=10) == b"pong"
        thread.join(10)
        assert got == [encode_frame("ping")]
    finally:
        win32file.CloseHandle(handle)


@pytest.mark.parametrize("size", [1000, 2 * MiB])
def test_sent_data_survives_an_immediate_close(listener: npipes.Listener, size: int) -> None:
    payload = b"z" * size

    def send_and_close(conn: npipes.Connection) -> None:
        conn.send(payload, timeout=30)
        conn.close()  # CloseHandle right away, never DisconnectNamedPipe

    with npipes.connect(listener.name, timeout=10) as client:
        sender = threading.Thread(target=send_and_close, args=(listener.accept(timeout=10),))
        sender.start()
        if size < 64 * 1024:
            sender.join(10)  # small: it fits the pipe buffer, the close happens first
            assert not sender.is_alive()
        assert client.recv(timeout=30) == payload
        sender.join(10)
        with pytest.raises(npipes.ConnectionClosedError):
            client.recv(timeout=10)


def test_peer_pid_and_sid(listener: npipes.Listener) -> None:
    import os

    with npipes.connect(listener.name, timeout=10) as client, listener.accept(timeout=10) as conn:
        assert conn.peer.pid == os.getpid()
        assert client.peer.pid == os.getpid()
        assert conn.peer.sid is not None
        assert conn.peer.sid.startswith("S-1-")
        assert conn.peer.uid is None


def _dacl_entries(handle: object) -> set[tuple[int, str]]:
    info = win32security.GetSecurityInfo(
        handle, win32security.SE_KERNEL_OBJECT, win32security.DACL_SECURITY_INFORMATION
    )
    dacl = info.GetSecurityDescriptorDacl()
    entries = set()
    for index in range(dacl.GetAceCount()):
        (ace_type, _flags), _mask, sid = dacl.GetAce(index)
        entries.add((ace_type, win32security.ConvertSidToStringSid(sid)))
    return entries


def test_default_dacl_is_owner_and_system_only(listener: npipes.Listener) -> None:
    me = windows_security.current_user_sid()
    with npipes.connect(listener.name, timeout=10), listener.accept(timeout=10) as conn:
        entries = _dacl_entries(conn._stream.handle)  # type: ignore[attr-defined]
    allowed = win32security.ACCESS_ALLOWED_ACE_TYPE
    assert entries == {(allowed, me), (allowed, "S-1-5-18")}


def test_allowed_users_and_custom_sddl(pipe_name: str) -> None:
    users = "S-1-5-32-545"  # BUILTIN\Users
    with npipes.listen(pipe_name, allowed_users=[users]) as lst:
        with npipes.connect(pipe_name, timeout=10), lst.accept(timeout=10) as conn:
            sids = {sid for _, sid in _dacl_entries(conn._stream.handle)}  # type: ignore[attr-defined]
        assert users in sids
    with npipes.listen(pipe_name, security_descriptor="D:P(A;;GA;;;WD)") as lst:
        with npipes.connect(pipe_name, timeout=10), lst.accept(timeout=10) as conn:
            sids = {sid for _, sid in _dacl_entries(conn._stream.handle)}  # type: ignore[attr-defined]
        assert sids == {"S-1-1-0"}  # Everyone


def test_secure_flags_passed() -> None:
    open_first, mode = backend.pipe_modes(ListenOptions(), first=True)
    open_next, _ = backend.pipe_modes(ListenOptions(), first=False)
    _, remote_mode = backend.pipe_modes(ListenOptions(allow_remote=True), first=False)
    assert open_first & backend.FILE_FLAG_FIRST_PIPE_INSTANCE
    assert not open_next & backend.FILE_FLAG_FIRST_PIPE_INSTANCE
    assert open_first & win32file.FILE_FLAG_OVERLAPPED
    assert mode & backend.PIPE_REJECT_REMOTE_CLIENTS
    assert not remote_mode & backend.PIPE_REJECT_REMOTE_CLIENTS
    assert mode & win32pipe.PIPE_TYPE_MESSAGE
    assert backend.CLIENT_FLAGS & win32con.SECURITY_SQOS_PRESENT
    assert backend.CLIENT_FLAGS & win32file.SECURITY_IDENTIFICATION


def test_second_npipes_listener_is_refused_even_under_wine(listener: npipes.Listener) -> None:
    # The named semaphore backs up FILE_FLAG_FIRST_PIPE_INSTANCE, which Wine ignores.
    with pytest.raises(npipes.PipeInUseError):
        npipes.listen(listener.name)
    with npipes.connect(listener.name, timeout=10), listener.accept(timeout=10):
        pass  # the first listener is unharmed


@needs_real_windows("FILE_FLAG_FIRST_PIPE_INSTANCE")
def test_foreign_server_name_cannot_be_squatted(pipe_name: str) -> None:
    ready, done = CTX.Event(), CTX.Event()
    proc = start(winpeers.hold_raw_pipe, _path(pipe_name), ready, done)
    try:
        assert ready.wait(30)
        with pytest.raises(npipes.PipeInUseError):
            npipes.listen(pipe_name)
    finally:
        done.set()
        finish(proc)


@needs_real_windows("DACL access checks on open")
def test_dacl_denies_access(pipe_name: str) -> None:
    with (
        npipes.listen(pipe_name, security_descriptor="D:P"),
        pytest.raises(npipes.PipePermissionError),
    ):
        npipes.connect(pipe_name, timeout=5)


@needs_real_windows("the SQOS impersonation level")
def test_server_can_only_identify_the_client(listener: npipes.Listener) -> None:
    with npipes.connect(listener.name, timeout=10), listener.accept(timeout=10) as conn:
        handle = conn._stream.handle  # type: ignore[attr-defined]
        win32security.ImpersonateNamedPipeClient(handle)
        try:
            token = win32security.OpenThreadToken(
                win32security.GetCurrentThread(), win32security.TOKEN_QUERY, True
            )
        finally:
            win32security.RevertToSelf()
        level = win32security.GetTokenInformation(token, win32security.TokenImpersonationLevel)
        assert level == win32security.SecurityIdentification


def test_ctrl_c_ends_a_pending_accept_promptly(listener: npipes.Listener) -> None:
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        listener.accept(timeout=30)
    assert time.monotonic() - started < 3
    timer.join()
    # The cancelled instance was replaced: the listener still serves.
    with npipes.connect(listener.name, timeout=10) as client, listener.accept(timeout=10) as c:
        client.send("after")
        assert c.recv(timeout=10) == "after"


def test_ctrl_c_ends_a_pending_recv_and_keeps_the_connection(listener: npipes.Listener) -> None:
    with npipes.connect(listener.name, timeout=10) as client, listener.accept(timeout=10) as c:
        timer = threading.Timer(0.3, _thread.interrupt_main)
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            c.recv()
        timer.join()
        client.send("still here")
        assert c.recv(timeout=10) == "still here"


def test_close_from_another_thread_ends_a_pending_recv(listener: npipes.Listener) -> None:
    with npipes.connect(listener.name, timeout=10), listener.accept(timeout=10) as conn:
        timer = threading.Timer(0.3, conn.close)
        timer.start()
        with pytest.raises(npipes.ConnectionClosedError):
            conn.recv(timeout=30)
        timer.join()


def test_16_clients_200_messages_with_crc(pipe_name: str) -> None:
    with npipes.listen(pipe_name, crc=True) as listener:
        _serve_16_clients(listener)


def _serve_16_clients(listener: npipes.Listener) -> None:
    errors: list[BaseException] = []

    def serve(conn: npipes.Connection) -> None:
        try:
            with conn:
                for message in conn:
                    conn.send(message)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def accept_all() -> None:
        for _ in range(16):
            threading.Thread(target=serve, args=(listener.accept(timeout=30),)).start()

    acceptor = threading.Thread(target=accept_all)
    acceptor.start()
    procs = [start(_echo_client, listener.name, i) for i in range(16)]
    assert [finish(p) for p in procs] == [0] * 16
    acceptor.join(30)
    assert not errors


def _echo_client(name: str, ident: int) -> None:
    with npipes.connect(name, timeout=30, wait_for_listener=True, crc=True) as conn:
        for seq in range(200):
            conn.send(f"{ident}:{seq}")
            assert conn.recv(timeout=30) == f"{ident}:{seq}"
