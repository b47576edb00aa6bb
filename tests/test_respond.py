"""``npipes.serve(name, respond=func)`` and ``npipes.aio.serve(..., respond=afunc)``:
replies in order, many clients, exceptions and bad return values as error replies
(RemoteError at the client), CRC, framings, the handler/respond choice, close()
with a respond call under way. Real processes both ways round: the server in a
child and the client here, and the reverse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing.queues
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import npipes
import respond_peers
from helpers import CTX, finish, start
from npipes import ChecksumError, ConnectionClosedError, PipeNotFoundError, RemoteError
from respond_peers import WAIT, arequest, request

KINDS = ["sync", "aio", "aio-sync"]  # aio-sync: a plain function on the asyncio server


@contextlib.contextmanager
def child_server(
    name: str, kind: str = "sync", **options: Any
) -> Iterator[multiprocessing.queues.Queue[logging.LogRecord]]:
    """A respond server in a child process; yields the queue its log records arrive on."""
    ready, stop = CTX.Event(), CTX.Event()
    logs: multiprocessing.queues.Queue[logging.LogRecord] = CTX.Queue()
    proc = start(respond_peers.serve, name, kind, ready, stop, logs, options)
    try:
        assert ready.wait(WAIT), "the server process did not start"
        yield logs
    finally:
        stop.set()
        assert finish(proc) == 0


def records(logs: multiprocessing.queues.Queue[logging.LogRecord]) -> Iterator[logging.LogRecord]:
    """The log records of a child server, waiting for each up to WAIT."""
    while True:
        yield logs.get(timeout=WAIT)


# -- handler or respond ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("handler", "respond"),
    [(None, None), (print, respond_peers.respond)],
    ids=["neither", "both"],
)
def test_exactly_one_of_handler_and_respond_before_listening(
    pipe_name: str, handler: Any, respond: Any
) -> None:
    with pytest.raises(TypeError, match=r"handler.*respond"):
        npipes.serve(pipe_name, handler, respond=respond)

    async def aio() -> None:
        with pytest.raises(TypeError, match=r"handler.*respond"):
            await npipes.aio.serve(pipe_name, handler, respond=respond)

    asyncio.run(aio())
    with pytest.raises(PipeNotFoundError):  # nothing listened
        npipes.connect(pipe_name)


def test_respond_must_be_callable(pipe_name: str) -> None:
    with pytest.raises(TypeError, match="respond must be callable, not str"):
        npipes.serve(pipe_name, respond="upper")  # type: ignore[arg-type]
    with pytest.raises(PipeNotFoundError):
        npipes.connect(pipe_name)


def test_handler_stays_positional(pipe_name: str) -> None:
    def handler(conn: npipes.Connection) -> None:
        conn.send(str(conn.recv(timeout=WAIT)) + "!", timeout=WAIT)

    with npipes.serve(pipe_name, handler), npipes.connect(pipe_name, timeout=WAIT) as conn:
        conn.send("hi", timeout=WAIT)
        assert conn.recv(timeout=WAIT) == "hi!"


# -- replies ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_replies_in_order_with_their_types(pipe_name: str, kind: str) -> None:
    with child_server(pipe_name, kind), npipes.connect(pipe_name, timeout=WAIT) as conn:
        sent: list[bytes | str] = []
        for n in range(60):  # all sent before any reply is read: replies queue up in order
            message: bytes | str = f"upper:m{n}" if n % 2 else f"m{n}".encode()
            conn.send(message, timeout=WAIT)
            sent.append(message)
        replies = [conn.recv(timeout=WAIT) for _ in sent]
        assert replies == [m[len("upper:") :].upper() if isinstance(m, str) else m for m in sent]
        assert request(conn, bytearray(b"\x00\x01")) == b"\x00\x01"


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_many_clients_at_once(pipe_name: str, kind: str) -> None:
    clients, count = 6, 25
    with child_server(pipe_name, kind):
        procs = [start(respond_peers.client, pipe_name, count, f"c{n}", {}) for n in range(clients)]
        assert [finish(proc) for proc in procs] == [0] * clients


# -- errors -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_exception_is_a_remote_error_and_the_server_goes_on(pipe_name: str, kind: str) -> None:
    with child_server(pipe_name, kind) as logs, npipes.connect(pipe_name, timeout=WAIT) as other:
        assert request(other, "echo:first") == "first"
        with npipes.connect(pipe_name, timeout=WAIT) as conn:
            with pytest.raises(RemoteError) as info:
                request(conn, "raise:no such key")
            assert info.value.remote_type == "KeyError"
            assert info.value.remote_message == "'no such key'"
            assert "KeyError" in str(info.value)
            assert request(conn, "echo:same connection") == "same connection"
        assert request(other, "echo:other connection") == "other connection"
        record = next(r for r in records(logs) if r.levelno >= logging.ERROR)
        assert record.name == "npipes.server"
        assert "respond function failed" in record.getMessage()
        assert pipe_name in record.getMessage()  # the address names the pipe
        # QueueHandler put the traceback into the message.
        assert "Traceback" in record.getMessage()
        assert "KeyError: 'no such key'" in record.getMessage()


def test_exception_logged_at_the_server_here(
    pipe_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    with npipes.serve(pipe_name, respond=respond_peers.respond) as server:
        assert finish(start(respond_peers.failing_client, pipe_name)) == 0
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 1
    assert failures[0].name == "npipes.server"
    assert server.address in failures[0].getMessage()
    assert failures[0].exc_info is not None
    assert failures[0].exc_info[0] is KeyError


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("command", "remote_type", "text"),
    [
        ("return-none", "TypeError", "str or a bytes-like object"),
        ("return-int", "TypeError", "not int"),
        ("return-list", "TypeError", "not list"),
        ("reserved", "ValueError", "error reply"),
    ],
)
def test_a_bad_return_value_is_an_error_reply(
    pipe_name: str, kind: str, command: str, remote_type: str, text: str
) -> None:
    with child_server(pipe_name, kind), npipes.connect(pipe_name, timeout=WAIT) as conn:
        with pytest.raises(RemoteError) as info:
            request(conn, f"{command}:x")
        assert info.value.remote_type == remote_type
        assert text in info.value.remote_message
        assert request(conn, "echo:still serving") == "still serving"


def test_system_exit_closes_that_connection_only(pipe_name: str) -> None:
    # Not reported as an error reply, not swallowed: it ends that worker thread
    # (which Python does quietly for SystemExit); the client sees its connection closed.
    with child_server(pipe_name, "sync") as logs:
        with npipes.connect(pipe_name, timeout=WAIT) as conn, pytest.raises(ConnectionClosedError):
            request(conn, "exit:now")
        with npipes.connect(pipe_name, timeout=WAIT) as conn:
            assert request(conn, "echo:alive") == "alive"
        record = next(r for r in records(logs) if r.levelno >= logging.ERROR)
        assert "raised SystemExit" in record.getMessage()


def test_system_exit_in_an_async_respond_stops_the_event_loop(pipe_name: str) -> None:
    ready, stop = CTX.Event(), CTX.Event()
    proc = start(respond_peers.serve, pipe_name, "aio", ready, stop, None, {})
    try:
        assert ready.wait(WAIT)
        with npipes.connect(pipe_name, timeout=WAIT) as conn, pytest.raises(ConnectionClosedError):
            request(conn, "exit:now")
    finally:
        stop.set()
        code = finish(proc)
    assert code == 3  # asyncio.run() raised the SystemExit(3) of the respond function


# -- CRC ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_reply_carries_a_crc_when_the_request_did(pipe_name: str, kind: str) -> None:
    with child_server(pipe_name, kind), npipes.connect(pipe_name, timeout=WAIT) as conn:
        assert request(conn, "echo:checked", crc=True) == "checked"  # recv(crc=True) passed
        conn.send("echo:plain", timeout=WAIT)
        with pytest.raises(ChecksumError):  # a request without one gets a reply without one
            conn.recv(timeout=WAIT, crc=True)
        assert request(conn, "echo:after") == "after"


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_a_crc_server_replies_with_a_crc_and_refuses_requests_without(
    pipe_name: str, kind: str
) -> None:
    with child_server(pipe_name, kind, crc=True):
        with npipes.connect(pipe_name, timeout=WAIT, crc=True) as conn:
            assert request(conn, "echo:checked") == "checked"
        with npipes.connect(pipe_name, timeout=WAIT) as conn:
            conn.send("echo:unchecked", timeout=WAIT)
            reply = conn.recv(timeout=WAIT, crc=True)  # the error reply carries a CRC-32
            with pytest.raises(RemoteError) as info:
                npipes._control.check_reply(reply)
            assert info.value.remote_type == "ChecksumError"
            assert request(conn, "echo:with", crc=True) == "with"


# -- framings -----------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["multiprocessing", "raw"])
@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_binary_framings_carry_the_error_reply(pipe_name: str, kind: str, framing: str) -> None:
    if kind == "aio" and sys.platform == "win32":
        pytest.skip(f"asyncio's proactor does not report pipe-message boundaries ({framing})")
    with (
        child_server(pipe_name, kind, framing=framing),
        npipes.connect(pipe_name, timeout=WAIT, framing=framing) as conn,
    ):
        assert request(conn, b"data") == b"data"
        with pytest.raises(RemoteError) as info:
            request(conn, b"!raise:x")
        assert info.value.remote_type == "KeyError"
        with pytest.raises(RemoteError) as info:
            request(conn, b"!return-none:")
        assert info.value.remote_type == "TypeError"
        assert request(conn, b"!upper:after") == b"AFTER"  # str replies arrive as bytes here


@pytest.mark.parametrize("framing", ["lines", "npipes1", "dotnet"])
@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_text_framings_close_instead_of_an_error_reply(
    pipe_name: str, kind: str, framing: str
) -> None:
    with child_server(pipe_name, kind, framing=framing) as logs:
        with npipes.connect(pipe_name, timeout=WAIT, framing=framing) as conn:
            assert request(conn, "upper:abc") == "ABC"
            conn.send("raise:x", timeout=WAIT)
            with pytest.raises(ConnectionClosedError):
                conn.recv(timeout=WAIT)
        with npipes.connect(pipe_name, timeout=WAIT, framing=framing) as conn:
            assert request(conn, "upper:still serving") == "STILL SERVING"
        closed = next(r for r in records(logs) if "cannot carry" in r.getMessage())
        assert framing in closed.getMessage()


# -- one connection's slow respond call never holds up another ------------------------------


@pytest.mark.parametrize("kind", KINDS[:2])
def test_a_slow_respond_call_holds_up_only_its_connection(pipe_name: str, kind: str) -> None:
    result: multiprocessing.queues.Queue[object] = CTX.Queue()
    with child_server(pipe_name, kind) as logs:
        blocked = start(respond_peers.blocked_client, pipe_name, result)
        assert any(r.getMessage() == "blocked" for r in records(logs))  # its call runs now
        with npipes.connect(pipe_name, timeout=WAIT) as conn:
            for n in range(5):
                assert request(conn, f"echo:{n}") == str(n)
            assert result.empty()  # the blocked call has not been answered
            assert request(conn, "release") == "released"
        assert result.get(timeout=WAIT) == "unblocked"
        assert result.get(timeout=WAIT) == "next"
        assert finish(blocked) == 0


# -- close() with a respond call under way ------------------------------------------


class Gate:
    """A respond function that blocks on ``block`` until ``go`` is set."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()

    def __call__(self, message: bytes | str) -> bytes | str:
        if message == "block":
            self.entered.set()
            assert self.go.wait(WAIT)
            return "unblocked"
        return message


def test_close_lets_a_respond_call_finish_and_closes_idle_clients(pipe_name: str) -> None:
    gate = Gate()
    result: multiprocessing.queues.Queue[object] = CTX.Queue()
    server = npipes.serve(pipe_name, respond=gate)
    try:
        idle = npipes.connect(pipe_name, timeout=WAIT)
        assert request(idle, "ping") == "ping"  # its worker now waits for a next request
        blocked = start(respond_peers.blocked_client, pipe_name, result)
        assert gate.entered.wait(WAIT)
        closing = threading.Thread(target=server.close, args=(WAIT,))
        closing.start()
        with pytest.raises(ConnectionClosedError):  # closed at once, not after the call
            idle.recv(timeout=WAIT)
        assert closing.is_alive()  # close() waits for the call under way
        gate.go.set()
        closing.join(WAIT)
        assert not closing.is_alive()
        assert result.get(timeout=WAIT) == "unblocked"  # its reply went out
        assert result.get(timeout=WAIT) == "ConnectionClosedError"  # then the end
        assert finish(blocked) == 0
        idle.close()
    finally:
        gate.go.set()
        server.close()


def test_aclose_lets_a_respond_call_finish_and_closes_idle_clients(pipe_name: str) -> None:
    result: multiprocessing.queues.Queue[object] = CTX.Queue()

    async def main() -> None:
        entered, go = asyncio.Event(), asyncio.Event()

        async def gate(message: bytes | str) -> bytes | str:
            if message == "block":
                entered.set()
                await asyncio.wait_for(go.wait(), WAIT)
                return "unblocked"
            return message

        server = await npipes.aio.serve(pipe_name, respond=gate)
        try:
            idle = await npipes.aio.connect(pipe_name, timeout=WAIT)
            assert await arequest(idle, "ping") == "ping"
            blocked = start(respond_peers.blocked_client, pipe_name, result)
            await asyncio.wait_for(entered.wait(), WAIT)
            closing = asyncio.ensure_future(server.aclose(WAIT))
            with pytest.raises(ConnectionClosedError):  # closed at once, not after the call
                await idle.recv(timeout=WAIT)
            assert not closing.done()  # aclose() waits for the call under way
            go.set()
            await asyncio.wait_for(closing, WAIT)
            got = await asyncio.to_thread(result.get, True, WAIT)
            assert got == "unblocked"
            got = await asyncio.to_thread(result.get, True, WAIT)
            assert got == "ConnectionClosedError"
            assert await asyncio.to_thread(finish, blocked) == 0
            await idle.aclose()
        finally:
            go.set()
            await server.aclose()

    asyncio.run(main())


def test_a_respond_function_may_close_its_own_server(pipe_name: str) -> None:
    result: multiprocessing.queues.Queue[object] = CTX.Queue()
    servers: list[npipes.Server] = []

    def func(message: bytes | str) -> bytes | str:
        if message == "shutdown":
            servers[0].close()  # not waited for by itself: its reply still goes out
            return "bye"
        return message

    with npipes.serve(pipe_name, respond=func) as server:
        servers.append(server)
        asker = start(respond_peers.asker, pipe_name, ["one", "shutdown", "two"], result)
        replies = [result.get(timeout=WAIT) for _ in range(3)]
        assert finish(asker) == 0
        assert replies == ["one", "bye", "ConnectionClosedError"]
        assert server.listener.closed


def test_an_async_respond_function_may_close_its_own_server(pipe_name: str) -> None:
    result: multiprocessing.queues.Queue[object] = CTX.Queue()

    async def main() -> None:
        servers: list[npipes.aio.Server] = []

        async def func(message: bytes | str) -> bytes | str:
            if message == "shutdown":
                await servers[0].aclose()
                return "bye"
            return message

        async with await npipes.aio.serve(pipe_name, respond=func) as server:
            servers.append(server)
            asker = start(respond_peers.asker, pipe_name, ["one", "shutdown", "two"], result)
            replies = [await asyncio.to_thread(result.get, True, WAIT) for _ in range(3)]
            assert await asyncio.to_thread(finish, asker) == 0
            assert replies == ["one", "bye", "ConnectionClosedError"]
            assert server.listener.closed

    asyncio.run(main())
