"""What to run: sizes, repeats, contenders, where to write; and the command line for it."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, final

from .cpus import PINS

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Config", "format_size", "parse_args", "parse_size"]

KiB: Final = 1024
MiB: Final = 1024 * KiB

FULL_THROUGHPUT: Final = (64, KiB, 64 * KiB, MiB, 16 * MiB, 64 * MiB)
FULL_LATENCY: Final = (64, KiB, 64 * KiB)
QUICK_THROUGHPUT: Final = (64, 64 * KiB, MiB)
QUICK_LATENCY: Final = (64, 64 * KiB)
LATENCY_MAX: Final = 64 * KiB
"""--sizes also sets the round-trip sizes: those up to this one."""
DEFAULT_OUT: Final = Path(__file__).resolve().parent / "results"
"""``benchmarks/results/`` of this checkout, whatever the working directory."""
TESTS: Final = ("latency", "throughput", "memory")

_UNITS: Final = {"": 1, "B": 1, "K": KiB, "KIB": KiB, "M": MiB, "MIB": MiB, "G": 1024 * MiB}


def parse_size(text: str) -> int:
    """``"64"``, ``"1K"``, ``"64KiB"``, ``"16M"``... to bytes (binary units)."""
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else ""
    if match is None or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 64, 1K, 16M)")
    return int(match.group(1)) * _UNITS[unit]


def format_size(size: int) -> str:
    """64 -> ``64 B``, 65536 -> ``64 KiB``, 16777216 -> ``16 MiB``."""
    for unit, scale in (("MiB", MiB), ("KiB", KiB)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


@final
@dataclass(frozen=True, slots=True)
class Config:
    """One benchmark run.

    Attributes:
        quick: the short run of ``npipes bench``.
        repeats: measurements of every (test, size, contender), reported as medians.
        throughput_sizes, latency_sizes: message sizes in bytes.
        memory_size: the one message of the memory test (0: no memory test).
        seconds: the target duration of one measurement.
        only: contenders to run (None: every one available here).
        out: directory for the JSON, Markdown and PNG files.
        plots: draw PNGs (needs matplotlib).
    """

    quick: bool = False
    repeats: int = 5
    throughput_sizes: tuple[int, ...] = FULL_THROUGHPUT
    latency_sizes: tuple[int, ...] = FULL_LATENCY
    memory_size: int = 256 * MiB
    seconds: float = 0.4
    only: tuple[str, ...] | None = None
    out: Path = DEFAULT_OUT
    plots: bool = True
    tests: tuple[str, ...] = TESTS
    pin: str = "none"

    def to_json(self) -> dict[str, Any]:
        return {
            "quick": self.quick,
            "repeats": self.repeats,
            "throughput_sizes": list(self.throughput_sizes),
            "latency_sizes": list(self.latency_sizes),
            "memory_size": self.memory_size,
            "seconds_per_measurement": self.seconds,
            "only": None if self.only is None else list(self.only),
            "tests": list(self.tests),
            "pin": self.pin,
        }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="npipes bench",
        description=(
            "Compare npipes with raw sockets/pipes, multiprocessing, pyzmq and asyncio:"
            " round trip, throughput, receiver memory. Contenders are interleaved and"
            " reported as medians and as ratios to the raw loop."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats (< ~30 s)")
    parser.add_argument("--only", metavar="NAME,...", help="run only these contenders (see --list)")
    parser.add_argument(
        "--sizes",
        metavar="SIZE,...",
        help="throughput sizes, e.g. 64,1K,64K,1M; round trips use those <= 64K",
    )
    parser.add_argument("--repeats", type=int, metavar="N", help="measurements per point")
    parser.add_argument(
        "--time", type=float, metavar="SECONDS", help="target duration of one measurement"
    )
    parser.add_argument(
        "--memory-size", type=parse_size, metavar="SIZE", help="memory test message (0: skip)"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--tests",
        metavar="TEST,...",
        help=f"run only these tests ({', '.join(TESTS)}; default all)",
    )
    parser.add_argument(
        "--pin",
        choices=PINS,
        default="none",
        help="Linux: all processes on one CPU, or driver and servers on two (default none)",
    )
    parser.add_argument("--no-plots", action="store_true", help="do not draw PNG plots")
    parser.add_argument("--list", action="store_true", help="list contenders and exit")
    parser.add_argument(
        "--report-from",
        type=Path,
        metavar="JSON",
        help="run nothing: write the Markdown and plots of an earlier run's JSON to --out",
    )
    return parser


def parse_args(
    argv: Sequence[str] | None, *, quick: bool = False
) -> tuple[Config, argparse.Namespace]:
    """The run's :class:`Config`, and all the parsed options (``--list``, ``--report-from``)."""
    parser = _parser()
    args = parser.parse_args(argv)
    quick = quick or args.quick
    throughput: tuple[int, ...] = QUICK_THROUGHPUT if quick else FULL_THROUGHPUT
    latency: tuple[int, ...] = QUICK_LATENCY if quick else FULL_LATENCY
    if args.sizes:
        try:
            throughput = tuple(sorted({parse_size(s) for s in args.sizes.split(",") if s}))
        except argparse.ArgumentTypeError as exc:
            parser.error(str(exc))
        latency = tuple(s for s in throughput if s <= LATENCY_MAX)
    if not throughput or min(throughput) < 1:
        parser.error("--sizes needs sizes of at least 1 byte")
    repeats = args.repeats if args.repeats is not None else (3 if quick else 5)
    seconds = args.time if args.time is not None else (0.1 if quick else 0.4)
    if repeats < 1 or seconds <= 0:
        parser.error("--repeats and --time must be positive")
    memory = args.memory_size
    if memory is None:
        memory = 64 * MiB if quick else 256 * MiB
    tests: tuple[str, ...] = TESTS
    if args.tests:
        tests = tuple(t for t in TESTS if t in {x.strip() for x in args.tests.split(",")})
        unknown = {x.strip() for x in args.tests.split(",") if x.strip()} - set(TESTS)
        if unknown or not tests:
            parser.error(f"--tests takes {', '.join(TESTS)}")
    only = None
    if args.only:
        only = tuple(dict.fromkeys(n.strip() for n in args.only.split(",") if n.strip()))
    config = Config(
        quick=quick,
        repeats=repeats,
        throughput_sizes=throughput,
        latency_sizes=latency,
        memory_size=memory,
        seconds=seconds,
        only=only,
        out=args.out,
        plots=not args.no_plots,
        tests=tests,
        pin=args.pin,
    )
    return config, args
