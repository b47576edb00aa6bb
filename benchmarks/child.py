"""The child process: a contender's listening side, driven by the parent over a control pipe.

Commands (tuples on the control pipe): ``("echo", size, count)``,
``("sink", size, count)``, ``("memory", size)``, ``("stop",)``. The child
answers ``("ready",)`` once listening, ``("go",)`` before each workload,
``("memory", {...})`` after a memory run, and ``("error", text)`` if anything
fails (then it exits, which also closes the data connection).
"""

from __future__ import annotations

import contextlib
import gc
import traceback
from typing import TYPE_CHECKING, Any

from .contenders import create
from .cpus import pin
from .memory import current_rss, peak_rss, reset_peak
from .session import Listening

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.connection import Connection

__all__ = ["serve"]


def serve(name: str, address: str, ctl: Connection, cpus: frozenset[int] | None = None) -> None:
    """Entry point of the spawned child (pinned to ``cpus`` if given)."""
    try:
        pin(cpus)
        _serve(name, address, ctl)
    except BaseException:  # noqa: BLE001 - reported to the parent, then the child exits
        with contextlib.suppress(OSError):  # the parent may be gone
            ctl.send(("error", traceback.format_exc()))
        raise SystemExit(1) from None


def _serve(name: str, address: str, ctl: Connection) -> None:
    listening = Listening(create(name), address)
    try:
        ctl.send(("ready",))
        session = listening.accept()
        try:
            while True:
                command = ctl.recv()
                kind = command[0]
                if kind == "stop":
                    break
                if kind == "memory":
                    ctl.send(("memory", _receive_one(session.receive_one, command[1], ctl)))
                    continue
                ctl.send(("go",))
                if kind == "echo":
                    session.echo(command[1], command[2])
                elif kind == "sink":
                    session.sink(command[1], command[2])
                else:
                    raise ValueError(f"unknown command {command!r}")
        finally:
            session.close()
    finally:
        listening.close()


def _receive_one(
    receive: Callable[[int], Any], size: int, ctl: Connection
) -> dict[str, int | None]:
    """Receive one ``size``-byte message; report RSS before it and the peak after."""
    gc.collect()
    reset_peak()
    before = current_rss()
    peak_before = peak_rss()
    ctl.send(("go",))
    message = receive(size)
    peak = peak_rss()
    after = current_rss()
    del message
    return {
        "rss_before": before,
        "peak_before": peak_before,
        "peak_after": peak,
        "rss_after": after,
    }
