"""Peer programs for the request/reply and reconnect tests (run by ``helpers.start``).

A small reply server of our own (the ``serve(respond=...)`` feature is tested
elsewhere): it answers every message with :func:`reply` of it, so a client can
tell its own reply from anyone else's. Each peer reports what it received on
a multiprocessing queue, and every blocking call has a timeout.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import npipes
from npipes._control import encode_error_reply

if TYPE_CHECKING:
    import multiprocessing.queues
    import multiprocessing.synchronize

    Events = multiprocessing.queues.Queue[tuple[Any, ...]]

WAIT = 60.0
"""Seconds any single blocking step of a peer may take."""

SLOW = 3.0
"""Seconds the reply to a message containing ``slow`` is held back."""


def reply(message: bytes | str) -> bytes | str:
    """The reply to ``message``: derived from it, so each caller can check it got its own."""
    if isinstance(message, str):
        return "re:" + message
    return b"re:" + message


def reply_server(
    name: str,
    events: Events,
    incarnation: int = 0,
    serve: int | None = None,
    die_before_reply: bool = False,
    answer: bool = True,
    authkey: bytes | None = None,
    crc: bool = False,
) -> None:
    """Listen on ``name`` and answer each message of one client with ``reply(message)``.

    A message containing ``slow`` is answered after :data:`SLOW` seconds, one
    containing ``fail`` with an error reply (as ``serve(respond=...)`` sends).

    Args:
        events: gets ``("ready", incarnation)`` once listening, ``("got",
            incarnation, message)`` for every message, ``("done", incarnation)``
            once this incarnation closed everything.
        serve: stop after this many messages (None: until the client closes):
            the listener is closed first (so a reconnecting client cannot reach
            this incarnation again), then the connection.
        die_before_reply: the last of ``serve`` messages gets no reply.
        answer: False: only receive (a send-based client), never reply.
        crc: listen with ``crc=True`` (CRC-32 on every reply, required on every request).
    """
    options: dict[str, Any] = {"crc": crc} if authkey is None else {"authkey": authkey, "crc": crc}
    listener = npipes.listen(name, **options)
    events.put(("ready", incarnation))
    conn = listener.accept(timeout=WAIT)
    count = 0
    try:
        while serve is None or count < serve:
            try:
                message = conn.recv(timeout=WAIT)
            except npipes.ConnectionClosedError:
                break
            count += 1
            events.put(("got", incarnation, message))
            if not answer or (die_before_reply and count == serve):
                continue
            text = message if isinstance(message, str) else message.decode("latin-1")
            if "slow" in text:
                time.sleep(SLOW)
            if "fail" in text:
                conn.send(encode_error_reply(ValueError(f"cannot do {message!r}")), timeout=WAIT)
            else:
                conn.send(reply(message), timeout=WAIT)
    finally:
        listener.close()
        conn.close()
        events.put(("done", incarnation))


def garbage_server(name: str, events: Events, stop: multiprocessing.synchronize.Event) -> None:
    """Send a client bytes that are not an npipes frame, then keep listening until ``stop``."""
    with npipes.listen(name, framing="raw") as listener:
        events.put(("ready", 0))
        with listener.accept(timeout=WAIT) as conn:
            conn.send(b"this is not an npipes frame header", timeout=WAIT)
            events.put(("sent", 0))
            stop.wait(WAIT)


def ipc_receiver(name: str, events: Events, incarnation: int, count: int, abrupt: bool) -> None:
    """``IPC(name).receive_message()`` ``count`` times, then exit (``abrupt``: with
    ``os._exit``, no close, as a crash would; the events are flushed first)."""
    from npipes.ipc import IPC

    ipc = IPC(name, timeout=WAIT)
    events.put(("ready", incarnation))
    for _ in range(count):
        events.put(("got", incarnation, ipc.receive_message()))
    events.put(("done", incarnation))
    if abrupt:
        events.close()
        events.join_thread()
        os._exit(0)
    ipc.close()
