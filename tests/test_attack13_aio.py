"""Attack (issue 13) on the asyncio fast paths, with real peer processes: many
connections of one server loop sharing the scratch read buffer (no cross-talk),
a peer that never reads (send/send_many skip the drain only below the high-water
mark: memory stays bounded), and storms of cancelled and timed-out receives (no
message lost, duplicated or torn). Accelerated and pure (the suite runs both ways).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import npipes
from npipes import PipeTimeoutError, aio

pytestmark = pytest.mark.posix

PEER = str(Path(__file__).with_name("attack13_aiopeer.py"))
SRC = str(Path(__file__).resolve().parents[1] / "src")
WAIT = 60.0
KiB = 1024


@contextlib.contextmanager
def peer(*args: str) -> Iterator[subprocess.Popen[str]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, PEER, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        yield proc
        _, err = proc.communicate("", timeout=WAIT)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def content(client: int, seq: int, size: int) -> bytes:
    """A message no other client or position shares (a cross-talk would show)."""
    seed = hashlib.sha256(f"{client}:{seq}".encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


SIZES = [64 * KiB - 16, 64 * KiB + 7, 40_000, 200 * KiB, 1, 100, 33_000, 16 * KiB - 3, 0]


@pytest.mark.slow
def test_many_connections_of_one_loop_get_their_own_bytes(pipe_name: str) -> None:
    clients = 12
    rounds = 6
    failures: list[str] = []

    def client(number: int) -> None:
        try:
            with npipes.connect(pipe_name, timeout=WAIT) as conn:
                for r in range(rounds):
                    sent = [content(number, r * 100 + i, s) for i, s in enumerate(SIZES)]
                    conn.send_many(sent, timeout=WAIT)
                    for expected in sent:
                        got = conn.recv(timeout=WAIT)
                        if got != expected:
                            failures.append(f"client {number}: {len(got)} != {len(expected)}")
                            return
        except (npipes.NpipesError, OSError) as exc:  # reported below, with the others
            failures.append(f"client {number}: {exc!r}")

    with peer("echo", pipe_name):
        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT * 2)
        assert not any(thread.is_alive() for thread in threads)
    assert failures == []


@pytest.mark.parametrize("how", ["send", "send_many", "send-str"])
def test_send_to_a_peer_that_never_reads_stays_bounded(pipe_name: str, how: str) -> None:
    async def main() -> tuple[int, int]:
        async with await aio.connect(pipe_name, timeout=WAIT) as conn:
            sent = 0
            with contextlib.suppress(PipeTimeoutError):
                while sent < 1_000_000:
                    if how == "send_many":
                        await conn.send_many([b"m" * 1000] * 16, timeout=1.0)
                        sent += 16
                    else:
                        await conn.send(b"m" * 1000 if how == "send" else "m" * 1000, timeout=1.0)
                        sent += 1
            buffered = conn._transport.get_write_buffer_size()
            _, high = conn._transport.get_write_buffer_limits()
            conn.abort()
            return buffered - high, sent

    with peer("sink", pipe_name):
        over_high_water, sent = asyncio.run(main())
    # The send that crossed the mark waits for the drain (and times out): the transport
    # holds at most one call's frames above it. The kernel buffers take the rest.
    assert over_high_water <= 16 * 1020, over_high_water
    assert sent < 20_000, sent  # a few MiB of kernel buffers at most, then it waits


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_storm_of_cancelled_receives_loses_nothing(pipe_name: str, seed: int) -> None:
    count = 20_000
    rng = random.Random(seed)

    async def main() -> list[int]:
        got: list[int] = []
        async with await aio.connect(pipe_name, timeout=WAIT) as conn:
            buf = bytearray(64)
            while True:
                kind = rng.choice(["recv", "recv_many", "recv_into", "timeout"])
                if kind == "recv":
                    call = conn.recv()
                elif kind == "recv_many":
                    call = conn.recv_many(rng.randint(1, 50))
                elif kind == "recv_into":
                    call = conn.recv_into(buf)
                else:
                    call = conn.recv(timeout=rng.choice([0.0001, 0.001]))
                task = asyncio.ensure_future(call)
                for _ in range(rng.randint(0, 3)):
                    await asyncio.sleep(0)
                if rng.random() < 0.5:
                    task.cancel()
                try:
                    result = await task
                except (asyncio.CancelledError, PipeTimeoutError):
                    continue
                if isinstance(result, int):
                    messages = [bytes(buf[:result])]
                elif isinstance(result, list):
                    messages = result
                else:
                    messages = [result]
                for message in messages:
                    if message == b"end":
                        return got
                    assert isinstance(message, bytes)
                    got.append(int(message))

    with peer("numbers", pipe_name, str(count)):
        got = asyncio.run(asyncio.wait_for(main(), 100))
    assert got == list(range(count))
