"""Peer for tests/test_attack13_*.py: an npipes listener in its own process that
receives from one (hostile) client and reports every outcome on stdout.

argv: NAME OPTIONS-JSON. Options: ``mode`` (sync|aio), ``api`` (recv|recv_many|
recv_into), ``max_message_size`` (int, None or absent: the default), ``crc``,
``max_messages`` (recv_many), ``wait_first`` (seconds to sleep after accepting,
before the first receive: the whole stream is then in), ``stats`` (report the
decoder's read buffer and read-ahead peaks).
Prints ``READY``, then one JSON line per outcome: ``{"msg": [type, size, sha]}``,
``{"batch": n}`` (recv_many: how many messages one call returned) or
``{"err": [type, state]}``; ends with ``{"end": [accelerated, read buffer peak,
read-ahead peak, VmHWM growth KiB]}``. ``quiet``: counts only; ``yield`` (aio): an
``await asyncio.sleep(0)`` after each receive (a consumer that awaits other things).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from typing import Any

import npipes
from npipes import _accel, aio

WAIT = 60.0


QUIET = False
"""Report counts instead of messages (floods): ``{"count": n, "max_batch": m}`` at the end."""
COUNT = [0, 0]


def say(obj: object) -> None:
    if QUIET and isinstance(obj, dict) and ("msg" in obj or "batch" in obj):
        if "msg" in obj:
            COUNT[0] += 1
        else:
            COUNT[1] = max(COUNT[1], obj["batch"])
        return
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def hwm() -> int:
    """Peak resident memory in KiB (Linux), else 0."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def describe(message: bytes | str) -> list[object]:
    raw = message.encode("utf-8", "surrogatepass") if isinstance(message, str) else message
    return [type(message).__name__, len(raw), hashlib.sha256(raw).hexdigest()[:16]]


class Stats:
    """Peaks of the receiver's own buffers (read buffer bytes, read-ahead bytes)."""

    def __init__(self) -> None:
        self.buf = 0
        self.ready = 0

    def sample(self, conn: Any) -> None:
        core = conn._core
        self.buf = max(self.buf, len(getattr(core._decoder, "_buf", b"")))
        self.ready = max(self.ready, core._ready_bytes)


READS = [0]


def count_reads(conn: Any) -> None:
    """Count the reads that deliver bytes to the connection's core (an observer only)."""
    core = conn._core
    updated, received = core.buffer_updated, core.receive_data

    def buffer_updated(nbytes: int, *args: Any) -> None:
        READS[0] += 1
        updated(nbytes, *args)

    def receive_data(data: Any) -> None:
        READS[0] += 1
        received(data)

    core.buffer_updated, core.receive_data = buffer_updated, receive_data


def outcome(exc: BaseException, conn: Any) -> dict[str, object]:
    return {"err": [type(exc).__name__, conn._core.state.name]}


def run_sync(name: str, opts: dict[str, Any]) -> None:
    options = _options(opts)
    stats = Stats()
    with npipes.listen(name, **options) as listener:
        say("READY")
        with listener.accept(timeout=WAIT) as conn:
            count_reads(conn)
            time.sleep(opts.get("wait_first", 0))
            errors = 0
            while errors < 4:
                stats.sample(conn)
                try:
                    if opts.get("api") == "recv_many":
                        got = conn.recv_many(opts.get("max_messages", 10**9), timeout=WAIT)
                        say({"batch": len(got)})
                        for message in got:
                            say({"msg": describe(message)})
                    elif opts.get("api") == "recv_into":
                        buf = bytearray(1 << 20)
                        size = conn.recv_into(buf, timeout=WAIT)
                        say({"msg": describe(bytes(buf[:size]))})
                    else:
                        say({"msg": describe(conn.recv(timeout=WAIT))})
                except npipes.NpipesError as exc:
                    stats.sample(conn)
                    say(outcome(exc, conn))
                    if type(exc) is npipes.ConnectionClosedError or isinstance(
                        exc, npipes.PipeTimeoutError
                    ):
                        break
                    errors += 1
                stats.sample(conn)
    if QUIET:
        say({"count": COUNT[0], "max_batch": COUNT[1], "reads": READS[0]})
    say({"end": [_accel.ACCELERATED, stats.buf, stats.ready, hwm() - START_HWM]})


async def run_aio(name: str, opts: dict[str, Any]) -> None:
    options = _options(opts)
    stats = Stats()
    async with await aio.listen(name, **options) as listener:
        say("READY")
        async with await listener.accept(timeout=WAIT) as conn:
            count_reads(conn)
            await asyncio.sleep(opts.get("wait_first", 0))
            errors = 0
            while errors < 4:
                stats.sample(conn)
                try:
                    if opts.get("api") == "recv_many":
                        got = await conn.recv_many(opts.get("max_messages", 10**9), timeout=WAIT)
                        say({"batch": len(got)})
                        for message in got:
                            say({"msg": describe(message)})
                    elif opts.get("api") == "recv_into":
                        buf = bytearray(1 << 20)
                        size = await conn.recv_into(buf, timeout=WAIT)
                        say({"msg": describe(bytes(buf[:size]))})
                    else:
                        say({"msg": describe(await conn.recv(timeout=WAIT))})
                    if opts.get("yield"):
                        await asyncio.sleep(0)
                except npipes.NpipesError as exc:
                    stats.sample(conn)
                    say(outcome(exc, conn))
                    if type(exc) is npipes.ConnectionClosedError or isinstance(
                        exc, npipes.PipeTimeoutError
                    ):
                        break
                    errors += 1
                stats.sample(conn)
    if QUIET:
        say({"count": COUNT[0], "max_batch": COUNT[1], "reads": READS[0]})
    say({"end": [_accel.ACCELERATED, stats.buf, stats.ready, hwm() - START_HWM]})


def _options(opts: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if "max_message_size" in opts:
        options["max_message_size"] = opts["max_message_size"]
    if opts.get("crc"):
        options["crc"] = True
    return options


START_HWM = 0


def main() -> None:
    global QUIET, START_HWM
    name, opts = sys.argv[1], json.loads(sys.argv[2])
    QUIET = bool(opts.get("quiet"))
    START_HWM = hwm()
    if opts.get("mode") == "aio":
        asyncio.run(run_aio(name, opts))
    else:
        run_sync(name, opts)


if __name__ == "__main__":
    main()
