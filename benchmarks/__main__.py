"""``python -m benchmarks [--quick] [--only NAME,...] [--sizes ...] [--out DIR]``: the full run.

Also runs as a file, ``python benchmarks/__main__.py ...``, for interpreters
that keep the working directory off ``sys.path`` (the embeddable Windows
Python under Wine: ``tools/wine-pytest --python benchmarks/__main__.py``).
Results go to ``benchmarks/results/`` by default; see docs/performance.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    if not __package__:  # run as a file: make the checkout root importable
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import main

    sys.exit(main())
