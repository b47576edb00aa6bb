"""Attacks on ``connect(reconnect=True)`` (issue 12 §5): a listener that accepts
and drops every client at once must not make a reconnecting client spin."""

from __future__ import annotations

import asyncio
import time

import pytest

import attack12_peers
import npipes
import npipes.aio
from helpers import start

WAIT = 30.0
CALL = 3.0
"""The timed call: with backoff (10 ms doubling to 1 s) it reconnects about 8 times."""
MAX_RECONNECTS = 60
"""Far above what backoff allows in CALL seconds, far below a storm (thousands)."""


def test_a_listener_that_drops_every_client_gets_backoff_not_a_storm(pipe_name: str) -> None:
    proc = start(attack12_peers.accept_and_close, pipe_name)
    try:
        conn = npipes.connect(pipe_name, reconnect=True, wait_for_listener=True, timeout=WAIT)
        with conn:
            cpu = time.process_time()
            with pytest.raises(npipes.PipeTimeoutError):
                conn.recv(timeout=CALL)
            assert conn.reconnects <= MAX_RECONNECTS
            assert time.process_time() - cpu < CALL / 2  # mostly waiting, not spinning
    finally:
        proc.kill()
        proc.join(WAIT)


def test_a_listener_that_drops_every_client_gets_backoff_in_asyncio(pipe_name: str) -> None:
    async def main() -> None:
        conn = await npipes.aio.connect(
            pipe_name, reconnect=True, wait_for_listener=True, timeout=WAIT
        )
        async with conn:
            with pytest.raises(npipes.PipeTimeoutError):
                await conn.recv(timeout=CALL)
            assert conn.reconnects <= MAX_RECONNECTS

    proc = start(attack12_peers.accept_and_close, pipe_name)
    try:
        asyncio.run(main())
    finally:
        proc.kill()
        proc.join(WAIT)


def test_a_call_past_its_deadline_never_reconnects(pipe_name: str) -> None:
    """A call whose deadline has passed raises PipeTimeoutError instead of reconnecting:
    CI saw 88 reconnects in a 3 s call on a loaded machine, each new connection's drop
    winning the race against the timed-out read. ``timeout=0`` is past its deadline at
    the first failure, so it never reconnects; a call with time left still does."""
    proc = start(attack12_peers.accept_and_close, pipe_name)
    try:
        conn = npipes.connect(pipe_name, reconnect=True, wait_for_listener=True, timeout=WAIT)
        with conn:
            time.sleep(0.5)  # the listener has dropped us: the end of stream is here
            for _ in range(5):
                with pytest.raises(npipes.PipeTimeoutError):
                    conn.recv(timeout=0)
            assert conn.reconnects == 0
            with pytest.raises(npipes.PipeTimeoutError):
                conn.recv(timeout=0.5)
            assert 1 <= conn.reconnects <= MAX_RECONNECTS
    finally:
        proc.kill()
        proc.join(WAIT)


def test_an_aio_call_past_its_deadline_never_reconnects(pipe_name: str) -> None:
    async def main() -> None:
        conn = await npipes.aio.connect(
            pipe_name, reconnect=True, wait_for_listener=True, timeout=WAIT
        )
        async with conn:
            await asyncio.sleep(0.5)
            for _ in range(5):
                with pytest.raises(npipes.PipeTimeoutError):
                    await conn.recv(timeout=0)
            assert conn.reconnects == 0
            with pytest.raises(npipes.PipeTimeoutError):
                await conn.recv(timeout=0.5)
            assert 1 <= conn.reconnects <= MAX_RECONNECTS

    proc = start(attack12_peers.accept_and_close, pipe_name)
    try:
        asyncio.run(main())
    finally:
        proc.kill()
        proc.join(WAIT)
