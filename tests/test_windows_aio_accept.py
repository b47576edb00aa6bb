"""asyncio accepts on Windows pipes: no client lost or shared (issue 10, section 6).

The backend's ``AioListener`` runs on the proactor loop against raw pywin32
clients. Two tests hook the proactor's ``accept_pipe`` future (real I/O, only
a done-callback added) to act exactly between the OS connecting a client and
the accepting task resuming, the window the issue's races fall into.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from typing import Any

import pytest

import npipes
from npipes._names import resolve

pytestmark = pytest.mark.windows

if sys.platform == "win32":
    import pywintypes
    import win32file
    import win32pipe

    from npipes._backend import ListenOptions
    from npipes._backend.windows_aio import AioListener


class Collect(asyncio.Protocol):
    """Gathers what a pipe transport receives."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.got = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.got.set()


def _client(path: str, message: bytes, *, wait: bool = True) -> Any:
    """A raw client that writes ``message``; like npipes.connect it waits while the pipe is busy."""
    for _ in range(100):
        try:
            handle = win32file.CreateFile(
                path,
                win32file.GENERIC_READ | win32file.GENERIC_WRITE,
                0,
                None,
                win32file.OPEN_EXISTING,
                0,
                None,
            )
            break
        except pywintypes.error as exc:
            if exc.winerror != 231 or not wait:  # ERROR_PIPE_BUSY: every instance is taken
                raise
            with contextlib.suppress(pywintypes.error):
                win32pipe.WaitNamedPipe(path, 100)
    else:
        raise AssertionError(f"{path} stayed busy")
    win32pipe.SetNamedPipeHandleState(handle, win32pipe.PIPE_READMODE_MESSAGE, None, None)
    win32file.WriteFile(handle, message)
    return handle


async def _message_of(accepted: tuple[Any, Collect, Any]) -> bytes:
    transport, protocol, _ = accepted
    try:
        await asyncio.wait_for(protocol.got.wait(), 10)
        return bytes(protocol.data)
    finally:
        transport.close()


def _hook_accept(monkeypatch: pytest.MonkeyPatch, on_connected: Callable[[], None]) -> None:
    """Call ``on_connected`` as soon as an overlapped accept completes, before its task resumes."""
    proactor = asyncio.get_running_loop()._proactor  # type: ignore[attr-defined]
    original = proactor.accept_pipe

    def accept_pipe(pipe: Any) -> Any:
        future = original(pipe)
        future.add_done_callback(
            lambda f: on_connected() if not f.cancelled() and f.exception() is None else None
        )
        return future

    monkeypatch.setattr(proactor, "accept_pipe", accept_pipe)


def _no_listening_instance(path: str) -> bool:
    try:
        win32file.CloseHandle(_client(path, b""))
    except pywintypes.error as exc:
        return exc.winerror == 2  # ERROR_FILE_NOT_FOUND: no instance of the pipe is left
    return False


def test_close_while_an_accept_completes_leaves_no_instance(
    pipe_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(_close_while_an_accept_completes_leaves_no_instance(pipe_name, monkeypatch))


async def _close_while_an_accept_completes_leaves_no_instance(
    pipe_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lst = AioListener(resolve(pipe_name), ListenOptions())
    _hook_accept(monkeypatch, lst.close)
    task = asyncio.create_task(lst.accept(Collect))
    await asyncio.sleep(0.2)  # the overlapped ConnectNamedPipe is pending
    client = _client(lst.address, b"hello")
    with pytest.raises(npipes.ConnectionClosedError):
        await asyncio.wait_for(task, 10)
    win32file.CloseHandle(client)
    assert _no_listening_instance(lst.address)


def test_cancel_as_an_accept_completes_keeps_the_client(
    pipe_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(_cancel_as_an_accept_completes_keeps_the_client(pipe_name, monkeypatch))


async def _cancel_as_an_accept_completes_keeps_the_client(
    pipe_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lst = AioListener(resolve(pipe_name), ListenOptions())
    try:
        task = asyncio.create_task(lst.accept(Collect))
        _hook_accept(monkeypatch, task.cancel)
        await asyncio.sleep(0.2)
        client = _client(lst.address, b"kept")
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        monkeypatch.undo()
        assert await _message_of(await asyncio.wait_for(lst.accept(Collect), 10)) == b"kept"
        win32file.CloseHandle(client)
    finally:
        lst.close()


def test_cancelled_accepts_lose_no_client(pipe_name: str) -> None:
    asyncio.run(_cancelled_accepts_lose_no_client(pipe_name))


async def _cancelled_accepts_lose_no_client(pipe_name: str) -> None:
    lst = AioListener(resolve(pipe_name), ListenOptions())
    clients: list[Any] = []
    sent: list[bytes] = []
    messages: list[bytes] = []
    try:
        for i in range(20):
            task = asyncio.create_task(lst.accept(Collect))
            await asyncio.sleep(0.01 * (i % 4))
            # Connect right here, so the cancel below races the OS's connect. Busy
            # (the one waiting instance holds a client no accept has seen yet): skip.
            with contextlib.suppress(pywintypes.error):
                clients.append(_client(lst.address, b"c%d" % i, wait=False))
                sent.append(b"c%d" % i)
            await asyncio.sleep(0.01 * (i % 3))
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                messages.append(await _message_of(await task))
        assert len(sent) >= 10
        while len(messages) < len(sent):
            messages.append(await _message_of(await asyncio.wait_for(lst.accept(Collect), 10)))
        assert sorted(messages) == sorted(sent)
    finally:
        lst.close()
        for handle in clients:
            win32file.CloseHandle(handle)


def test_two_concurrent_accepts_get_different_clients(pipe_name: str) -> None:
    asyncio.run(_two_concurrent_accepts_get_different_clients(pipe_name))


async def _two_concurrent_accepts_get_different_clients(pipe_name: str) -> None:
    lst = AioListener(resolve(pipe_name), ListenOptions())
    try:
        tasks = [asyncio.create_task(lst.accept(Collect)) for _ in range(2)]
        await asyncio.sleep(0.2)
        one = _client(lst.address, b"one")
        await asyncio.sleep(0.2)
        two = _client(lst.address, b"two")
        accepted = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert sorted([await _message_of(a) for a in accepted]) == [b"one", b"two"]
        win32file.CloseHandle(one)
        win32file.CloseHandle(two)
    finally:
        lst.close()
