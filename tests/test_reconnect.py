"""``connect(name, reconnect=True)``, sync and asyncio, against servers in other processes
that go away and come back."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from typing import Any

import pytest

import npipes
import npipes.aio
import reconnect_peers
from helpers import CTX, finish, start

WAIT = 60.0
RESTARTS = 5


def _event(events: Any, kind: str, timeout: float = WAIT) -> tuple[Any, ...]:
    """The next event of ``kind`` from a peer's queue; ``got`` events are kept in ``events.got``."""
    while True:
        try:
            event: tuple[Any, ...] = events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no {kind!r} event from the peer in {timeout} s") from None
        if event[0] == "got":
            events.got.append(event)
        if event[0] == kind:
            return event


class Incarnations:
    """Server incarnations run one after another on one name (``reply_server``)."""

    def __init__(self, name: str, **options: Any) -> None:
        self.name = name
        self.options = options
        self.events: Any = CTX.Queue()
        self.events.got = []
        self.procs: list[Any] = []

    def start(self, incarnation: int, *, wait_ready: bool = True, **options: Any) -> None:
        merged = {**self.options, **options}
        proc = start(
            reconnect_peers.reply_server,
            self.name,
            self.events,
            incarnation,
            merged.get("serve"),
            merged.get("die_before_reply", False),
            merged.get("answer", True),
            merged.get("authkey"),
        )
        self.procs.append(proc)
        if wait_ready:
            _event(self.events, "ready")

    def wait_done(self) -> None:
        """Wait until the newest incarnation closed everything and exited."""
        _event(self.events, "done")
        assert finish(self.procs[-1]) == 0

    def received(self) -> list[bytes | str]:
        return [event[2] for event in self.events.got]


def _restarter(servers: Incarnations, errors: list[BaseException]) -> threading.Thread:
    """A thread that starts incarnation i+1 as soon as incarnation i is done (request tests)."""

    def run() -> None:
        try:
            for incarnation in range(1, RESTARTS + 1):
                servers.wait_done()
                last = incarnation == RESTARTS
                servers.start(incarnation, wait_ready=False, serve=None if last else 10)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _check_all_received(servers: Incarnations, sent: list[bytes | str]) -> None:
    received = servers.received()
    missing = [m for m in sent if m not in received]
    assert not missing, missing
    assert set(received) <= set(sent)  # at-least-once: a resent request may come twice


# -- request-based: end to end ------------------------------------------------------


def test_requests_survive_5_server_restarts(
    pipe_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Incarnations 0-4 each take 10 requests and go away (1-4 without answering
    the last); every request gets its own reply, from some incarnation."""
    caplog.set_level(logging.INFO, logger="npipes")
    servers = Incarnations(pipe_name)
    servers.start(0, serve=10)
    errors: list[BaseException] = []
    sent: list[bytes | str] = []
    with npipes.connect(pipe_name, timeout=WAIT, reconnect=True) as conn:
        restarter = _restarter(servers, errors)
        # Incarnations 1-4 die without answering their last request (0 answers it).
        servers.options["die_before_reply"] = True
        for seq in range(70):
            message: bytes | str = f"request {seq}" if seq % 2 else f"request {seq}".encode()
            sent.append(message)
            assert conn.request(message, timeout=WAIT) == reconnect_peers.reply(message)
        restarter.join(WAIT)
        assert not errors, errors
        assert conn.reconnects == RESTARTS
    servers.wait_done()
    _check_all_received(servers, sent)
    records = [r for r in caplog.records if r.name == "npipes" and "reconnect" in r.getMessage()]
    assert [r.levelno for r in records] == [logging.INFO] * RESTARTS
    assert pipe_name in records[0].getMessage()
    assert conn.address in records[0].getMessage()
    assert records[-1].getMessage().endswith(f"reconnect number {RESTARTS}")


def test_aio_requests_survive_5_server_restarts(
    pipe_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="npipes")
    servers = Incarnations(pipe_name, die_before_reply=True)
    servers.start(0, serve=10)
    errors: list[BaseException] = []
    sent: list[bytes | str] = []

    async def main() -> int:
        async with await npipes.aio.connect(pipe_name, timeout=WAIT, reconnect=True) as conn:
            restarter = _restarter(servers, errors)
            for seq in range(70):
                message = f"aio request {seq}".encode()
                sent.append(message)
                assert await conn.request(message, timeout=WAIT) == reconnect_peers.reply(message)
            await asyncio.get_running_loop().run_in_executor(None, restarter.join, WAIT)
            return conn.reconnects

    assert asyncio.run(main()) == RESTARTS
    assert not errors, errors
    servers.wait_done()
    _check_all_received(servers, sent)
    # Each reconnect is logged at INFO on the npipes logger, as in the sync front end.
    records = [
        r for r in caplog.records if r.name == "npipes" and "reconnected to" in r.getMessage()
    ]
    assert len(records) == RESTARTS
    assert all(r.levelno == logging.INFO for r in records)


# -- send-based: the server drains what was sent before it goes away -----------------


def test_sends_survive_5_server_restarts(pipe_name: str) -> None:
    """Each incarnation takes 10 messages and goes away; the next batch's first send
    finds the old peer gone, reconnects (waiting for the new incarnation) and is sent
    again. Every message arrives exactly once."""
    servers = Incarnations(pipe_name, serve=10, answer=False)
    servers.start(0)
    sent: list[bytes | str] = []
    with npipes.connect(pipe_name, timeout=WAIT, reconnect=True) as conn:
        for incarnation in range(RESTARTS + 1):
            if incarnation:
                servers.wait_done()  # drained and gone: nothing sent is lost with it
                servers.start(incarnation, wait_ready=False)
            batch = [f"{incarnation}:{n}".encode() for n in range(10)]
            for message in batch[:5]:
                conn.send(message, timeout=WAIT)
            conn.send_many(batch[5:], timeout=WAIT)
            sent += batch
        assert conn.reconnects == RESTARTS
        servers.wait_done()
    assert sorted(servers.received()) == sorted(sent)  # exactly once each


def test_aio_sends_survive_5_server_restarts(pipe_name: str) -> None:
    servers = Incarnations(pipe_name, serve=10, answer=False)
    servers.start(0)
    sent: list[bytes | str] = []

    async def main() -> int:
        loop = asyncio.get_running_loop()
        async with await npipes.aio.connect(pipe_name, timeout=WAIT, reconnect=True) as conn:
            for incarnation in range(RESTARTS + 1):
                if incarnation:
                    await loop.run_in_executor(None, servers.wait_done)
                    servers.start(incarnation, wait_ready=False)
                batch = [f"{incarnation}:{n}" for n in range(10)]
                for message in batch[:5]:
                    await conn.send(message, timeout=WAIT)
                await conn.send_many(batch[5:], timeout=WAIT)
                sent.extend(batch)
            await loop.run_in_executor(None, servers.wait_done)
            return conn.reconnects

    assert asyncio.run(main()) == RESTARTS
    assert sorted(servers.received()) == sorted(sent)  # type: ignore[type-var]


# -- what never reconnects -------------------------------------------------------------


def test_recv_reconnects_and_a_concurrent_send_does_not_reconnect_twice(pipe_name: str) -> None:
    """One thread blocked in recv and another sending when the peer goes away: both
    calls go through the reconnect, which happens once."""
    servers = Incarnations(pipe_name)
    servers.start(0, serve=1, answer=False)  # goes away after its first message
    with npipes.connect(pipe_name, timeout=WAIT, reconnect=True) as conn:
        got: list[bytes | str] = []
        reader = threading.Thread(target=lambda: got.append(conn.recv(timeout=WAIT)))
        reader.start()
        conn.send(b"go away", timeout=WAIT)
        servers.wait_done()  # the reader saw the end; it now waits for a listener
        servers.start(1, wait_ready=False)
        conn.send(b"hello", timeout=WAIT)  # the old stream is dead: joins that reconnect
        reader.join(WAIT)
        assert got == [b"re:hello"]
        assert conn.reconnects == 1
    servers.wait_done()


def test_reconnect_runs_the_authkey_handshake_again(pipe_name: str) -> None:
    key = b"secret key"
    servers = Incarnations(pipe_name, authkey=key, serve=1)
    servers.start(0)
    with npipes.connect(pipe_name, timeout=WAIT, reconnect=True, authkey=key) as conn:
        assert conn.request(b"one", timeout=WAIT) == b"re:one"
        servers.wait_done()
        servers.start(1, wait_ready=False, serve=None)
        assert conn.request(b"two", timeout=WAIT) == b"re:two"
        assert conn.reconnects == 1
    servers.wait_done()


def test_no_reconnect_after_local_close(pipe_name: str) -> None:
    servers = Incarnations(pipe_name)
    servers.start(0)
    conn = npipes.connect(pipe_name, timeout=WAIT, reconnect=True)
    assert conn.request(b"a", timeout=WAIT) == b"re:a"
    conn.close()
    with pytest.raises(npipes.ConnectionClosedError):
        conn.send(b"b", timeout=WAIT)
    with pytest.raises(npipes.ConnectionClosedError):
        conn.recv(timeout=WAIT)
    with pytest.raises(npipes.ConnectionClosedError):
        conn.request(b"c", timeout=WAIT)
    assert conn.reconnects == 0
    servers.wait_done()  # the server saw its only client leave
    assert servers.received() == [b"a"]


def test_no_reconnect_on_a_protocol_error(pipe_name: str) -> None:
    events = CTX.Queue()
    stop = CTX.Event()
    proc = start(reconnect_peers.garbage_server, pipe_name, events, stop)
    try:
        assert events.get(timeout=WAIT)[0] == "ready"
        with npipes.connect(pipe_name, timeout=WAIT, reconnect=True) as conn:
            with pytest.raises(npipes.ProtocolError):
                conn.recv(timeout=WAIT)
            # The listener is still there, but a broken stream is not "peer gone".
            with pytest.raises(npipes.ConnectionClosedError):
                conn.send(b"x", timeout=WAIT)
            with pytest.raises(npipes.ConnectionClosedError):
                conn.recv(timeout=WAIT)
            assert conn.reconnects == 0
    finally:
        stop.set()
    assert finish(proc) == 0


def test_timeout_does_not_reconnect_and_reconnect_waits_only_its_timeout(pipe_name: str) -> None:
    servers = Incarnations(pipe_name, serve=1)
    servers.start(0)
    with npipes.connect(pipe_name, timeout=WAIT, reconnect=True) as conn:
        with pytest.raises(npipes.PipeTimeoutError):
            conn.recv(timeout=0.2)  # nothing to receive: a timeout, not a reconnect
        assert conn.request(b"one", timeout=WAIT) == b"re:one"
        servers.wait_done()  # gone, and nobody comes back
        with pytest.raises(npipes.PipeTimeoutError, match="no listener came back"):
            conn.request(b"two", timeout=0.5)
        assert conn.reconnects == 0
        servers.start(1, serve=None)
        assert conn.request(b"three", timeout=WAIT) == b"re:three"
        assert conn.reconnects == 1
    servers.wait_done()


def test_aio_no_reconnect_after_aclose(pipe_name: str) -> None:
    servers = Incarnations(pipe_name)
    servers.start(0)

    async def main() -> None:
        conn = await npipes.aio.connect(pipe_name, timeout=WAIT, reconnect=True)
        assert await conn.request(b"a", timeout=WAIT) == b"re:a"
        await conn.aclose()
        with pytest.raises(npipes.ConnectionClosedError):
            await conn.send(b"b", timeout=WAIT)
        with pytest.raises(npipes.ConnectionClosedError):
            await conn.request(b"c", timeout=WAIT)
        assert conn.reconnects == 0

    asyncio.run(main())
    servers.wait_done()


# -- the IPC facade ------------------------------------------------------------------


@pytest.mark.parametrize("abrupt", [False, True], ids=["receiver-exits", "receiver-crashes"])
def test_ipc_sender_keeps_working_across_receiver_restarts(
    pipe_name: str, abrupt: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A long-running IPC sender and a receiver that restarts 5 times (taking 10 messages
    each): every send_message returns, every message reached some receiver, and each
    new peer is counted in ``IPC.reconnects`` and logged at INFO, as with
    ``connect(reconnect=True)``."""
    from npipes.ipc import IPC

    events: Any = CTX.Queue()
    events.got = []
    restarts = 5
    caplog.set_level(logging.INFO, logger="npipes")
    procs = [start(reconnect_peers.ipc_receiver, pipe_name, events, 0, 10, abrupt)]
    _event(events, "ready")  # the first receiver listens; the sender connects to it
    errors: list[BaseException] = []

    def restarter() -> None:
        try:
            for incarnation in range(1, restarts + 1):
                _event(events, "done")
                assert finish(procs[-1]) == 0
                procs.append(
                    start(reconnect_peers.ipc_receiver, pipe_name, events, incarnation, 10, abrupt)
                )
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=restarter, daemon=True)
    thread.start()
    sent = [f"message {n}" for n in range(10 * (restarts + 1))]
    with IPC(pipe_name, timeout=WAIT) as ipc:
        assert ipc.reconnects == 0
        for message in sent:
            ipc.send_message(message)
        thread.join(WAIT)
        assert not errors, errors
        _event(events, "done")
        # At least one new peer per restart (more if the sender met a receiver that was
        # already leaving: that is a reconnect too), and one INFO record each.
        assert ipc.reconnects >= restarts
        logged = [r for r in caplog.records if "met a new peer" in r.getMessage()]
        assert len(logged) == ipc.reconnects
        assert all(r.levelno == logging.INFO for r in logged)
    assert finish(procs[-1]) == 0
    received = [event[2] for event in events.got]
    assert sorted(received) == sorted(sent)  # acknowledged: each taken exactly once


def test_reconnect_forgets_replies_owed_by_the_old_peer(pipe_name: str) -> None:
    """A request that timed out on the old connection owes no reply on the new one."""
    servers = Incarnations(pipe_name, serve=1)
    servers.start(0)
    with npipes.connect(pipe_name, timeout=WAIT, reconnect=True) as conn:
        with pytest.raises(npipes.PipeTimeoutError):
            conn.request(b"slow, then gone", timeout=0.3)
        servers.wait_done()  # it answered late, then went away
        servers.start(1, serve=None)
        assert conn.request(b"mine", timeout=WAIT) == b"re:mine"
        assert conn.reconnects == 1
    servers.wait_done()


def test_close_from_another_thread_ends_a_reconnect_wait(pipe_name: str) -> None:
    servers = Incarnations(pipe_name, serve=1, answer=False)
    servers.start(0)
    conn = npipes.connect(pipe_name, timeout=WAIT, reconnect=True)
    outcome: list[BaseException] = []

    def receive() -> None:
        try:
            conn.recv()  # no timeout: waits for a listener that never comes back
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome.append(exc)

    reader = threading.Thread(target=receive)
    reader.start()
    conn.send(b"go away", timeout=WAIT)
    servers.wait_done()
    conn.close()
    reader.join(WAIT)
    assert not reader.is_alive()
    assert len(outcome) == 1
    assert type(outcome[0]) is npipes.ConnectionClosedError
    assert conn.reconnects == 0


def test_send_timeout_mid_frame_does_not_reconnect(pipe_name: str) -> None:
    """A request torn by its timeout closes the connection for good, even with a listener."""
    with npipes.listen(pipe_name, max_message_size=None) as listener:
        conn = npipes.connect(pipe_name, timeout=WAIT, reconnect=True, max_message_size=None)
        with conn, listener.accept(timeout=WAIT):  # the server never reads
            with pytest.raises(npipes.PipeTimeoutError) as info:
                conn.request(b"x" * (64 << 20), timeout=0.5)
            assert conn.closed == info.value.partial  # a torn frame closes it
            if info.value.partial:
                with pytest.raises(npipes.ConnectionClosedError):
                    conn.request(b"next", timeout=WAIT)
            assert conn.reconnects == 0


@pytest.mark.slow
def test_requests_survive_a_server_killed_5_times(pipe_name: str) -> None:
    """A crash, not a clean exit: each incarnation is killed after 5 requests, wherever
    it is (reading, replying, or between). Every request still gets its own reply; a
    killed server may close its connection before its listener, so a reconnect can land
    in the dying listener's backlog and need another one (at least 5 reconnects)."""
    procs: list[Any] = []
    queues: list[Any] = []  # kept alive until the end: a child opens its queue's semaphores
    errors: list[BaseException] = []

    def incarnation(number: int) -> Any:
        events: Any = CTX.Queue()  # one queue each: a kill may tear a queue's pipe
        events.got = []
        queues.append(events)
        procs.append(start(reconnect_peers.reply_server, pipe_name, events, number))
        return events

    def killer(events: Any) -> None:
        try:
            for number in range(1, RESTARTS + 1):
                for _ in range(5):
                    _event(events, "got")
                procs[-1].kill()
                procs[-1].join(WAIT)
                events = incarnation(number)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    first = incarnation(0)
    _event(first, "ready")
    with npipes.connect(pipe_name, timeout=WAIT, reconnect=True) as conn:
        thread = threading.Thread(target=killer, args=(first,), daemon=True)
        thread.start()
        # Request until every kill happened, then 10 more: on a busy machine the killer
        # can lag, and a fixed count could end before the last kill (too few reconnects).
        deadline = time.monotonic() + 4 * WAIT
        seq = after = 0
        while after < 10:
            assert time.monotonic() < deadline, "the killer never finished its kills"
            message = f"crash test {seq}".encode()
            assert conn.request(message, timeout=WAIT) == reconnect_peers.reply(message)
            seq += 1
            if not thread.is_alive():
                after += 1
        thread.join(WAIT)
        assert not errors, errors
        assert conn.reconnects >= RESTARTS
    _event(queues[-1], "done")
    assert finish(procs[-1]) == 0


def test_ipc_receiver_taking_its_next_sender_logs_at_debug_only(
    pipe_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A long-running receiver serving short-lived senders (1.x style) counts each new
    sender after the first, but logs it at DEBUG: INFO is for a sender that lost its
    receiver (review: one INFO line per client was noise)."""
    import subprocess
    import sys

    from npipes.ipc import IPC

    caplog.set_level(logging.DEBUG, logger="npipes")
    send = (
        "import sys; from npipes.ipc import IPC;"
        " IPC(sys.argv[1], timeout=60).send_message(sys.argv[2])"
    )
    with IPC(pipe_name, timeout=WAIT) as ipc:  # first: it listens
        for text in ("one", "two", "three"):
            sender = subprocess.Popen([sys.executable, "-c", send, pipe_name, text])
            assert ipc.receive_message() == text
            assert sender.wait(timeout=WAIT) == 0
        assert ipc.reconnects == 2
    met = [r for r in caplog.records if "met a new peer" in r.getMessage()]
    assert [r.levelno for r in met] == [logging.DEBUG, logging.DEBUG]
