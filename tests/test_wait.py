"""npipes.wait, Connection.poll and fileno (issue 12 §1), with real peer processes."""

from __future__ import annotations

import contextlib
import io
import sys
import threading
import time
from collections.abc import Iterator

import pytest

import npipes
from helpers import CTX, finish, start
from peers import die_mid_message, send_then_close
from wait_peers import (
    hold,
    many_clients,
    many_then_last_sends,
    message,
    partial_then_rest,
    send_after,
    send_and_hold,
    send_batch_and_hold,
    send_raw_and_hold,
    serve_many,
)

WAIT = 60.0


@pytest.fixture
def listener(pipe_name: str) -> Iterator[npipes.Listener]:
    with npipes.listen(pipe_name) as lst:
        yield lst


def _accept(listener: npipes.Listener) -> npipes.Connection:
    return listener.accept(timeout=WAIT)


# -- many objects ----------------------------------------------------------------


@pytest.mark.slow
def test_wait_over_100_connections_and_a_listener(listener: npipes.Listener) -> None:
    """4 processes x 25 connections, 6 messages each, in random order (some frames split
    in two writes): every message arrives exactly once, and every connection wait
    reports is really ready (recv(timeout=0) returns, or the peer's clean end)."""
    peers, conns_each, per_conn = 4, 25, 6
    procs = [
        start(many_clients, listener.name, peer, conns_each, per_conn, 1000 + peer)
        for peer in range(peers)
    ]
    open_conns: list[npipes.Connection] = []
    accepted = ended = 0
    seen: list[str] = []
    rounds = 0
    deadline = time.monotonic() + 4 * WAIT
    try:
        while ended < peers * conns_each:
            assert time.monotonic() < deadline, f"stuck: {accepted} accepted, {ended} ended"
            rounds += 1
            objects: list[npipes.Connection | npipes.Listener] = [*open_conns]
            if accepted < peers * conns_each:
                objects.append(listener)
            ready = npipes.wait(objects, timeout=WAIT)
            assert ready, "nothing became ready within the timeout"
            assert ready == [o for o in objects if o in ready], "not in input order"
            for obj in ready:
                if isinstance(obj, npipes.Listener):
                    open_conns.append(obj.accept(timeout=0))
                    accepted += 1
                    continue
                try:
                    seen.append(str(obj.recv(timeout=0)))
                except npipes.ConnectionClosedError as exc:
                    ended_by = exc
                else:
                    continue
                assert type(ended_by) is npipes.ConnectionClosedError, ended_by
                obj.close()
                open_conns.remove(obj)
                ended += 1
        assert len(open_conns) == 0
    finally:
        for conn in open_conns:
            conn.close()
        for proc in procs:
            finish(proc)
    assert all(proc.exitcode == 0 for proc in procs)
    expected = [
        message(peer, index, seq)
        for peer in range(peers)
        for index in range(conns_each)
        for seq in range(per_conn)
    ]
    assert len(seen) == len(expected)
    assert sorted(seen) == sorted(expected)
    # Per connection, in order: "peer:conn:seq" arrives by seq.
    for peer in range(peers):
        for index in range(conns_each):
            prefix = f"{peer}:{index}:"
            got = [int(s.rsplit(":", 1)[1]) for s in seen if s.startswith(prefix)]
            assert got == list(range(per_conn))


def test_wait_over_70_objects_finds_the_one_ready(listener: npipes.Listener) -> None:
    """70 connections and the listener (more than WaitForMultipleObjects' 64 handles on
    Windows): only the last connection gets a message, and wait returns just it."""
    count = 70
    connected, go, done = CTX.Event(), CTX.Event(), CTX.Event()
    proc = start(many_then_last_sends, listener.name, count, connected, go, done)
    conns = [_accept(listener) for _ in range(count)]
    try:
        assert connected.wait(WAIT)
        objects: list[npipes.Connection | npipes.Listener] = [listener, *conns]
        assert npipes.wait(objects, timeout=0.2) == []
        go.set()
        assert npipes.wait(objects, timeout=WAIT) == [conns[-1]]
        assert conns[-1].recv(timeout=0) == "last"
        assert npipes.wait(objects, timeout=0) == []
    finally:
        done.set()
        for conn in conns:
            conn.close()
        assert finish(proc) == 0


# -- what counts as ready ----------------------------------------------------------


def test_queued_message_is_ready_at_once(listener: npipes.Listener) -> None:
    """Messages decoded but not yet taken (left by recv_many) make wait return at once."""
    done = CTX.Event()
    proc = start(send_batch_and_hold, listener.name, ["one", "two", "three"], done)
    conn = _accept(listener)
    try:
        assert conn.poll(WAIT)
        assert conn.recv_many(1, timeout=0) == ["one"]
        start_time = time.monotonic()
        assert npipes.wait([listener, conn], timeout=WAIT) == [conn]
        assert time.monotonic() - start_time < WAIT / 2
        assert conn.poll()
        assert conn.recv(timeout=0) == "two"
        assert npipes.wait([conn], timeout=0) == [conn]
        assert conn.recv(timeout=0) == "three"
        assert not conn.poll()
        assert npipes.wait([conn], timeout=0) == []
    finally:
        done.set()
        conn.close()
        assert finish(proc) == 0


def test_partial_frame_is_not_ready_until_whole(listener: npipes.Listener) -> None:
    """Half a frame: poll is False and wait times out (the bytes stay queued); the rest
    arrives: poll is True and recv(timeout=0) returns the whole message."""
    payload = bytes(range(256)) * 40
    half_sent, go, done = CTX.Event(), CTX.Event(), CTX.Event()
    proc = start(partial_then_rest, listener.name, payload, half_sent, go, done)
    conn = _accept(listener)
    try:
        assert half_sent.wait(WAIT)
        assert not conn.poll(0.3)
        assert npipes.wait([conn], timeout=0.3) == []
        assert not conn.poll()
        go.set()
        assert conn.poll(WAIT)
        assert conn.recv(timeout=0) == payload
    finally:
        done.set()
        conn.close()
        assert finish(proc) == 0


def test_end_of_stream_is_ready(listener: npipes.Listener) -> None:
    proc = start(send_then_close, listener.name, ["bye"], 1)
    conn = _accept(listener)
    with conn:
        assert npipes.wait([conn], timeout=WAIT) == [conn]
        assert conn.recv(timeout=0) == "bye"
        assert npipes.wait([conn], timeout=WAIT) == [conn]
        assert conn.poll()
        with pytest.raises(npipes.ConnectionClosedError) as info:
            conn.recv(timeout=0)
        assert type(info.value) is npipes.ConnectionClosedError
        assert conn.poll()  # closed by the peer: recv raises at once
    assert finish(proc) == 0


def test_peer_dying_mid_message_is_ready(listener: npipes.Listener) -> None:
    """A torn frame then the end: ready, and recv raises IncompleteMessageError."""
    ready = CTX.Event()
    proc = start(die_mid_message, listener.name, 1000, 10, ready)
    conn = _accept(listener)
    try:
        assert ready.wait(WAIT)
        assert not conn.poll(0.2)
        proc.kill()
        assert npipes.wait([conn], timeout=WAIT) == [conn]
        with pytest.raises(npipes.IncompleteMessageError):
            conn.recv(timeout=0)
    finally:
        conn.close()
        finish(proc)


def test_framing_error_is_ready(listener: npipes.Listener) -> None:
    """Bytes that are not a frame: ready, and recv raises the ProtocolError."""
    done = CTX.Event()
    proc = start(send_raw_and_hold, listener.name, b"this is not an npipes frame", done)
    conn = _accept(listener)
    try:
        assert npipes.wait([conn], timeout=WAIT) == [conn]
        with pytest.raises(npipes.ProtocolError):
            conn.recv(timeout=0)
        assert conn.poll()  # broken: recv raises at once
        with pytest.raises(npipes.ConnectionClosedError):
            conn.recv(timeout=0)
    finally:
        done.set()
        conn.close()
        assert finish(proc) == 0


def test_closed_objects_are_ready(listener: npipes.Listener) -> None:
    """Closed here: ready (recv/accept raise at once), never an error from wait."""
    done = CTX.Event()
    proc = start(hold, listener.name, done)
    conn = _accept(listener)
    try:
        conn.close()
        assert npipes.wait([conn], timeout=WAIT) == [conn]
        assert conn.poll()
        with pytest.raises(npipes.ConnectionClosedError):
            conn.recv(timeout=0)
        listener.close()
        assert npipes.wait([listener, conn], timeout=0) == [listener, conn]
        with pytest.raises(npipes.ConnectionClosedError):
            listener.accept(timeout=0)
    finally:
        done.set()
        assert finish(proc) == 0


def test_close_from_another_thread_wakes_wait(listener: npipes.Listener) -> None:
    """close() of a watched connection or listener from another thread ends the wait
    (POSIX: it once slept on, an epoll set dropping the event of the closed socket)."""
    done = CTX.Event()
    proc = start(hold, listener.name, done)
    conn = _accept(listener)
    try:
        for target in (conn, listener):
            timer = threading.Timer(0.2, target.close)
            timer.start()
            begun = time.monotonic()
            try:
                assert npipes.wait([target], timeout=WAIT) == [target]
            finally:
                timer.join()
            assert time.monotonic() - begun < WAIT / 3, "woken by the timeout, not the close"
    finally:
        done.set()
        conn.close()
        assert finish(proc) == 0


# -- listeners ---------------------------------------------------------------------


def test_listener_client_is_kept_for_accept(listener: npipes.Listener) -> None:
    """A wait that times out leaves the listener listening; a client reported by wait
    is returned by a later accept (Windows: the wait's ConnectNamedPipe keeps it)."""
    assert npipes.wait([listener], timeout=0.2) == []
    done = CTX.Event()
    proc = start(send_and_hold, listener.name, "hello", done)
    try:
        assert npipes.wait([listener], timeout=WAIT) == [listener]
        assert npipes.wait([listener], timeout=0) == [listener]  # still there
        with listener.accept(timeout=0) as conn:
            assert conn.recv(timeout=WAIT) == "hello"
        assert npipes.wait([listener], timeout=0.2) == []
    finally:
        done.set()
        assert finish(proc) == 0


def test_listener_client_found_by_a_zero_timeout(listener: npipes.Listener) -> None:
    """wait(timeout=0) sees a client that connected while nobody waited (Windows: to the
    listening instance, with no ConnectNamedPipe running), and accept returns it."""
    done, sent = CTX.Event(), CTX.Event()
    proc = start(send_and_hold, listener.name, "early", done, sent)
    try:
        assert sent.wait(WAIT)
        assert npipes.wait([listener], timeout=0) == [listener]
        with listener.accept(timeout=0) as conn:
            assert conn.recv(timeout=WAIT) == "early"
    finally:
        done.set()
        assert finish(proc) == 0


def test_same_object_twice(listener: npipes.Listener) -> None:
    """An object listed twice is watched once and reported at both places."""
    done, sent = CTX.Event(), CTX.Event()
    proc = start(send_and_hold, listener.name, "twice", done, sent)
    try:
        assert npipes.wait([listener, listener], timeout=WAIT) == [listener, listener]
        with listener.accept(timeout=0) as conn:
            assert npipes.wait([conn, listener, conn], timeout=WAIT) == [conn, conn]
            assert conn.recv(timeout=0) == "twice"
            assert npipes.wait([conn, listener, conn], timeout=0.2) == []
    finally:
        done.set()
        assert finish(proc) == 0


# -- time ----------------------------------------------------------------------------


def test_wait_timeout_returns_empty_in_time(listener: npipes.Listener) -> None:
    done = CTX.Event()
    proc = start(hold, listener.name, done)
    conn = _accept(listener)
    try:
        for timeout in (0, 0.5):
            begun = time.monotonic()
            assert npipes.wait([listener, conn], timeout=timeout) == []
            took = time.monotonic() - begun
            assert timeout <= took < timeout + 10
        assert not conn.poll()
        assert not conn.poll(0.1)
    finally:
        done.set()
        conn.close()
        assert finish(proc) == 0


def test_busy_connection_does_not_block_others(listener: npipes.Listener) -> None:
    """A connection another thread is receiving on is skipped, not waited for: a
    message on another connection is still reported."""
    done = CTX.Event()
    procs = [start(hold, listener.name, done), start(send_and_hold, listener.name, "x", done)]
    first, second = _accept(listener), _accept(listener)
    received: list[object] = []

    def receive(conn: npipes.Connection) -> None:
        with contextlib.suppress(npipes.ConnectionClosedError):
            received.append(conn.recv(timeout=WAIT))

    busy, other = (first, second) if first.peer.pid == procs[0].pid else (second, first)
    thread = threading.Thread(target=receive, args=(busy,))
    thread.start()
    try:
        assert npipes.wait([busy, other], timeout=WAIT) == [other]
        assert other.recv(timeout=0) == "x"
    finally:
        busy.close()
        thread.join(WAIT)
        other.close()
        done.set()
        for proc in procs:
            assert finish(proc) == 0


def test_recipe_one_thread_serves_many_clients(pipe_name: str) -> None:
    """The docs recipe (wait_peers.serve_many) in its own process: 20 clients at once,
    each gets its own echo, and the server returns once all have left."""
    server = start(serve_many, pipe_name, 20)
    conns = [npipes.connect(pipe_name, timeout=WAIT, wait_for_listener=True) for _ in range(20)]
    try:
        for number, conn in enumerate(conns):
            conn.send(f"client {number}", timeout=WAIT)
        for number, conn in enumerate(conns):
            assert conn.recv(timeout=WAIT) == f"client {number}"
            conn.send("again", timeout=WAIT)
            assert conn.recv(timeout=WAIT) == "again"
    finally:
        for conn in conns:
            conn.close()
    assert finish(server) == 0


def test_two_threads_wait_on_one_connection(listener: npipes.Listener) -> None:
    """Waits in two threads on the same connection both see the message (Windows: one
    zero-byte read at a time; the other thread looks again)."""
    done, go = CTX.Event(), CTX.Event()
    sent = CTX.Event()
    proc = start(send_after, listener.name, "both", go, sent, done)
    conn = _accept(listener)
    results: list[list[npipes.Connection]] = []
    threads = [
        threading.Thread(target=lambda: results.append(npipes.wait([conn], timeout=WAIT)))
        for _ in range(2)
    ]
    try:
        for thread in threads:
            thread.start()
        go.set()
        for thread in threads:
            thread.join(WAIT)
        assert results == [[conn], [conn]]
        assert conn.recv(timeout=0) == "both"
    finally:
        done.set()
        conn.close()
        assert finish(proc) == 0


# -- types and fileno ----------------------------------------------------------------


def test_wait_refuses_other_objects(listener: npipes.Listener) -> None:
    with pytest.raises(TypeError, match=r"Connection and npipes\.Listener"):
        npipes.wait([listener, 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"Connection and npipes\.Listener"):
        npipes.wait([io.BytesIO()])  # type: ignore[list-item]
    assert npipes.wait([], timeout=0) == []
    assert npipes.wait([], timeout=None) == []  # nothing can become ready: no endless sleep


@pytest.mark.posix
def test_fileno_with_selectors(listener: npipes.Listener) -> None:
    """fileno() works with selectors: the listener's is readable when a client is
    queued, the connection's when bytes arrived (poll says whether a message is whole)."""
    import selectors

    done = CTX.Event()
    proc = start(send_and_hold, listener.name, "over selectors", done)
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(listener.fileno(), selectors.EVENT_READ, listener)
            events = sel.select(WAIT)
            assert [key.data for key, _ in events] == [listener]
            conn = listener.accept(timeout=0)
            with conn:
                sel.register(conn.fileno(), selectors.EVENT_READ, conn)
                sel.unregister(listener.fileno())
                events = sel.select(WAIT)
                assert [key.data for key, _ in events] == [conn]
                assert conn.poll()
                assert conn.recv(timeout=0) == "over selectors"
            with pytest.raises(npipes.ConnectionClosedError):
                conn.fileno()
        listener.close()
        with pytest.raises(npipes.ConnectionClosedError):
            listener.fileno()
    finally:
        done.set()
        assert finish(proc) == 0


@pytest.mark.posix
def test_fifo_connection_is_refused(pipe_name: str) -> None:
    """A FIFO reader has no pollable stream: a TypeError naming FIFOs, and no fileno."""
    import npipes.fifo

    with npipes.fifo.open_reader(pipe_name) as reader:
        with pytest.raises(TypeError, match="FIFO"):
            npipes.wait([reader])
        with pytest.raises(io.UnsupportedOperation):
            reader.fileno()


@pytest.mark.windows
def test_fileno_unsupported_on_windows(listener: npipes.Listener) -> None:
    with pytest.raises(io.UnsupportedOperation, match=r"npipes\.wait"):
        listener.fileno()
    with (
        npipes.connect(listener.name, timeout=WAIT) as conn,
        pytest.raises(io.UnsupportedOperation, match=r"npipes\.wait"),
    ):
        conn.fileno()


def test_exported() -> None:
    assert npipes.wait is sys.modules["npipes._wait"].wait
    assert "wait" in npipes.__all__
