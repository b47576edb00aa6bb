"""The asyncio Windows backend's edges, on real named pipes: typed errors, no leaked handles.

Drives ``npipes._backend.windows_aio`` directly: a protocol factory that fails while a
connection is set up closes that pipe (the peer sees it end), concurrent accepts end
with ConnectionClosedError when the listener closes, a failed listen keeps no claim.
"""

from __future__ import annotations

import asyncio
import sys

import pytest

import npipes
from npipes._deadline import Deadline

pytestmark = pytest.mark.windows

if sys.platform == "win32":
    import win32file
    import win32pipe

    from npipes._backend import ListenOptions, windows_aio
    from npipes._backend import windows as backend
    from npipes._names import Address, resolve

WAIT = 30.0


class _FactoryFailed(Exception):
    pass


def _failing_factory() -> asyncio.Protocol:
    raise _FactoryFailed("no protocol")


def _address(name: str) -> Address:
    return resolve(name, platform="win32")


def _name_is_free(name: str) -> None:
    backend.listen(_address(name), ListenOptions()).close()


def test_a_failing_client_protocol_factory_closes_the_pipe(pipe_name: str) -> None:
    async def main() -> None:
        listener = backend.listen(_address(pipe_name), ListenOptions())
        try:
            with pytest.raises(_FactoryFailed):
                await windows_aio.open_connection(
                    _address(pipe_name),
                    Deadline(WAIT),
                    wait_for_listener=False,
                    protocol_factory=_failing_factory,
                )
            server = await asyncio.to_thread(listener.accept, Deadline(WAIT))
            got = await asyncio.to_thread(
                server.recv_into, memoryview(bytearray(8)), Deadline(WAIT)
            )
            assert got == 0  # the client's pipe was closed, not leaked
            server.close()
        finally:
            listener.close()

    asyncio.run(main())


def test_a_failing_server_protocol_factory_closes_that_client_only(pipe_name: str) -> None:
    async def main() -> None:
        listener = windows_aio.AioListener(_address(pipe_name), ListenOptions())
        try:
            client = await asyncio.to_thread(
                backend.connect, _address(pipe_name), Deadline(WAIT), wait_for_listener=False
            )
            with pytest.raises(_FactoryFailed):
                await listener.accept(_failing_factory)
            got = await asyncio.to_thread(
                client.recv_into, memoryview(bytearray(8)), Deadline(WAIT)
            )
            assert got == 0  # that client's pipe was closed
            client.close()
            # The listener still serves the next client.
            client = await asyncio.to_thread(
                backend.connect, _address(pipe_name), Deadline(WAIT), wait_for_listener=False
            )
            transport, _, _ = await listener.accept(asyncio.Protocol)
            transport.close()
            client.close()
        finally:
            listener.close()
        _name_is_free(pipe_name)

    asyncio.run(main())


def test_accepts_queued_behind_one_end_closed_when_the_listener_closes(pipe_name: str) -> None:
    async def main() -> None:
        listener = windows_aio.AioListener(_address(pipe_name), ListenOptions())
        first = asyncio.ensure_future(listener.accept(asyncio.Protocol))
        second = asyncio.ensure_future(listener.accept(asyncio.Protocol))
        for _ in range(10):
            await asyncio.sleep(0)  # the first waits for a client, the second for the lock
        assert not listener.closed
        listener.close()
        for task in (first, second):
            with pytest.raises(npipes.ConnectionClosedError):
                await asyncio.wait_for(task, WAIT)
        assert listener.closed
        _name_is_free(pipe_name)

    asyncio.run(main())


def test_a_listener_closed_with_a_made_transport_closes_that_client(pipe_name: str) -> None:
    async def main() -> None:
        listener = windows_aio.AioListener(_address(pipe_name), ListenOptions())
        client = await asyncio.to_thread(
            backend.connect, _address(pipe_name), Deadline(WAIT), wait_for_listener=False
        )
        task = asyncio.ensure_future(listener.accept(asyncio.Protocol))
        await asyncio.sleep(0)  # it takes the waiting client and makes its transport
        task.cancel()
        won = None
        try:
            won = await task
        except asyncio.CancelledError:
            for _ in range(50):  # let the shielded transport finish being made
                await asyncio.sleep(0.01)
        listener.close()
        if won is not None:
            won[0].close()
        got = await asyncio.to_thread(client.recv_into, memoryview(bytearray(8)), Deadline(WAIT))
        assert got == 0  # the client is not left hanging
        client.close()
        _name_is_free(pipe_name)

    asyncio.run(main())


def test_aio_listen_on_a_foreign_pipe_at_its_instance_limit_keeps_no_claim(
    pipe_name: str,
) -> None:
    path = _address(pipe_name).path
    foreign = win32pipe.CreateNamedPipe(
        path,
        win32pipe.PIPE_ACCESS_DUPLEX | win32file.FILE_FLAG_OVERLAPPED,
        win32pipe.PIPE_TYPE_MESSAGE | win32pipe.PIPE_READMODE_MESSAGE | win32pipe.PIPE_WAIT,
        1,
        4096,
        4096,
        0,
        None,
    )
    try:
        with pytest.raises((npipes.PipeInUseError, npipes.PipeBusyError)):
            windows_aio.AioListener(_address(pipe_name), ListenOptions())
    finally:
        foreign.Close()
    _name_is_free(pipe_name)


async def _accept_cancelled_as_the_client_connects(
    listener: windows_aio.AioListener, name: str
) -> backend.PipeStream:
    """Cancel an accept in the loop turn where the OS connected its client; the client.

    The test watches the accept's pending ConnectNamedPipe future (``_accepting``) and
    cancels the task right after that future completes, before the task resumes.
    """
    task = asyncio.ensure_future(listener.accept(asyncio.Protocol))
    loop = asyncio.get_running_loop()
    for _ in range(10_000):  # it takes the lock and starts ConnectNamedPipe
        if listener._accepting is not None:
            break
        await asyncio.sleep(0)
    accepting = listener._accepting
    assert accepting is not None
    client = asyncio.ensure_future(
        asyncio.to_thread(backend.connect, _address(name), Deadline(WAIT), wait_for_listener=False)
    )
    give_up = loop.time() + WAIT
    while loop.time() < give_up:  # spin in loop turns: resume before the accept does
        if accepting.done():
            break
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return await asyncio.wait_for(client, WAIT)


def test_a_client_connected_as_its_accept_is_cancelled_goes_to_the_next(pipe_name: str) -> None:
    async def main() -> None:
        listener = windows_aio.AioListener(_address(pipe_name), ListenOptions())
        try:
            client = await _accept_cancelled_as_the_client_connects(listener, pipe_name)
            await asyncio.to_thread(client.send, [b"hi"], Deadline(WAIT))
            got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

            class Reader(asyncio.Protocol):
                def data_received(self, data: bytes) -> None:
                    if not got.done():
                        got.set_result(data)

            transport, _, _ = await asyncio.wait_for(listener.accept(Reader), WAIT)
            assert await asyncio.wait_for(got, WAIT) == b"hi"
            transport.close()
            client.close()
        finally:
            listener.close()
        _name_is_free(pipe_name)

    asyncio.run(main())


def test_a_client_connected_as_its_accept_is_cancelled_ends_when_the_listener_closes(
    pipe_name: str,
) -> None:
    async def main() -> None:
        listener = windows_aio.AioListener(_address(pipe_name), ListenOptions())
        client = await _accept_cancelled_as_the_client_connects(listener, pipe_name)
        listener.close()
        got = await asyncio.to_thread(client.recv_into, memoryview(bytearray(8)), Deadline(WAIT))
        assert got == 0  # closed with the listener, not left hanging
        client.close()
        _name_is_free(pipe_name)

    asyncio.run(main())


def test_a_listener_closed_as_an_accept_takes_its_client_closes_that_client(
    pipe_name: str,
) -> None:
    async def main() -> None:
        listener = windows_aio.AioListener(_address(pipe_name), ListenOptions())
        client = await asyncio.to_thread(
            backend.connect, _address(pipe_name), Deadline(WAIT), wait_for_listener=False
        )
        task = asyncio.ensure_future(listener.accept(asyncio.Protocol))
        await asyncio.sleep(0)  # it takes the client; its transport is not made yet
        listener.close()
        with pytest.raises(npipes.ConnectionClosedError):
            await asyncio.wait_for(task, WAIT)
        got = await asyncio.to_thread(client.recv_into, memoryview(bytearray(8)), Deadline(WAIT))
        assert got == 0  # the client's instance was closed, not leaked
        client.close()
        _name_is_free(pipe_name)

    asyncio.run(main())
