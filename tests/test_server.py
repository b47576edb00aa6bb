"""npipes.serve, the sync server: serving client processes, the max_connections bound,
handler errors, close() with clients connected, the context manager, serve_forever and
Ctrl+C."""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

import aiopeers
import npipes
from helpers import finish, start
from npipes import ConnectionClosedError, PipeBusyError, PipeNotFoundError

WAIT = 30.0


def echo(conn: npipes.Connection) -> None:
    for message in conn:
        conn.send(message, timeout=WAIT)


def test_echo_server_serves_several_client_processes(pipe_name: str) -> None:
    clients, count = 4, 40
    with npipes.serve(pipe_name, echo, crc=True) as server:
        assert server.listener.crc
        procs = [start(aiopeers.sync_echo_client, pipe_name, n, count) for n in range(clients)]
        codes = [finish(proc) for proc in procs]
    assert codes == [0] * clients


def test_max_connections_bounds_concurrent_handlers(pipe_name: str) -> None:
    lock = threading.Lock()
    running = peak = 0
    entered: queue.Queue[str] = queue.Queue()

    def handler(conn: npipes.Connection) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            first = str(conn.recv(timeout=WAIT))
            entered.put(first)
            for message in conn:
                if message == "bye":
                    return
                conn.send(f"{first}:{message}", timeout=WAIT)
        finally:
            with lock:
                running -= 1

    with npipes.serve(pipe_name, handler, max_connections=2) as server:
        clients = []
        try:
            for n in range(3):
                client = npipes.connect(pipe_name, timeout=WAIT)  # the OS queues the third
                clients.append(client)
                client.send(f"c{n}", timeout=WAIT)
            assert {entered.get(timeout=WAIT), entered.get(timeout=WAIT)} == {"c0", "c1"}
            # A round trip through a running handler: the acceptor has had every chance to
            # start a third handler, and has not.
            clients[0].send("ping", timeout=WAIT)
            assert clients[0].recv(timeout=WAIT) == "c0:ping"
            assert entered.empty()
            assert server.active == 2
            with lock:
                assert (running, peak) == (2, 2)

            clients[0].send("bye", timeout=WAIT)  # frees a slot
            assert entered.get(timeout=WAIT) == "c2"
            clients[2].send("ping", timeout=WAIT)
            assert clients[2].recv(timeout=WAIT) == "c2:ping"
            clients[1].send("ping", timeout=WAIT)
            assert clients[1].recv(timeout=WAIT) == "c1:ping"
        finally:
            for client in clients:
                client.close()
    assert peak == 2


def test_handler_error_is_logged_and_serving_continues(
    pipe_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    def handler(conn: npipes.Connection) -> None:
        message = conn.recv(timeout=WAIT)
        if message == "fail":
            raise ValueError("handler bug")
        conn.send(f"ok:{message}", timeout=WAIT)

    # One handler at a time: the second client is served only after the first
    # handler has finished, its error logged.
    with (
        caplog.at_level(logging.ERROR, logger="npipes.server"),
        npipes.serve(pipe_name, handler, max_connections=1) as server,
    ):
        with npipes.connect(pipe_name, timeout=WAIT) as first:
            first.send("fail", timeout=WAIT)
            with pytest.raises(ConnectionClosedError):
                first.recv(timeout=WAIT)
        with npipes.connect(pipe_name, timeout=WAIT) as second:
            second.send("hello", timeout=WAIT)
            assert second.recv(timeout=WAIT) == "ok:hello"
        assert not server.listener.closed
    failures = [r for r in caplog.records if r.name == "npipes.server"]
    assert len(failures) == 1
    assert failures[0].levelno == logging.ERROR
    assert failures[0].exc_info is not None
    assert failures[0].exc_info[0] is ValueError
    assert server.address in failures[0].getMessage()


def test_a_client_leaving_is_not_logged(pipe_name: str, caplog: pytest.LogCaptureFixture) -> None:
    def handler(conn: npipes.Connection) -> None:
        while True:  # no for loop: recv raises ConnectionClosedError when the client leaves
            conn.send(conn.recv(timeout=WAIT), timeout=WAIT)

    with (
        caplog.at_level(logging.ERROR, logger="npipes.server"),
        npipes.serve(pipe_name, handler, max_connections=1),
    ):
        for _ in range(2):  # the second is served after the first handler ended
            with npipes.connect(pipe_name, timeout=WAIT) as client:
                client.send("ping", timeout=WAIT)
                assert client.recv(timeout=WAIT) == "ping"
    assert [r.getMessage() for r in caplog.records if r.name == "npipes.server"] == []


def test_close_waits_for_running_handlers(pipe_name: str) -> None:
    entered, proceed = threading.Event(), threading.Event()
    finished_handlers: list[str] = []

    def handler(conn: npipes.Connection) -> None:
        request = conn.recv(timeout=WAIT)
        entered.set()
        assert proceed.wait(WAIT)
        conn.send(f"re:{request}", timeout=WAIT)
        finished_handlers.append(str(request))

    server = npipes.serve(pipe_name, handler)
    with npipes.connect(pipe_name, timeout=WAIT) as client:
        client.send("req", timeout=WAIT)
        assert entered.wait(WAIT)
        closer = threading.Thread(target=server.close, kwargs={"timeout": WAIT})
        closer.start()
        closer.join(0.3)
        assert closer.is_alive(), "close() returned while a handler was still running"
        assert server.listener.closed  # no new clients while it waits
        with pytest.raises((PipeNotFoundError, PipeBusyError)):
            npipes.connect(pipe_name, timeout=0.3)
        proceed.set()
        began = time.monotonic()
        closer.join(WAIT)
        assert not closer.is_alive()
        assert time.monotonic() - began < WAIT / 2
        assert finished_handlers == ["req"]
        assert client.recv(timeout=WAIT) == "re:req"
        with pytest.raises(ConnectionClosedError):
            client.recv(timeout=WAIT)


def test_close_after_its_deadline_closes_blocked_handlers(pipe_name: str) -> None:
    clients = 2
    entered: queue.Queue[None] = queue.Queue()
    ended: queue.Queue[str] = queue.Queue()

    def handler(conn: npipes.Connection) -> None:
        entered.put(None)
        try:
            conn.recv()  # the clients never send: only close() ends this
        except ConnectionClosedError as exc:
            ended.put(type(exc).__name__)
            raise

    server = npipes.serve(pipe_name, handler)
    connections = [npipes.connect(pipe_name, timeout=WAIT) for _ in range(clients)]
    try:
        for _ in range(clients):
            entered.get(timeout=WAIT)
        began = time.monotonic()
        server.close(timeout=0.3)  # one deadline for all handlers, not 0.3 s each
        took = time.monotonic() - began
        assert (
            sorted(ended.get(timeout=WAIT) for _ in range(clients))
            == ["ConnectionClosedError"] * clients
        )
        assert 0.25 <= took < 3
        assert server.active == 0
        for client in connections:
            with pytest.raises(ConnectionClosedError):
                client.recv(timeout=WAIT)
        server.close()  # idempotent
    finally:
        for client in connections:
            client.close()


def _acceptor_waits_for_a_slot(server: npipes.Server) -> bool:
    frame = sys._current_frames().get(server._acceptor.ident or 0)
    while frame is not None:
        if frame.f_code.co_name == "acquire":
            return True
        frame = frame.f_back
    return False


def test_close_with_every_slot_busy_is_still_bounded(pipe_name: str) -> None:
    entered = threading.Event()

    def handler(conn: npipes.Connection) -> None:
        entered.set()
        conn.recv()  # only close() ends this

    server = npipes.serve(pipe_name, handler, max_connections=1)
    client = npipes.connect(pipe_name, timeout=WAIT)
    closer = threading.Thread(target=server.close, kwargs={"timeout": 0.3})
    try:
        assert entered.wait(WAIT)
        deadline = time.monotonic() + WAIT
        while not _acceptor_waits_for_a_slot(server):
            assert time.monotonic() < deadline
            time.sleep(0.001)  # polls a condition; orders nothing by itself
        closer.start()
        closer.join(1.5)
        assert not closer.is_alive(), "close(timeout=0.3) still running after 1.5 s"
    finally:
        client.close()  # the handler ends, and so does a hung close()
        if closer.is_alive():
            closer.join(WAIT)
        server.close()


def test_context_manager_closes_the_server(pipe_name: str) -> None:
    with npipes.serve(pipe_name, echo) as server:
        address = server.address
        assert address == server.listener.address
        if sys.platform != "win32":
            assert os.path.exists(address)
        with npipes.connect(pipe_name, timeout=WAIT) as client:
            client.send(b"x", timeout=WAIT)
            assert client.recv(timeout=WAIT) == b"x"
    assert server.listener.closed
    if sys.platform != "win32":
        assert not os.path.lexists(address)
    with pytest.raises(PipeNotFoundError):
        npipes.connect(pipe_name, timeout=5)


def test_serve_forever_returns_after_close_from_another_thread(pipe_name: str) -> None:
    server = npipes.serve(pipe_name, echo)
    forever = threading.Thread(target=server.serve_forever)
    forever.start()
    try:
        with npipes.connect(pipe_name, timeout=WAIT) as client:
            client.send("x", timeout=WAIT)
            assert client.recv(timeout=WAIT) == "x"
        assert forever.is_alive()
    finally:
        began = time.monotonic()
        server.close()
        forever.join(WAIT)
    assert not forever.is_alive()
    assert time.monotonic() - began < 5


def test_serve_rejects_max_connections_below_one(pipe_name: str) -> None:
    with pytest.raises(ValueError, match="max_connections"):
        npipes.serve(pipe_name, echo, max_connections=0)
    with pytest.raises(PipeNotFoundError):
        npipes.connect(pipe_name, timeout=5)  # nothing was left listening


CTRL_C_SCRIPT = """
import sys, threading, time, npipes

server = npipes.serve(sys.argv[1], lambda conn: None)
main = threading.main_thread()


def announce():
    # "ready" only once the main thread waits inside serve_forever, so that the
    # signal lands there and not before it.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(main.ident)
        while frame is not None:
            if frame.f_code.co_name == "serve_forever":
                print(server.address, flush=True)
                return
            frame = frame.f_back
        time.sleep(0.001)  # polls a condition


threading.Thread(target=announce, daemon=True).start()
try:
    server.serve_forever()
except KeyboardInterrupt:
    print("interrupted", flush=True)
    raise SystemExit(3)
"""


@pytest.mark.posix
def test_ctrl_c_stops_serve_forever_and_removes_the_socket(pipe_name: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_SCRIPT, pipe_name],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert os.path.exists(address)
        began = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=10) == 3
        assert time.monotonic() - began < 5
        assert proc.stdout.read().strip() == "interrupted"
        assert not os.path.lexists(address)
        assert not os.path.lexists(address + ".lock")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
