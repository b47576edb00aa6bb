"""PNG plots (optional: needs matplotlib): throughput vs size, round trip per contender."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import contenders
from .config import format_size

if TYPE_CHECKING:
    from pathlib import Path

    from .summary import Summary

__all__ = ["draw", "unavailable"]


def unavailable() -> str | None:
    """Why plots cannot be drawn here, or None."""
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib)"
    return None


def _pyplot() -> Any:
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def _color(name: str, baseline: str | None) -> str:
    """One color per contender, the same in every plot and run; black for the raw loop."""
    if name == baseline:
        return "black"
    others = [n for n in contenders.names() if not n.startswith("raw-")]
    index = others.index(name) if name in others else len(others)
    return _PALETTE[index % len(_PALETTE)]


def _style(name: str, baseline: str | None) -> dict[str, Any]:
    style: dict[str, Any] = {"color": _color(name, baseline), "linewidth": 1.4}
    if name == baseline:
        style.update(linestyle="--", linewidth=2.2, marker="s")
    elif name.startswith("npipes"):
        style.update(marker="o", linewidth=2.6 if name == "npipes" else 1.6)
    else:
        style.update(linestyle=":", marker="^")
    return style


def _throughput(s: Summary, plt: Any, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for name in s.contenders:
        row = s.mb_per_s.values.get(name)
        if not row:
            continue
        sizes = sorted(row)
        ax.plot(sizes, [row[x] for x in sizes], label=name, **_style(name, s.baseline))
    sizes = s.mb_per_s.sizes()
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sizes, [format_size(x) for x in sizes])
    ax.set_xlabel("message size")
    ax.set_ylabel("MB/s (median)")
    ax.set_title(f"One-way throughput, {title}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _latency(s: Summary, plt: Any, path: Path, title: str) -> None:
    sizes = s.round_trip.sizes()
    names = [n for n in s.contenders if n in s.round_trip.values]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        xs = [j + i * width for j in range(len(sizes))]
        med = [s.round_trip.get(name, x) or 0.0 for x in sizes]
        p99 = [s.round_trip_p99.get(name, x) or 0.0 for x in sizes]
        up = [max(0.0, b - a) for a, b in zip(med, p99, strict=True)]
        color = _color(name, s.baseline)
        ax.bar(xs, med, width, label=name, color=color, yerr=[[0] * len(up), up], capsize=2)
    ax.set_xticks(
        [j + width * (len(names) - 1) / 2 for j in range(len(sizes))],
        [format_size(x) for x in sizes],
    )
    ax.set_yscale("log")
    ax.set_ylabel("round trip, us (median; whisker: p99)")
    ax.set_title(f"Round trip, {title}")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def draw(s: Summary, out: Path, stem: str) -> list[Path]:
    """Write ``{stem}-throughput.png`` and ``{stem}-latency.png`` to ``out``; their paths."""
    plt = _pyplot()
    title = str(s.results.machine.get("platform", ""))
    if s.results.machine.get("wine"):
        title = f"Windows CPython under Wine {s.results.machine['wine']}"
    pin = s.results.config.get("pin", "none")
    if pin != "none":
        title += ", pinned to one CPU" if pin == "one" else ", pinned to two CPUs"
    written = []
    if s.mb_per_s.values:
        path = out / f"{stem}-throughput.png"
        _throughput(s, plt, path, title)
        written.append(path)
    if s.round_trip.values:
        path = out / f"{stem}-latency.png"
        _latency(s, plt, path, title)
        written.append(path)
    return written
