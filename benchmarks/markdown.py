"""The Markdown report: machine, medians with ratios to the raw loop, targets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import MiB, format_size
from .targets import evaluate

if TYPE_CHECKING:
    from .summary import Summary, Table

__all__ = ["render"]


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _header(first: str, sizes: list[int]) -> list[str]:
    return [
        _row([first, *(format_size(s) for s in sizes)]),
        _row(["---", *("---:" for _ in sizes)]),
    ]


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _metric(s: Summary, table: Table, title: str, *, ratios: bool) -> list[str]:
    sizes = table.sizes()
    if not sizes:
        return []
    lines = [title, "", *_header("contender", sizes)]
    for name in s.contenders:
        if name not in table.values:
            continue
        cells = [f"**{name}**" if name == s.baseline else name]
        for size in sizes:
            value = table.get(name, size)
            if value is None:
                cells.append("-")
                continue
            ratio = table.ratio(name, s.baseline, size) if ratios else None
            text = _number(value)
            cells.append(f"{text} ({ratio:.2f}x)" if ratio is not None else text)
        lines.append(_row(cells))
    return [*lines, ""]


def _crc(s: Summary) -> list[str]:
    sizes = [x for x in s.mb_per_s.sizes() if x >= MiB]
    rows = []
    for size in sizes:
        off, on = s.mb_per_s.get("npipes", size), s.mb_per_s.get("npipes-crc", size)
        ratio = s.mb_per_s.ratio("npipes-crc", "npipes", size)
        if off is not None and on is not None and ratio is not None:
            rows.append(_row([format_size(size), _number(off), _number(on), f"{ratio:.2f}x"]))
    if not rows:
        return []
    return [
        "### Cost of the CRC-32 (throughput, MB/s)",
        "",
        _row(["size", "crc=False", "crc=True", "ratio"]),
        _row(["---", "---:", "---:", "---:"]),
        *rows,
        "",
    ]


def _memory(s: Summary) -> list[str]:
    if not s.memory:
        return []
    size = next(iter(s.memory.values()))[0]
    lines = [
        f"### Receiver memory for one {format_size(size)} message",
        "",
        "Peak resident memory of the receiving process, minus its resident memory"
        " just before the message (MiB).",
        "",
        _row(["contender", "peak growth", "beyond the message"]),
        _row(["---", "---:", "---:"]),
    ]
    for name in s.contenders:
        if name in s.memory:
            size, delta = s.memory[name]
            lines.append(_row([name, f"{delta / MiB:.1f}", f"{(delta - size) / MiB:+.1f}"]))
    return [*lines, ""]


def _targets(s: Summary) -> list[str]:
    lines = ["### Targets", "", _row(["target", "measured", "verdict"]), _row(["---"] * 3)]
    for v in evaluate(s):
        verdict = {"met": "met", "missed": "**missed**"}.get(v.status, v.status)
        lines.append(_row([v.target, v.measured, verdict]))
    return [*lines, ""]


def _context(s: Summary) -> list[str]:
    m = s.results.machine
    config = s.results.config
    wine = f", Wine {m['wine']}" if m.get("wine") else ""
    revision = f" ({m['npipes_revision']})" if m.get("npipes_revision") else ""
    memory = f", {m['memory_total'] / (1 << 30):.0f} GiB RAM" if m.get("memory_total") else ""
    pinned = {
        "one": " all processes pinned to one CPU;",
        "two": " driver and servers pinned to two CPUs;",
    }.get(str(config.get("pin", "none")), "")
    load = m.get("load_average")
    busy = f" (load average {load[0]:.1f} at the start)" if load else ""
    lines = [
        f"Run of {m['date']}: {m['platform']}{wine}; {m['cpu']}, {m['cpu_count']} CPUs"
        f"{memory}; {m['implementation']} {m['python']}; npipes {m.get('npipes', '?')}{revision}."
        f" {config['repeats']} repeats"
        f" (medians shown), ~{config['seconds_per_measurement']} s per measurement,"
        f" contenders interleaved, ratios are medians of per-repeat ratios;{pinned}"
        f" {s.results.seconds:.0f} s in all{busy}.",
        "",
        _row(["contender", "what", "versions"]),
        _row(["---"] * 3),
    ]
    for info in s.results.contenders:
        if info.status == "ran":
            versions = ", ".join(f"{k} {v}" for k, v in info.versions.items())
            name = f"**{info.name}** (baseline)" if info.baseline else info.name
            lines.append(_row([name, info.summary, versions]))
    skipped = [i for i in s.results.contenders if i.status != "ran"]
    lines.append("")
    for info in skipped:
        reason = info.reason.splitlines()[0] if info.reason else ""
        lines.append(f"- {info.name}: {info.status} ({reason})")
    return [*lines, ""] if skipped else lines


def render(s: Summary) -> str:
    """The whole report as Markdown (tables use ASCII only, so any console prints them)."""
    base = s.baseline or "the raw loop (did not run)"
    parts = [
        f"## npipes benchmark: {s.results.machine['system']}",
        "",
        *_context(s),
        *_metric(
            s,
            s.round_trip,
            f"### Round trip, median us (ratio to {base}: lower is better)",
            ratios=True,
        ),
        *_metric(s, s.round_trip_p99, "### Round trip, p99 us", ratios=True),
        *_metric(
            s,
            s.mb_per_s,
            f"### One-way throughput, MB/s (ratio to {base}: higher is better)",
            ratios=True,
        ),
        *_metric(s, s.msg_per_s, "### One-way messages per second", ratios=False),
        *_crc(s),
        *_memory(s),
        *_targets(s),
    ]
    return "\n".join(parts).rstrip() + "\n"
