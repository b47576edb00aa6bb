"""Medians over repeats, and ratios to the raw loop.

A ratio is the median of per-repeat ratios: each repeat runs every contender
back to back, so pairing them by repeat cancels slow drifts of the machine
(another process waking up) that a ratio of medians would keep.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, final

from .stats import median

if TYPE_CHECKING:
    from .samples import Results

__all__ = ["Summary", "Table"]


@final
@dataclass(slots=True)
class Table:
    """``values[contender][size]``: the median over repeats of one metric."""

    values: dict[str, dict[int, float]] = field(default_factory=dict)
    runs: dict[str, dict[int, dict[int, float]]] = field(default_factory=dict)
    """``runs[contender][size][repeat]``: the samples behind each median."""

    def get(self, contender: str | None, size: int) -> float | None:
        if contender is None:
            return None
        return self.values.get(contender, {}).get(size)

    def ratio(self, contender: str, other: str | None, size: int) -> float | None:
        """``contender``'s value over ``other``'s at ``size``: the median of the
        per-repeat ratios (None if either is missing)."""
        if other is None:
            return None
        mine = self.runs.get(contender, {}).get(size, {})
        theirs = self.runs.get(other, {}).get(size, {})
        pairs = [mine[r] / theirs[r] for r in mine.keys() & theirs.keys() if theirs[r]]
        return median(pairs) if pairs else None

    def sizes(self) -> list[int]:
        return sorted({s for row in self.values.values() for s in row})


def _table(points: dict[tuple[str, int], dict[int, float]]) -> Table:
    table = Table()
    for (contender, size), runs in points.items():
        table.values.setdefault(contender, {})[size] = median(list(runs.values()))
        table.runs.setdefault(contender, {})[size] = runs
    return table


@final
class Summary:
    """Every metric of a run as medians per contender and size."""

    def __init__(self, results: Results) -> None:
        self.results = results
        self.baseline = results.baseline
        self.contenders = results.ran()
        rt: defaultdict[tuple[str, int], dict[int, float]] = defaultdict(dict)
        p99: defaultdict[tuple[str, int], dict[int, float]] = defaultdict(dict)
        for lat in results.latency:
            rt[lat.contender, lat.size][lat.repeat] = lat.median_us
            p99[lat.contender, lat.size][lat.repeat] = lat.p99_us
        mbps: defaultdict[tuple[str, int], dict[int, float]] = defaultdict(dict)
        msgs: defaultdict[tuple[str, int], dict[int, float]] = defaultdict(dict)
        for tp in results.throughput:
            mbps[tp.contender, tp.size][tp.repeat] = tp.mb_per_s
            msgs[tp.contender, tp.size][tp.repeat] = tp.msg_per_s
        self.round_trip = _table(rt)
        """Median round trip, in microseconds."""
        self.round_trip_p99 = _table(p99)
        """99th percentile round trip, in microseconds."""
        self.mb_per_s = _table(mbps)
        self.msg_per_s = _table(msgs)
        self.memory: dict[str, tuple[int, int]] = {
            m.contender: (m.size, m.delta) for m in results.memory
        }
        """``contender: (message size, receiver peak growth)`` in bytes."""
