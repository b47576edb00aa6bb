"""Subscriber programs for tests/test_pubsub.py, run in their own process by ``helpers.start``.

Published messages are numbered: ``b"%08d" % i`` then padding. A subscriber
reports ``(first, last, count, in_order, error)``: the numbers of its first
and last message, how many it got, whether they were consecutive, and the
name of the error that ended its reading.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import npipes
import npipes.aio

if TYPE_CHECKING:
    import multiprocessing.queues
    import multiprocessing.synchronize

WAIT = 60.0

Report = tuple[int, int, int, bool, str]


class _Tally:
    def __init__(self, progress: Any) -> None:
        self.first = self.last = -1
        self.count = 0
        self.in_order = True
        self.progress = progress

    def add(self, message: bytes | str) -> None:
        if not isinstance(message, bytes) or not message[:8].isdigit():
            self.in_order = False  # not a numbered message (e.g. one published too early)
            return
        number = int(message[:8])
        if self.count == 0:
            self.first = number
        elif number != self.last + 1:
            self.in_order = False
        self.last = number
        self.count += 1
        if self.progress is not None:
            self.progress.value = self.count

    def report(self, error: BaseException) -> Report:
        return (self.first, self.last, self.count, self.in_order, type(error).__name__)


def subscriber(
    name: str,
    ready: multiprocessing.synchronize.Event,
    go: multiprocessing.synchronize.Event | None,
    progress: Any,
    result: multiprocessing.queues.Queue[Report],
    use_aio: bool = False,
    wait_for_publisher: bool = False,
) -> None:
    """Subscribe, set ``ready``, wait for ``go`` (if given) without reading, then read
    until an error; put the report in ``result``. ``progress.value`` counts messages."""
    if use_aio:
        asyncio.run(_aio_subscriber(name, ready, go, progress, result, wait_for_publisher))
        return
    tally = _Tally(progress)
    with npipes.subscribe(name, timeout=WAIT, wait_for_publisher=wait_for_publisher) as conn:
        ready.set()
        if go is not None and not go.wait(2 * WAIT):
            raise RuntimeError("go was never set")
        try:
            while True:
                tally.add(conn.recv(timeout=WAIT))
        except npipes.ConnectionClosedError as exc:
            result.put(tally.report(exc))


async def _aio_subscriber(
    name: str,
    ready: multiprocessing.synchronize.Event,
    go: multiprocessing.synchronize.Event | None,
    progress: Any,
    result: multiprocessing.queues.Queue[Report],
    wait_for_publisher: bool,
) -> None:
    tally = _Tally(progress)
    conn = await npipes.aio.subscribe(name, timeout=WAIT, wait_for_publisher=wait_for_publisher)
    async with conn:
        ready.set()
        if go is not None and not await asyncio.to_thread(go.wait, 2 * WAIT):
            raise RuntimeError("go was never set")
        try:
            while True:
                tally.add(await conn.recv(timeout=WAIT))
        except npipes.ConnectionClosedError as exc:
            result.put(tally.report(exc))


def subscribe_and_leave(
    name: str,
    ready: multiprocessing.synchronize.Event,
    leave: multiprocessing.synchronize.Event,
) -> None:
    """Subscribe, set ``ready``, and close (without reading) once ``leave`` is set."""
    conn = npipes.subscribe(name, timeout=WAIT)
    try:
        ready.set()
        leave.wait(2 * WAIT)
    finally:
        conn.close()
