"""The benchmark harness: npipes against what users already have, side by side in one run.

It lives in the source repository, not in the npipes wheel (it is larger than
some of the package and imports pyzmq/matplotlib when present). Run it from a
checkout: ``python -m benchmarks`` (full run), ``python -m benchmarks --quick``,
or ``npipes bench`` (the quick run, when npipes runs from this checkout's
``src/``). It uses npipes internals freely. See docs/performance.md.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import TextIO

__all__ = ["main"]


def main(
    argv: Sequence[str] | None = None, *, quick: bool = False, out: TextIO | None = None
) -> int:
    """Run the benchmark from command-line arguments; return the exit code.

    Args:
        argv: the arguments (``--help`` lists them); None reads ``sys.argv``.
        quick: the short run (as ``--quick``).
        out: where progress and the report go (default ``sys.stdout``).
    Returns:
        0, or 1 if a contender failed (the report says why) or none could run.
    """
    from .report import run_and_report

    return run_and_report(argv, quick=quick, out=out or sys.stdout)
