"""The project's performance targets, checked against a run's medians.

Each target names its measure and says "met", "missed" or "n/a" (a contender
or size it needs did not run). Ratios are of medians over the repeats.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

from .config import KiB, MiB, format_size

if TYPE_CHECKING:
    from .summary import Summary, Table

__all__ = ["Verdict", "evaluate"]

MET: Final = "met"
MISSED: Final = "missed"
NA: Final = "n/a"


@final
@dataclass(frozen=True, slots=True)
class Verdict:
    target: str
    measured: str
    status: str


def _ratios(
    table: Table, mine: str, other: str | None, sizes: Iterable[int]
) -> list[tuple[int, float]]:
    found = []
    for size in sizes:
        ratio = table.ratio(mine, other, size)
        if ratio is not None:
            found.append((size, ratio))
    return found


def _check(
    target: str,
    found: list[tuple[int, float]],
    ok: Callable[[float], bool],
    missing: str,
) -> Verdict:
    if not found:
        return Verdict(target, missing, NA)
    measured = ", ".join(f"{r:.2f}x at {format_size(s)}" for s, r in found)
    good = all(ok(r) for _, r in found)
    return Verdict(target, measured, MET if good else MISSED)


def _posix(s: Summary) -> list[Verdict]:
    base = s.baseline or "the raw loop"
    big = [x for x in s.mb_per_s.sizes() if x >= 64 * KiB]
    mid = [x for x in s.mb_per_s.sizes() if MiB <= x <= 16 * MiB]
    return [
        _check(
            f"npipes throughput >= 0.9x {base}, messages >= 64 KiB",
            _ratios(s.mb_per_s, "npipes", s.baseline, big),
            lambda r: r >= 0.9,
            "needs npipes and the raw loop at >= 64 KiB",
        ),
        _check(
            "npipes throughput >= 3x multiprocessing.connection at 1-16 MiB",
            _ratios(s.mb_per_s, "npipes", "multiprocessing", mid),
            lambda r: r >= 3.0,
            "needs npipes and multiprocessing at 1-16 MiB",
        ),
        _check(
            "npipes throughput >= 1.1x pyzmq at 1-16 MiB",
            _ratios(s.mb_per_s, "npipes", "pyzmq", mid),
            lambda r: r >= 1.1,
            "needs npipes and pyzmq at 1-16 MiB",
        ),
        *_small_messages(s),
        _check(
            "npipes-aio 64 B round trip <= asyncio streams",
            _ratios(s.round_trip, "npipes-aio", "asyncio-streams", [64]),
            lambda r: r <= 1.0,
            "needs npipes-aio (npipes.aio) and asyncio-streams at 64 B",
        ),
    ]


def accelerated(s: Summary) -> bool | None:
    """Whether npipes ran with its C accelerator (None: npipes did not run)."""
    for info in s.results.contenders:
        if info.name == "npipes" and info.status == "ran":
            return info.versions.get("accelerator", "none") != "none"
    return None


def _small_messages(s: Summary) -> list[Verdict]:
    """Issue 13's small-message targets: stricter with the C accelerator than without."""
    base = s.baseline or "the raw loop"
    fast = accelerated(s)
    mode = "with the accelerator" if fast else "pure Python"
    rt_raw, rt_mp, one_way = (0.9, 0.8, 1.1) if fast else (1.1, 1.0, 0.9)
    mp_word = "<=" if fast else "<"
    return [
        _check(
            f"npipes 64 B round trip <= {rt_raw}x {base} ({mode}; run with --pin one)",
            _ratios(s.round_trip, "npipes", s.baseline, [64]),
            lambda r: r <= rt_raw,
            "needs npipes and the raw loop round trip at 64 B",
        ),
        _check(
            f"npipes 64 B round trip {mp_word} {rt_mp}x multiprocessing.connection ({mode})",
            _ratios(s.round_trip, "npipes", "multiprocessing", [64]),
            (lambda r: r <= rt_mp) if fast else (lambda r: r < rt_mp),
            "needs npipes and multiprocessing round trip at 64 B",
        ),
        _check(
            f"npipes 64 B one-way msg/s >= {one_way}x {base}, one send per message ({mode})",
            _ratios(s.msg_per_s, "npipes", s.baseline, [64]),
            lambda r: r >= one_way,
            "needs npipes and the raw loop at 64 B",
        ),
        _check(
            "npipes-batch (send_many/recv_many) 64 B msg/s >= 1.0x pyzmq",
            _ratios(s.msg_per_s, "npipes-batch", "pyzmq", [64]),
            lambda r: r >= 1.0,
            "needs npipes-batch (Connection.send_many) and pyzmq at 64 B",
        ),
    ]


def _windows(s: Summary) -> list[Verdict]:
    big = [x for x in s.mb_per_s.sizes() if x >= 64 * KiB]
    return [
        _check(
            "Windows: npipes throughput >= 1.5x multiprocessing AF_PIPE, messages >= 64 KiB",
            _ratios(s.mb_per_s, "npipes", "multiprocessing", big),
            lambda r: r >= 1.5,
            "needs npipes and multiprocessing at >= 64 KiB",
        ),
        _check(
            "Windows: npipes recv throughput >= 0.9x raw pywin32, messages >= 64 KiB",
            _ratios(s.mb_per_s, "npipes", "raw-pywin32", big),
            lambda r: r >= 0.9,
            "needs npipes and raw-pywin32 at >= 64 KiB",
        ),
        _check(
            "Windows: npipes round trip at 64 B within 1.2x of raw pywin32",
            _ratios(s.round_trip, "npipes", "raw-pywin32", [64]),
            lambda r: r <= 1.2,
            "needs npipes and raw-pywin32 round trip at 64 B",
        ),
    ]


def _memory(s: Summary) -> Verdict:
    target = "receiver memory for one N-byte message <= N + 16 MiB (npipes)"
    if "npipes" not in s.memory:
        return Verdict(target, "needs the memory test of npipes", NA)
    size, delta = s.memory["npipes"]
    over = (delta - size) / MiB
    measured = f"peak grew by {delta / MiB:.1f} MiB for {format_size(size)}: N {over:+.1f} MiB"
    return Verdict(target, measured, MET if delta <= size + 16 * MiB else MISSED)


def evaluate(s: Summary) -> list[Verdict]:
    """Every target that applies to this platform, in the issue's order."""
    windows = s.results.machine.get("system") == "Windows"
    big = [x for x in s.mb_per_s.sizes() if x >= 64 * KiB]
    common = [
        _check(
            "CRC on >= 0.8x CRC-off throughput at 1 MiB (npipes-crc / npipes)",
            _ratios(s.mb_per_s, "npipes-crc", "npipes", [MiB]),
            lambda r: r >= 0.8,
            "needs npipes and npipes-crc at 1 MiB",
        ),
        _memory(s),
        _check(
            "npipes-aio throughput >= 0.6x sync npipes, messages >= 64 KiB",
            _ratios(s.mb_per_s, "npipes-aio", "npipes", big),
            lambda r: r >= 0.6,
            "needs npipes-aio (npipes.aio) and npipes at >= 64 KiB",
        ),
    ]
    return (_windows(s) if windows else _posix(s)) + common
