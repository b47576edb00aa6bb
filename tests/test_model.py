"""Random interleavings of send, recv, timeouts, cancellation and peer death, against a model.

Both front ends (sync and asyncio) on real sockets/pipes: every message sent is
either delivered whole and in order, or reported by a typed npipes error;
never lost silently, never mixed with another.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import uuid
from collections import deque

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import npipes
import npipes.aio

_names = itertools.count()
# Unreceived bytes are kept below what the OS buffers, so a send never blocks for
# want of a reader (Windows pipes here have 64 KiB buffers; sockets have more).
_BACKLOG_LIMIT = 32 * 1024 if sys.platform == "win32" else 96 * 1024

payloads = st.one_of(
    st.binary(max_size=2048),
    st.text(max_size=512),
    st.integers(min_value=0, max_value=30_000).map(lambda n: os.urandom(n)),
)


def _size(message: bytes | str) -> int:
    return len(message.encode() if isinstance(message, str) else message)


def _fresh_name() -> str:
    return f"m{os.getpid()}-{next(_names)}-{uuid.uuid4().hex[:6]}"


class SyncModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.name = _fresh_name()
        self.listener = npipes.listen(self.name, crc=True)
        self.client = npipes.connect(self.name, timeout=10, crc=True)
        self.server = self.listener.accept(timeout=10)
        self.expected: deque[bytes | str] = deque()
        self.backlog = 0
        self.peer_gone = False

    def teardown(self) -> None:
        self.client.close()
        self.server.close()
        self.listener.close()

    @precondition(lambda self: not self.peer_gone)
    @rule(message=payloads)
    def send(self, message: bytes | str) -> None:
        if self.backlog + _size(message) > _BACKLOG_LIMIT:
            return
        self.client.send(message)
        self.expected.append(message)
        self.backlog += _size(message)

    @precondition(lambda self: not self.peer_gone)
    @rule(messages=st.lists(payloads, max_size=8))
    def send_many(self, messages: list[bytes | str]) -> None:
        total = sum(map(_size, messages))
        if self.backlog + total > _BACKLOG_LIMIT:
            return
        assert self.client.send_many(messages) == len(messages)
        self.expected.extend(messages)
        self.backlog += total

    @rule(timeout=st.sampled_from([0.0, 0.01]))
    def recv_or_time_out(self, timeout: float) -> None:
        if self.expected:
            self._take(self.server.recv(timeout=10))
        elif self.peer_gone:
            with pytest.raises(npipes.ConnectionClosedError):
                self.server.recv(timeout=10)
        else:
            with pytest.raises(npipes.PipeTimeoutError) as info:
                self.server.recv(timeout=timeout)
            assert not info.value.partial
            assert not self.server.closed

    @precondition(lambda self: bool(self.expected))
    @rule(limit=st.integers(min_value=1, max_value=5))
    def recv_many(self, limit: int) -> None:
        got = self.server.recv_many(limit, timeout=10)
        assert 1 <= len(got) <= limit
        for message in got:
            self._take(message)

    @precondition(lambda self: bool(self.expected))
    @rule()
    def recv_into(self) -> None:
        head = self.expected[0]
        size = _size(head)
        buf = bytearray(size + 1)
        if size:
            with pytest.raises(npipes.BufferTooSmallError):
                self.server.recv_into(bytearray(size - 1), timeout=10)
        assert self.server.recv_into(buf, timeout=10) == size
        self.expected.popleft()
        self.backlog -= size
        assert bytes(buf[:size]) == (head.encode() if isinstance(head, str) else head)

    @precondition(lambda self: not self.peer_gone)
    @rule()
    def peer_dies(self) -> None:
        self.client.close()
        self.peer_gone = True

    def _take(self, message: bytes | str) -> None:
        head = self.expected.popleft()
        assert type(message) is type(head)
        assert message == head
        self.backlog -= _size(head)

    @invariant()
    def open_while_peer_lives(self) -> None:
        if not self.peer_gone:
            assert not self.server.closed
            assert not self.client.closed


class AioModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.name = _fresh_name()
        self.listener, self.client, self.server = self.runner.run(self._open())
        self.expected: deque[bytes | str] = deque()
        self.backlog = 0
        self.peer_gone = False

    async def _open(
        self,
    ) -> tuple[npipes.aio.Listener, npipes.aio.Connection, npipes.aio.Connection]:
        listener = await npipes.aio.listen(self.name)
        accepting = asyncio.ensure_future(listener.accept(timeout=10))
        client = await npipes.aio.connect(self.name, timeout=10)
        return listener, client, await accepting

    def teardown(self) -> None:
        async def close() -> None:
            self.client.abort()
            self.server.abort()
            await self.listener.aclose()

        self.runner.run(close())
        self.runner.close()

    @precondition(lambda self: not self.peer_gone)
    @rule(message=payloads, reuse=st.booleans())
    def send(self, message: bytes | str, reuse: bool) -> None:
        if self.backlog + _size(message) > _BACKLOG_LIMIT:
            return
        data: bytes | str | bytearray = message
        if reuse and isinstance(message, bytes):
            data = bytearray(message)
        self.runner.run(self.client.send(data))
        if isinstance(data, bytearray):
            data[:] = b"\xff" * len(data)  # the caller reuses its buffer at once
        self.expected.append(message)
        self.backlog += _size(message)

    @rule(delay=st.sampled_from([0.0, 0.001, 0.01]))
    def recv_then_cancel(self, delay: float) -> None:
        async def attempt() -> bytes | str | None:
            task = asyncio.ensure_future(self.server.recv())
            await asyncio.sleep(delay)
            task.cancel()
            try:
                return await task
            except asyncio.CancelledError:
                return None

        if self.peer_gone and not self.expected:
            with pytest.raises(npipes.ConnectionClosedError):
                self.runner.run(self.server.recv(timeout=10))
            return
        got = self.runner.run(attempt())
        if got is not None:
            self._take(got)

    @precondition(lambda self: bool(self.expected))
    @rule()
    def recv(self) -> None:
        self._take(self.runner.run(self.server.recv(timeout=10)))

    @precondition(lambda self: not self.peer_gone)
    @rule()
    def peer_dies(self) -> None:
        self.runner.run(self.client.aclose())
        self.peer_gone = True

    def _take(self, message: bytes | str) -> None:
        head = self.expected.popleft()
        assert type(message) is type(head)
        assert message == head
        self.backlog -= _size(head)


_settings = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSyncModel = SyncModel.TestCase
TestSyncModel.settings = _settings
TestAioModel = AioModel.TestCase
TestAioModel.settings = _settings
