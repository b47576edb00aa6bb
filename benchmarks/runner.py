"""The schedule: start every contender, calibrate, then interleave the repeats.

For each repeat, for each size, every contender runs once (in an order that
rotates with the repeat), so machine noise hits all of them alike. The number
of messages of each (test, contender, size) is calibrated once, in a warm-up
pass, to take about ``config.seconds``, and stays fixed across repeats.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Final

from . import contenders
from .config import format_size
from .cpus import pin, plan
from .live import Live, Watchdog
from .machine import machine_info
from .samples import ContenderInfo, LatencySample, MemorySample, Results, ThroughputSample
from .stats import median, percentile

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TextIO

    from .config import Config

__all__ = ["run", "select"]

_WATCHDOG: Final = 300.0  # seconds one measurement may take before the children are killed
_LATENCY_MIN: Final = 100
_LATENCY_MAX: Final = 50_000
_STREAM_MIN: Final = 3
_STREAM_MAX: Final = 10_000_000


def select(only: tuple[str, ...] | None) -> list[tuple[str, str | None]]:
    """``(name, skip reason or None)`` for the contenders to consider, in report order.

    Raises:
        ValueError: ``only`` names an unknown contender.
    """
    known = contenders.names()
    if only is not None:
        unknown = [n for n in only if n not in known]
        if unknown:
            raise ValueError(
                f"unknown contender(s) {', '.join(unknown)}; known: {', '.join(known)}"
            )
    chosen = [n for n in known if only is None or n in only]
    return [(n, contenders.REGISTRY[n].skip_reason()) for n in chosen]


def _count_for(
    measure: Callable[[int], float], first: int, target: float, low: int, high: int
) -> int:
    """The message count that makes ``measure(count)`` take about ``target`` seconds.

    Grows the count until a probe takes a fifth of the target, then checks the
    estimate once more with a probe of the estimated size (the first probes
    also pay for warming up: allocations, page faults, a new loop).
    """
    count = first
    while True:
        elapsed = max(measure(count), 1e-9)
        if elapsed >= target / 5 or count >= high:
            break
        count = min(high, max(count * 2, int(count * target / 2 / elapsed)))
    estimate = max(low, min(high, round(count * target / elapsed)))
    elapsed = max(measure(estimate), 1e-9)
    return max(low, min(high, round(estimate * target / elapsed)))


class _Run:
    def __init__(self, config: Config, out: TextIO) -> None:
        self.config = config
        self.out = out
        self.results = Results(machine=machine_info(), config=config.to_json())
        self.infos: dict[str, ContenderInfo] = {}
        self.lives: list[Live] = []
        self.payloads: dict[int, bytes] = {}
        self.counts: dict[tuple[str, str, int], int] = {}
        self.tmpdir = tempfile.mkdtemp(prefix="npb-") if sys.platform != "win32" else ""
        self.tag = f"{os.getpid()}-{int(time.time() * 1000) % 100000}"
        self.driver_cpus, self.server_cpus = plan(config.pin)

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def payload(self, size: int) -> bytes:
        if size not in self.payloads:
            self.payloads[size] = b"\xa5" * size
        return self.payloads[size]

    def address(self, live_name: str, suffix: str = "") -> str:
        contender = contenders.create(live_name)
        return contender.address(f"{self.tag}-{live_name}{suffix}", self.tmpdir)

    # -- contenders -------------------------------------------------------------

    def start(self) -> None:
        """Start every available contender's child, then connect to each."""
        pending: list[Live] = []
        for name, reason in select(self.config.only):
            info = ContenderInfo(name=name, summary="", status="skipped", reason=reason or "")
            self.infos[name] = info
            self.results.contenders.append(info)
            if reason is not None:
                self.say(f"skip {name}: {reason}")
                continue
            contender = contenders.create(name)
            info.summary = contender.summary
            info.baseline = contender.baseline
            info.versions = contender.versions()
            try:
                pending.append(Live(name, self.address(name), self.server_cpus))
            except Exception as exc:  # noqa: BLE001 - report it, go on without it
                self.fail(name, f"could not start its child: {exc}")
        for live in pending:  # the children start in parallel; wait for each in turn
            try:
                live.wait_ready()
                live.connect()
            except Exception as exc:  # noqa: BLE001
                self.fail(live.name, f"could not connect: {exc}", live)
                continue
            self.infos[live.name].status = "ran"
            self.lives.append(live)
        self.say("contenders: " + ", ".join(live.name for live in self.lives))

    def fail(self, name: str, reason: str, live: Live | None = None) -> None:
        if live is not None:
            detail = live.error_from_child()
            if detail:
                reason = f"{reason}\n{detail}"
            live.stop()
            if live in self.lives:
                self.lives.remove(live)
        info = self.infos[name]
        info.status, info.reason = "failed", reason
        self.say(f"FAILED {name}: {reason}")

    def guarded(self, live: Live, what: str, step: Callable[[], None]) -> bool:
        """Run one measurement step; on failure drop that contender and go on."""
        try:
            with Watchdog(_WATCHDOG, [live], f"{live.name} {what}"):
                step()
        except Exception as exc:  # noqa: BLE001 - any failure drops that contender, not the run
            self.fail(live.name, f"{what}: {type(exc).__name__}: {exc}", live)
            return False
        return True

    # -- one measurement ----------------------------------------------------------

    def latency(self, live: Live, size: int, repeat: int) -> float | None:
        key = ("latency", live.name, size)
        payload = self.payload(size)
        if key not in self.counts:

            def probe(count: int) -> float:
                return sum(live.latency(payload, count, 10)) / 1e9

            def calibrate() -> None:
                self.counts[key] = _count_for(
                    probe, 20, self.config.seconds, _LATENCY_MIN, _LATENCY_MAX
                )

            if not self.guarded(live, f"latency {format_size(size)} (calibration)", calibrate):
                return None
        count = self.counts[key]
        times: list[int] = []

        def measure() -> None:
            times.extend(live.latency(payload, count, max(10, count // 20)))

        if not self.guarded(live, f"latency {format_size(size)}", measure):
            return None
        us = [t / 1000 for t in times]
        sample = LatencySample(
            contender=live.name,
            size=size,
            repeat=repeat,
            count=count,
            median_us=median(us),
            p99_us=percentile(us, 99),
            mean_us=sum(us) / len(us),
            min_us=min(us),
            max_us=max(us),
        )
        self.results.latency.append(sample)
        return sample.median_us

    def throughput(self, live: Live, size: int, repeat: int) -> float | None:
        key = ("throughput", live.name, size)
        payload = self.payload(size)
        if key not in self.counts:

            def calibrate() -> None:
                first = max(1, min(1000, (1 << 20) // size))
                self.counts[key] = _count_for(
                    lambda n: live.throughput(payload, n),
                    first,
                    self.config.seconds,
                    _STREAM_MIN,
                    _STREAM_MAX,
                )

            if not self.guarded(live, f"throughput {format_size(size)} (calibration)", calibrate):
                return None
        count = self.counts[key]
        elapsed: list[float] = []
        if not self.guarded(
            live,
            f"throughput {format_size(size)}",
            lambda: elapsed.append(live.throughput(payload, count)),
        ):
            return None
        seconds = elapsed[0]
        sample = ThroughputSample(
            contender=live.name,
            size=size,
            repeat=repeat,
            count=count,
            seconds=seconds,
            mb_per_s=size * count / seconds / 1e6,
            msg_per_s=count / seconds,
        )
        self.results.throughput.append(sample)
        return sample.mb_per_s

    # -- the schedule -------------------------------------------------------------

    def repeats(self) -> None:
        config = self.config
        for repeat in range(config.repeats):
            turn = repeat % max(1, len(self.lives))
            order = self.lives[turn:] + self.lives[:turn]
            for size in config.latency_sizes if "latency" in config.tests else ():
                line = []
                for live in order:
                    if live not in self.lives or not live.contender.latency:
                        continue
                    value = self.latency(live, size, repeat)
                    if value is not None:
                        line.append(f"{live.name} {value:.1f}")
                self.say(
                    f"[{repeat + 1}/{config.repeats}] round trip {format_size(size)}, median us: "
                    + " | ".join(line)
                )
            for size in config.throughput_sizes if "throughput" in config.tests else ():
                line = []
                for live in order:
                    limit = live.contender.max_stream_size
                    if live not in self.lives or (limit is not None and size > limit):
                        continue
                    value = self.throughput(live, size, repeat)
                    if value is not None:
                        line.append(f"{live.name} {value:.1f}")
                self.say(
                    f"[{repeat + 1}/{config.repeats}] throughput {format_size(size)}, MB/s: "
                    + " | ".join(line)
                )

    def memory(self) -> None:
        size = self.config.memory_size
        if not size or "memory" not in self.config.tests:
            return
        names = [i.name for i in self.results.contenders if i.status == "ran"]
        for name in names:
            if not contenders.create(name).memory:
                continue
            live = Live(name, self.address(name, "-mem"), self.server_cpus)
            try:
                with Watchdog(_WATCHDOG, [live], f"{name} memory"):
                    live.wait_ready()
                    live.connect()
                    payload = b"\xa5" * size  # only now: the child's peak must not include it
                    report = live.memory(payload)
                    del payload
            except Exception as exc:  # noqa: BLE001 - report it, go on
                self.say(f"memory {name}: failed: {type(exc).__name__}: {exc}")
                live.stop()
                continue
            live.stop()
            sample = MemorySample(
                contender=name,
                size=size,
                rss_before=report["rss_before"],
                peak_before=report["peak_before"] or 0,
                peak_after=report["peak_after"] or 0,
                rss_after=report["rss_after"],
            )
            self.results.memory.append(sample)
            self.say(
                f"memory {format_size(size)} message, {name}: receiver peak grew by"
                f" {sample.delta / (1 << 20):.1f} MiB"
            )

    def close(self) -> None:
        for live in self.lives:
            live.stop()
        self.lives.clear()
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


def run(config: Config, out: TextIO) -> Results:
    """Run the benchmark described by ``config``; progress goes to ``out``."""
    started = time.perf_counter()
    state = _Run(config, out)
    cpus_before = pin(state.driver_cpus)
    try:
        state.start()
        state.repeats()
        for live in list(state.lives):
            live.stop()
        state.lives.clear()
        state.payloads.clear()
        state.memory()
    finally:
        state.close()
        pin(cpus_before)
    state.results.seconds = time.perf_counter() - started
    return state.results
