"""Peer programs for tests/test_wait.py: module-level functions run by ``helpers.start``.

Each runs in a fresh (spawned) Python process; every blocking step has a timeout.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import npipes
from npipes._deadline import Deadline
from npipes._frame import encode_frame, frame_parts

if TYPE_CHECKING:
    import multiprocessing.synchronize

WAIT = 60.0
"""Seconds any single blocking step of a peer may take."""


def _connect(name: str) -> npipes.Connection:
    return npipes.connect(name, timeout=WAIT, wait_for_listener=True)


def message(peer: int, conn: int, seq: int) -> str:
    """The text of message ``seq`` on connection ``conn`` of peer process ``peer``."""
    return f"{peer}:{conn}:{seq}"


def many_clients(name: str, peer: int, conns: int, per_conn: int, seed: int) -> None:
    """Open ``conns`` connections, send ``per_conn`` numbered messages on each in a random
    order of connections, then close them all.

    Every fifth message goes out as two raw writes (header, then the rest), so the
    waiting side sees partial frames; the test must never report such a connection ready
    before its message is whole.
    """
    rng = random.Random(seed)
    connections = [_connect(name) for _ in range(conns)]
    try:
        order = [index for index in range(conns) for _ in range(per_conn)]
        rng.shuffle(order)
        sent = [0] * conns
        for count, index in enumerate(order):
            conn = connections[index]
            text = message(peer, index, sent[index])
            sent[index] += 1
            if count % 5 == 0:
                frame = encode_frame(text)
                conn._stream.send([frame[:3]], Deadline(WAIT))
                conn._stream.send([frame[3:]], Deadline(WAIT))
            else:
                conn.send(text, timeout=WAIT)
    finally:
        for conn in connections:
            conn.close()


def send_batch_and_hold(
    name: str, messages: list[str], done: multiprocessing.synchronize.Event
) -> None:
    """Send ``messages`` in one write (``send_many``), then stay connected until ``done``."""
    with _connect(name) as conn:
        conn.send_many(messages, timeout=WAIT)
        done.wait(WAIT)


def partial_then_rest(
    name: str,
    payload: bytes,
    half_sent: multiprocessing.synchronize.Event,
    go: multiprocessing.synchronize.Event,
    done: multiprocessing.synchronize.Event,
) -> None:
    """Write a frame's header and half its payload, set ``half_sent``; after ``go``, the rest."""
    with _connect(name) as conn:
        header, body, _ = frame_parts(payload)
        half = len(payload) // 2
        conn._stream.send([header, memoryview(body)[:half]], Deadline(WAIT))
        half_sent.set()
        go.wait(WAIT)
        conn._stream.send([memoryview(body)[half:]], Deadline(WAIT))
        done.wait(WAIT)


def send_raw_and_hold(name: str, data: bytes, done: multiprocessing.synchronize.Event) -> None:
    """Write ``data`` as it is (not a frame: garbage to the reader), stay until ``done``."""
    with _connect(name) as conn:
        conn._stream.send([data], Deadline(WAIT))
        done.wait(WAIT)


def hold(name: str, done: multiprocessing.synchronize.Event) -> None:
    """Connect and send nothing until ``done``."""
    with _connect(name):
        done.wait(WAIT)


def send_and_hold(
    name: str,
    text: str,
    done: multiprocessing.synchronize.Event,
    sent: multiprocessing.synchronize.Event | None = None,
) -> None:
    """Connect, send ``text`` (then set ``sent``), stay connected until ``done``."""
    with _connect(name) as conn:
        conn.send(text, timeout=WAIT)
        if sent is not None:
            sent.set()
        done.wait(WAIT)


def send_after(
    name: str,
    text: str,
    go: multiprocessing.synchronize.Event,
    sent: multiprocessing.synchronize.Event,
    done: multiprocessing.synchronize.Event,
) -> None:
    """Connect; after ``go``, send ``text`` and set ``sent``; stay connected until ``done``."""
    with _connect(name) as conn:
        go.wait(WAIT)
        conn.send(text, timeout=WAIT)
        sent.set()
        done.wait(WAIT)


def many_then_last_sends(
    name: str,
    count: int,
    connected: multiprocessing.synchronize.Event,
    go: multiprocessing.synchronize.Event,
    done: multiprocessing.synchronize.Event,
) -> None:
    """Open ``count`` connections; after ``go``, send "last" on the last one only."""
    connections = [_connect(name) for _ in range(count)]
    try:
        connected.set()
        go.wait(WAIT)
        connections[-1].send("last", timeout=WAIT)
        done.wait(WAIT)
    finally:
        for conn in connections:
            conn.close()


# The docs recipe "one thread serving many clients with wait" (docs/api.md), as it is
# printed there; test_wait.py::test_recipe_one_thread_serves_many_clients runs it.
def serve_many(name: str, clients_to_serve: int) -> None:
    """Echo for many clients in one thread; return once ``clients_to_serve`` came and left."""
    with npipes.listen(name) as listener:
        clients: list[npipes.Connection] = []
        accepted = 0
        while accepted < clients_to_serve or clients:
            watched: list[npipes.Connection | npipes.Listener] = [*clients]
            if accepted < clients_to_serve:
                watched.append(listener)
            for ready in npipes.wait(watched):
                if isinstance(ready, npipes.Listener):
                    clients.append(ready.accept())
                    accepted += 1
                    continue
                try:  # recv() does not block: wait said a message (or the end) is in
                    ready.send(ready.recv(), timeout=5)
                except npipes.NpipesError:  # the client left, broke framing, or stopped reading
                    ready.close()
                    clients.remove(ready)
