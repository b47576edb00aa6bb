"""What a run produces: raw samples and context, and their JSON form."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, final

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "ContenderInfo",
    "LatencySample",
    "MemorySample",
    "Results",
    "ThroughputSample",
    "read_json",
    "write_json",
]

SCHEMA = "npipes-bench/1"


@final
@dataclass(frozen=True, slots=True)
class LatencySample:
    """One latency run: ``count`` round trips of ``size`` bytes (times in microseconds)."""

    contender: str
    size: int
    repeat: int
    count: int
    median_us: float
    p99_us: float
    mean_us: float
    min_us: float
    max_us: float


@final
@dataclass(frozen=True, slots=True)
class ThroughputSample:
    """One throughput run: ``count`` messages of ``size`` bytes one way, acked at the end."""

    contender: str
    size: int
    repeat: int
    count: int
    seconds: float
    mb_per_s: float
    msg_per_s: float


@final
@dataclass(frozen=True, slots=True)
class MemorySample:
    """The receiving child's resident memory around one ``size``-byte message (bytes)."""

    contender: str
    size: int
    rss_before: int | None
    peak_before: int
    peak_after: int
    rss_after: int | None

    @property
    def delta(self) -> int:
        """Peak growth while receiving: peak after minus resident before."""
        base = self.rss_before if self.rss_before is not None else self.peak_before
        return self.peak_after - base


@final
@dataclass(slots=True)
class ContenderInfo:
    name: str
    summary: str
    status: str  # "ran", "skipped" or "failed"
    reason: str = ""
    baseline: bool = False
    versions: dict[str, str] = field(default_factory=dict)


@final
@dataclass(slots=True)
class Results:
    machine: dict[str, Any]
    config: dict[str, Any]
    contenders: list[ContenderInfo] = field(default_factory=list)
    latency: list[LatencySample] = field(default_factory=list)
    throughput: list[ThroughputSample] = field(default_factory=list)
    memory: list[MemorySample] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def baseline(self) -> str | None:
        """The raw loop that ratios are relative to, if it ran."""
        for info in self.contenders:
            if info.baseline and info.status == "ran":
                return info.name
        return None

    def ran(self) -> list[str]:
        return [c.name for c in self.contenders if c.status == "ran"]

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["memory"] = [dict(dataclasses.asdict(m), delta=m.delta) for m in self.memory]
        return {"schema": SCHEMA, "baseline": self.baseline, **data}


def write_json(results: Results, path: Path) -> None:
    path.write_text(json.dumps(results.to_json(), indent=1) + "\n", encoding="utf-8")


def read_json(path: Path) -> Results:
    """The :class:`Results` that :func:`write_json` wrote (to re-render a report elsewhere)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not an npipes benchmark result ({SCHEMA})")
    return Results(
        machine=data["machine"],
        config=data["config"],
        contenders=[ContenderInfo(**c) for c in data["contenders"]],
        latency=[LatencySample(**x) for x in data["latency"]],
        throughput=[ThroughputSample(**x) for x in data["throughput"]],
        memory=[
            MemorySample(**{k: v for k, v in x.items() if k != "delta"}) for x in data["memory"]
        ],
        seconds=data["seconds"],
    )
