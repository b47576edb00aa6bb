"""The timed loops, one sync and one async version of each.

Client side (parent): ``round_trips`` (per-round-trip times) and ``stream``
(N messages one way, then wait for the sink's ack). Server side (child):
``echo`` and ``sink``. Each loop looks up its calls once, then only calls them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .contenders.base import ACK

if TYPE_CHECKING:
    from .contenders.base import AsyncEnd, Data, SyncEnd

__all__ = [
    "aecho",
    "around_trips",
    "asink",
    "astream",
    "echo",
    "round_trips",
    "sink",
    "stream",
]


def round_trips(end: SyncEnd, payload: Data, count: int, warmup: int) -> list[int]:
    """Send ``payload`` and wait for its echo ``warmup + count`` times; the last ``count``
    round trips' durations in ns."""
    send = end.sender(len(payload))
    recv = end.receiver(len(payload))
    for _ in range(warmup):
        send(payload)
        recv()
    clock = time.perf_counter_ns
    times = [0] * count
    for i in range(count):
        start = clock()
        send(payload)
        recv()
        times[i] = clock() - start
    return times


def stream(end: SyncEnd, payload: Data, count: int, batch: int = 0) -> float:
    """Send ``payload`` ``count`` times, wait for the ack; seconds from first send to ack."""
    size = len(payload)
    ack = end.receiver(len(ACK))
    send_many = end.batch_sender(size) if batch else None
    if send_many is not None:
        chunk = [payload] * batch
        full, rest = divmod(count, batch)
        tail = chunk[:rest]
        start = time.perf_counter()
        for _ in range(full):
            send_many(chunk)
        if rest:
            send_many(tail)
        ack()
        return time.perf_counter() - start
    send = end.sender(size)
    start = time.perf_counter()
    for _ in range(count):
        send(payload)
    ack()
    return time.perf_counter() - start


def echo(end: SyncEnd, size: int, count: int) -> None:
    """Send every message back, ``count`` times."""
    send = end.sender(size)
    recv = end.receiver(size)
    for _ in range(count):
        send(recv())


def sink(end: SyncEnd, size: int, count: int) -> None:
    """Receive (and drop) ``count`` messages, then send the ack."""
    ack = end.sender(len(ACK))
    recv_many = end.batch_receiver(size)
    if recv_many is not None:
        got = 0
        while got < count:
            got += len(recv_many())
        ack(ACK)
        return
    recv = end.receiver(size)
    for _ in range(count):
        recv()
    ack(ACK)


async def around_trips(end: AsyncEnd, payload: Data, count: int, warmup: int) -> list[int]:
    send = end.sender(len(payload))
    recv = end.receiver(len(payload))
    for _ in range(warmup):
        await send(payload)
        await recv()
    clock = time.perf_counter_ns
    times = [0] * count
    for i in range(count):
        start = clock()
        await send(payload)
        await recv()
        times[i] = clock() - start
    return times


async def astream(end: AsyncEnd, payload: Data, count: int) -> float:
    send = end.sender(len(payload))
    ack = end.receiver(len(ACK))
    start = time.perf_counter()
    for _ in range(count):
        await send(payload)
    await ack()
    return time.perf_counter() - start


async def aecho(end: AsyncEnd, size: int, count: int) -> None:
    send = end.sender(size)
    recv = end.receiver(size)
    for _ in range(count):
        await send(await recv())


async def asink(end: AsyncEnd, size: int, count: int) -> None:
    recv = end.receiver(size)
    ack = end.sender(len(ACK))
    for _ in range(count):
        await recv()
    await ack(ACK)
