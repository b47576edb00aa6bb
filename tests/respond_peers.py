"""Peer programs for tests/test_respond.py (``serve(respond=...)``), run by ``helpers.start``.

The respond function understands small commands, ``"verb:argument"``:
``echo`` (the argument), ``upper``, ``bytes`` (the argument as bytes), ``raise``
(``KeyError``), ``return-none``, ``return-int``, ``return-list``, ``reserved``
(bytes with the error-reply prefix), ``block`` (waits until a ``release``
request arrives on any connection), ``exit`` (``SystemExit(3)``). A bytes
message is answered with itself, unless it starts with ``!`` (then the rest is a
command: binary-only framings deliver every message as bytes).
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import threading
from typing import TYPE_CHECKING, Any

import npipes
from npipes import _control

if TYPE_CHECKING:
    import multiprocessing.queues
    import multiprocessing.synchronize

WAIT = 30.0

_released = threading.Event()
_blocked = logging.getLogger("npipes.tests")  # "blocked" tells the test a block call is under way


def request(conn: npipes.Connection, message: bytes | str, *, crc: bool | None = None) -> object:
    """One request, with the tests' deadline."""
    return conn.request(message, timeout=WAIT, crc=crc)


async def arequest(conn: npipes.aio.Connection, message: bytes | str) -> object:
    """The asyncio twin of :func:`request`."""
    return await conn.request(message, timeout=WAIT)


def _command(message: bytes | str) -> tuple[str, str] | None:
    if not isinstance(message, str):
        if not message.startswith(b"!"):
            return None
        message = message[1:].decode()
    verb, _, argument = message.partition(":")
    return verb, argument


def answer(message: bytes | str) -> Any:
    """The respond function's answer to ``message`` (shared by sync and asyncio)."""
    command = _command(message)
    if command is None:
        return message
    verb, argument = command
    if verb == "echo":
        return argument
    if verb == "upper":
        return argument.upper()
    if verb == "bytes":
        return argument.encode()
    if verb == "raise":
        raise KeyError(argument)
    if verb == "return-none":
        return None
    if verb == "return-int":
        return 42
    if verb == "return-list":
        return [argument]
    if verb == "reserved":
        return _control.ERROR_REPLY + b"forged\nnot really"
    if verb == "exit":
        raise SystemExit(3)
    if verb == "release":
        _released.set()
        return "released"
    return f"unknown:{verb}"


def respond(message: bytes | str) -> Any:
    """The sync respond function: :func:`answer`, with ``block`` waiting in the thread."""
    if message == "block":
        _blocked.info("blocked")
        if not _released.wait(WAIT):
            raise TimeoutError("never released")
        return "unblocked"
    return answer(message)


async def arespond(message: bytes | str) -> Any:
    """The async respond function: :func:`answer`, with ``block`` awaiting (other
    connections are served meanwhile)."""
    if message == "block":
        _blocked.info("blocked")
        for _ in range(int(WAIT / 0.01)):
            if _released.is_set():
                return "unblocked"
            await asyncio.sleep(0.01)
        raise TimeoutError("never released")
    await asyncio.sleep(0)
    return answer(message)


def _log_to(logs: multiprocessing.queues.Queue[logging.LogRecord] | None) -> None:
    if logs is not None:
        logger = logging.getLogger("npipes")
        logger.addHandler(logging.handlers.QueueHandler(logs))
        logger.setLevel(logging.INFO)


def serve(
    name: str,
    kind: str,
    ready: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event,
    logs: multiprocessing.queues.Queue[logging.LogRecord] | None,
    options: dict[str, Any],
) -> None:
    """Serve ``name`` with ``respond`` (kind ``"sync"``), ``arespond`` (``"aio"``) or
    ``respond`` on asyncio (``"aio-sync"``) until ``stop`` is set."""
    _log_to(logs)
    if kind == "sync":
        with npipes.serve(name, respond=respond, **options):
            ready.set()
            stop.wait(4 * WAIT)
        return

    async def main() -> None:
        func = arespond if kind == "aio" else respond
        async with await npipes.aio.serve(name, respond=func, **options):
            ready.set()
            await asyncio.to_thread(stop.wait, 4 * WAIT)

    asyncio.run(main())


def client(name: str, count: int, tag: str, options: dict[str, Any]) -> None:
    """Make ``count`` requests of each kind and check every reply; exit 0 if all were right."""
    with npipes.connect(name, timeout=WAIT, **options) as conn:
        for n in range(count):
            assert request(conn, f"echo:{tag}-{n}") == f"{tag}-{n}"
            assert request(conn, f"bytes:{tag}-{n}") == f"{tag}-{n}".encode()
            assert request(conn, f"{tag}-{n}".encode()) == f"{tag}-{n}".encode()


def failing_client(name: str) -> None:
    """A failing request raises RemoteError; the next ones on the connection work."""
    with npipes.connect(name, timeout=WAIT) as conn:
        assert request(conn, "echo:before") == "before"
        error: npipes.RemoteError | None = None
        try:
            request(conn, "raise:from the child")
        except npipes.RemoteError as exc:
            error = exc
        assert error is not None, "no RemoteError"
        assert error.remote_type == "KeyError", error
        assert error.remote_message == "'from the child'", error
        assert request(conn, "echo:after") == "after"


def asker(name: str, messages: list[str], result: multiprocessing.queues.Queue[object]) -> None:
    """Request each of ``messages`` in turn; put each reply (or the error's type name)
    on ``result``."""
    with npipes.connect(name, timeout=WAIT) as conn:
        for message in messages:
            try:
                result.put(request(conn, message))
            except (npipes.NpipesError, OSError) as exc:
                result.put(type(exc).__name__)


def blocked_client(name: str, result: multiprocessing.queues.Queue[object]) -> None:
    """Send ``block``, then put its reply (or the error's type name) on ``result``,
    then what a next request gets."""
    asker(name, ["block", "echo:next"], result)
