"""Child processes for test_objects.py: the far side of JSON and pickle exchanges."""

from __future__ import annotations

import asyncio
from typing import Any

import npipes
import npipes.aio

WAIT = 30.0


class Point:
    """A user class a pickle carries (importable from this module in both processes)."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __hash__(self) -> int:
        return hash((self.x, self.y))


def echo_objects(name: str, allow_pickle: bool) -> None:
    """Connect; read a JSON value and a pickle, send each back the same way, then
    send a few raw messages the test's receiver must reject typedly."""
    options = {"timeout": WAIT, "wait_for_listener": True, "allow_pickle": allow_pickle}
    with npipes.connect(name, **options) as conn:  # type: ignore[arg-type]
        value = conn.recv_json(timeout=WAIT)
        conn.send_json(value, timeout=WAIT)
        if allow_pickle:
            obj = conn.recv_pyobj(timeout=WAIT)
            conn.send_pyobj(obj, timeout=WAIT)
        conn.recv(timeout=WAIT)  # wait for the test to finish


def send_evil_pickle(name: str, marker: str) -> None:
    """Send a pickle that would create ``marker`` if unpickled, then a plain message."""
    import os

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.mkdir, (marker,))

    import pickle

    with npipes.connect(name, timeout=WAIT, wait_for_listener=True) as conn:
        conn.send(pickle.dumps(Evil()), timeout=WAIT)
        conn.send_json({"after": True}, timeout=WAIT)
        conn.recv(timeout=WAIT)


def aio_echo_objects(name: str) -> None:
    async def main() -> None:
        conn = await npipes.aio.connect(
            name, timeout=WAIT, wait_for_listener=True, allow_pickle=True
        )
        async with conn:
            value = await conn.recv_json(timeout=WAIT)
            await conn.send_json(value, timeout=WAIT)
            obj = await conn.recv_pyobj(timeout=WAIT)
            await conn.send_pyobj(obj, timeout=WAIT)
            await conn.recv(timeout=WAIT)

    asyncio.run(main())
