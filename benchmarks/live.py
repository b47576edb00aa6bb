"""The parent's handle on one contender: its child process, control pipe and client session."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
from typing import TYPE_CHECKING, Any, Final, final

from . import child
from .contenders import create
from .session import connect

if TYPE_CHECKING:
    from types import TracebackType

    from .contenders.base import Data
    from .session import Session

__all__ = ["ChildError", "Live", "Watchdog"]

_READY_TIMEOUT: Final = 120.0  # a spawned child imports, then listens (slow under Wine)
_REPLY_TIMEOUT: Final = 120.0
_CONTEXT: Final = multiprocessing.get_context("spawn")


class ChildError(RuntimeError):
    """The child failed (its traceback is the message) or stopped answering."""


@final
class Live:
    """A contender with its server in a spawned child, driven from here."""

    def __init__(self, name: str, address: str, cpus: frozenset[int] | None = None) -> None:
        self.name: Final = name
        self.contender: Final = create(name)
        self._address = address
        self._ctl, child_ctl = _CONTEXT.Pipe()
        self._process = _CONTEXT.Process(
            target=child.serve,
            args=(name, address, child_ctl, cpus),
            name=f"npipes-bench-{name}",
            daemon=True,
        )
        self._process.start()
        child_ctl.close()
        self._session: Session | None = None

    # -- control pipe -------------------------------------------------------------

    def _reply(self, expected: str, timeout: float = _REPLY_TIMEOUT) -> tuple[Any, ...]:
        if not self._ctl.poll(timeout):
            state = "exited" if not self._process.is_alive() else "is not answering"
            raise ChildError(f"{self.name}: the child {state} (waited {timeout:.0f} s)")
        try:
            reply: tuple[Any, ...] = self._ctl.recv()
        except EOFError:
            self._process.join(5)
            raise ChildError(
                f"{self.name}: the child exited (code {self._process.exitcode})"
            ) from None
        if reply[0] == "error":
            raise ChildError(f"{self.name}: the child failed:\n{reply[1]}")
        if reply[0] != expected:
            raise ChildError(f"{self.name}: expected {expected!r} from the child, got {reply!r}")
        return reply

    def _command(self, *command: object) -> None:
        self._ctl.send(command)
        self._reply("go")

    def error_from_child(self) -> str | None:
        """The child's own error report, if it sent one (after a failed measurement)."""
        try:
            if self._ctl.poll(2):
                reply = self._ctl.recv()
                if reply[0] == "error":
                    return str(reply[1])
        except (EOFError, OSError):
            pass
        return None

    # -- lifetime -----------------------------------------------------------------

    def wait_ready(self) -> None:
        self._reply("ready", _READY_TIMEOUT)

    def connect(self) -> None:
        self._session = connect(self.contender, self._address)

    @property
    def session(self) -> Session:
        assert self._session is not None, "connect() first"
        return self._session

    def stop(self) -> None:
        """Close the connection and end the child (killing it if it does not stop)."""
        with contextlib.suppress(OSError):
            if self._process.is_alive():
                self._ctl.send(("stop",))
        if self._session is not None:
            # A connection broken by a failure is closed anyway: nothing to report.
            with contextlib.suppress(Exception):
                self._session.close()
            self._session = None
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        self._ctl.close()

    def kill(self) -> None:
        if self._process.is_alive():
            self._process.kill()

    # -- measurements -------------------------------------------------------------

    def latency(self, payload: Data, count: int, warmup: int) -> list[int]:
        """``count`` round-trip times in ns, after ``warmup`` untimed ones."""
        self._command("echo", len(payload), count + warmup)
        return self.session.round_trips(payload, count, warmup)

    def throughput(self, payload: Data, count: int) -> float:
        """Seconds to stream ``count`` messages and get the ack."""
        self._command("sink", len(payload), count)
        return self.session.stream(payload, count)

    def memory(self, payload: Data) -> dict[str, int | None]:
        """The child's RSS before and its peak after receiving ``payload``."""
        self._command("memory", len(payload))
        self.session.send_one(payload)
        report: dict[str, int | None] = self._reply("memory")[1]
        return report


@final
class Watchdog:
    """Kills the children if one measurement hangs, then this process if that does not help."""

    def __init__(self, seconds: float, lives: list[Live], what: str) -> None:
        self._lives = lives
        self._what = what
        self._seconds = seconds
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._last = threading.Timer(seconds + 30, self._give_up)
        self._last.daemon = True

    def _fire(self) -> None:
        for live in self._lives:
            live.kill()  # a blocked recv on a socket or pipe then fails at once

    def _give_up(self) -> None:
        os.write(2, f"npipes bench: {self._what} hung; giving up\n".encode())
        os._exit(3)

    def __enter__(self) -> Watchdog:
        self._timer.start()
        self._last.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._timer.cancel()
        self._last.cancel()
