"""Peer programs for tests/test_faults.py, each run as its own process and killed by the test.

Usage: ``python fault_peers.py COMMAND ARGS...``. A peer prints ``ready`` (or
another word the test waits for) once it reached the point where the test
kills it (SIGKILL on POSIX, TerminateProcess on Windows), then waits; it never
waits longer than ``WAIT`` seconds, so a test that forgets it cannot hang.

Peers that cut a frame use ``framing="raw"``: it writes exactly the bytes given
(one pipe message on Windows), so any prefix of a valid frame, encoded with
the receiver's own codec, can be put on the wire. Only ``npipes`` is imported,
so the peers run unchanged under Windows CPython (where the tests folder is
not on ``sys.path``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import threading
import time

import npipes
import npipes.aio
from npipes._auth import WELCOME, _response
from npipes._framings import FRAMINGS

WAIT = 60.0
"""Seconds any single blocking step may take (the test kills the peer long before)."""


def say(word: str) -> None:
    sys.stdout.write(word + "\n")
    sys.stdout.flush()


def linger() -> None:
    """Wait to be killed (bounded: the process ends by itself after ``WAIT`` s)."""
    time.sleep(WAIT)  # pacing only: the test kills us; nothing is synchronised by it
    sys.exit(3)


def message(index: int, size: int = 1000) -> bytes:
    """Whole message ``index``: its number, then a fill byte (so splices show)."""
    return b"%04d" % index + bytes([index % 251 + 1]) * size


def frame(framing: str, data: bytes, crc: bool) -> bytes:
    """``data`` encoded as one message of ``framing`` (a byte stream, as on POSIX)."""
    options = {"message_mode": False} if framing == "multiprocessing" else {}
    codec = FRAMINGS[framing](**options)
    return b"".join(bytes(part) for part in codec.encode(data, crc=crc, max_size=None))


def cut_point(framing: str, whole: bytes, payload: int, where: str) -> int:
    """How many bytes of the frame ``whole`` (with a ``payload``-byte payload) to write."""
    header = len(whole) - payload - (4 if where == "crc" else 0)
    if where == "header":
        return header // 2
    if where == "payload":
        return header + payload // 2
    if where == "crc":
        return len(whole) - 2
    raise ValueError(where)


def npipes_frame(data: bytes) -> bytes:
    return frame("npipes", data, crc=False)


class FrameReader:
    """Reads v1 frames through a ``framing="raw"`` connection (the handshake peers)."""

    def __init__(self, conn: npipes.Connection) -> None:
        self.conn = conn
        self.decoder = FRAMINGS["npipes"]().decoder(
            max_message_size=None, require_crc=False, message_mode=False
        )

    def read(self) -> bytes:
        while True:
            got = self.decoder.next_frame()
            if got is not None:
                assert isinstance(got.message, bytes)
                return got.message
            data = self.conn.recv(timeout=WAIT)
            assert isinstance(data, bytes)
            self.decoder.feed_data(data)


# -- commands -----------------------------------------------------------------------------


def cut(name: str, framing: str, crc: str, where: str, count: str) -> None:
    """Send ``count`` whole messages, then the first bytes of one more, cut ``where``."""
    with_crc = crc == "crc"
    conn = npipes.connect(name, framing="raw", timeout=WAIT, wait_for_listener=True)
    wire = b"".join(frame(framing, message(i), with_crc) for i in range(int(count)))
    last = message(int(count), 5000)
    whole = frame(framing, last, with_crc)
    wire += whole[: cut_point(framing, whole, len(last), where)]
    conn.send(wire, timeout=WAIT)
    say("ready")
    linger()


def big(name: str, framing: str, size: str) -> None:
    """Send two small messages, then one of ``size`` bytes that the test does not read."""
    conn = npipes.connect(name, framing=framing, timeout=WAIT, wait_for_listener=True)
    conn.send(message(0), timeout=WAIT)
    conn.send(message(1), timeout=WAIT)
    say("sending")
    conn.send(bytes(int(size)), timeout=WAIT)  # blocks unless the test reads ahead (aio)
    say("sent")
    linger()


def hs_client(name: str, step: str) -> None:
    """The client half of the authkey handshake, stopped at ``step`` (listener under test)."""
    conn = npipes.connect(name, framing="raw", timeout=WAIT, wait_for_listener=True)
    if step != "connected":
        reader = FrameReader(conn)
        challenge = reader.read()
        response = npipes_frame(_response(b"key", challenge[len(b"#CHALLENGE#") :]))
        if step == "mid-response":
            conn.send(response[: len(response) // 2], timeout=WAIT)
        else:
            conn.send(response, timeout=WAIT)
            assert reader.read() == WELCOME
            ours = npipes_frame(b"#CHALLENGE#{sha256}" + bytes(40))
            if step == "mid-challenge":
                conn.send(ours[: len(ours) - 5], timeout=WAIT)
            elif step == "authenticated-mid-frame":
                conn.send(ours, timeout=WAIT)
                reader.read()  # the listener's answer (not checked: we only need in)
                conn.send(npipes_frame(WELCOME), timeout=WAIT)
                whole = npipes_frame(message(0, 5000))
                conn.send(whole[: len(whole) // 2], timeout=WAIT)
    say("ready")
    linger()


def hs_listener(name: str, step: str) -> None:
    """The listener half of the authkey handshake, stopped at ``step`` (client under test)."""
    with npipes.listen(name, framing="raw") as listener:
        say("listening")
        conn = listener.accept(timeout=WAIT)
        challenge = npipes_frame(b"#CHALLENGE#{sha256}" + bytes(40))
        if step == "mid-challenge":
            conn.send(challenge[:10], timeout=WAIT)
        else:
            conn.send(challenge, timeout=WAIT)
            FrameReader(conn).read()  # the client's response
            if step == "mid-verdict":
                conn.send(npipes_frame(WELCOME)[:-3], timeout=WAIT)
        say("ready")
        linger()


def read_nothing(name: str) -> None:
    """Connect, say hello, and never read: the test's sends fill the pipe."""
    conn = npipes.connect(name, timeout=WAIT, wait_for_listener=True)
    conn.send("hello", timeout=WAIT)
    say("ready")
    linger()


def die_unread(name: str) -> None:
    """Connect, say ``ready``, read nothing, and exit when stdin ends (or when killed)."""
    conn = npipes.connect(name, timeout=WAIT, wait_for_listener=True)
    say("ready")
    sys.stdin.read()
    conn.close()


# -- both sides send large messages at once: the recipe --------------------------------


def exchange_with_a_thread(conn: npipes.Connection, data: bytes) -> bytes | str:
    """Send ``data`` while another thread receives the peer's message: no deadlock.

    The recipe for two sides that may both send large messages at once: a
    ``send`` waits until the peer reads, so one side must be receiving while
    it sends (docs/reliability.md).
    """
    got: list[bytes | str | BaseException] = []

    def receive() -> None:
        try:
            got.append(conn.recv(timeout=WAIT))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            got.append(exc)

    receiver = threading.Thread(target=receive)
    receiver.start()
    try:
        conn.send(data, timeout=WAIT)
    finally:
        receiver.join(WAIT)
    if isinstance(got[0], BaseException):
        raise got[0]
    return got[0]


async def exchange_concurrently(conn: npipes.aio.Connection, data: bytes) -> bytes | str:
    """The asyncio recipe: send and receive in concurrent tasks."""
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(conn.send(data, timeout=WAIT))
        received = tasks.create_task(conn.recv(timeout=WAIT))
    return received.result()


def pattern(seed: int, size: int) -> bytes:
    block = hashlib.sha256(b"%d" % seed).digest() * 8
    return (block * (size // len(block) + 1))[:size]


def exchange(name: str, how: str, size: str) -> None:
    """Send ``size`` bytes to the test while it sends as many to us; report what arrived."""
    data = pattern(1, int(size))
    report: dict[str, object] = {}
    if how == "aio":

        async def main() -> None:
            conn = await npipes.aio.connect(name, timeout=WAIT, wait_for_listener=True)
            async with conn:
                got = await exchange_concurrently(conn, data)
                assert isinstance(got, bytes)
                report["sha256"] = hashlib.sha256(got).hexdigest()

        asyncio.run(main())
    else:
        with npipes.connect(name, timeout=WAIT, wait_for_listener=True) as conn:
            if how == "thread":
                got = exchange_with_a_thread(conn, data)
                assert isinstance(got, bytes)
                report["sha256"] = hashlib.sha256(got).hexdigest()
            else:  # naive: send, then receive; both sides block in send
                start = time.monotonic()
                try:
                    conn.send(data, timeout=3)
                    report["sent"] = True
                except npipes.NpipesError as exc:
                    report["error"] = type(exc).__name__
                report["seconds"] = time.monotonic() - start
    say(json.dumps(report))


def _fill_descriptors() -> list[int]:
    """Lower RLIMIT_NOFILE to a little above what is open, then open /dev/null until EMFILE."""
    import resource

    probe = os.open(os.devnull, os.O_RDONLY)
    os.close(probe)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (probe + 64, hard))
    held: list[int] = []
    try:
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        return held


def _free(held: list[int]) -> None:
    for fd in held:
        os.close(fd)
    held.clear()


def aio_emfile(name: str) -> None:
    """An asyncio accept out of descriptors: it backs off without spinning, the loop
    keeps serving a connection meanwhile, it returns the queued client once descriptors
    are free, and ``aclose()`` ends an accept that is backing off."""

    async def main() -> dict[str, object]:
        report: dict[str, object] = {}
        listener = await npipes.aio.listen(name)
        client = await npipes.aio.connect(name, timeout=WAIT)
        server = await listener.accept(timeout=WAIT)
        say("ready")
        await asyncio.to_thread(sys.stdin.readline)  # the test's client is queued now
        held = _fill_descriptors()
        cpu, wall = time.process_time(), time.monotonic()
        accepting = asyncio.create_task(listener.accept(timeout=WAIT))
        for i in range(20):  # the loop is not blocked: another connection is served
            await client.send(str(i), timeout=WAIT)
            assert await server.recv(timeout=WAIT) == str(i)
            await asyncio.sleep(0.05)  # pacing: spread the round trips over a second
        report["pending_during_pings"] = not accepting.done()
        _free(held)
        conn = await accepting
        report["message"] = await conn.recv(timeout=WAIT)
        report["cpu"] = time.process_time() - cpu
        report["wall"] = time.monotonic() - wall
        await conn.aclose()
        queued = await npipes.aio.connect(name, timeout=WAIT)  # waits in the backlog
        held = _fill_descriptors()
        accepting = asyncio.create_task(listener.accept(timeout=WAIT))
        await asyncio.sleep(0.3)  # let it meet EMFILE and back off
        closed_at = time.monotonic()
        await listener.aclose()
        try:
            await accepting
        except npipes.ConnectionClosedError:
            report["closed_after"] = time.monotonic() - closed_at
        _free(held)
        await queued.aclose()
        await client.aclose()
        await server.aclose()
        return report

    say(json.dumps(asyncio.run(main())))


COMMANDS = {
    "cut": cut,
    "big": big,
    "hs_client": hs_client,
    "hs_listener": hs_listener,
    "read_nothing": read_nothing,
    "die_unread": die_unread,
    "exchange": exchange,
    "aio_emfile": aio_emfile,
}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](*sys.argv[2:])
