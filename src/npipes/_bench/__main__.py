"""``python -m npipes._bench``: the full run, where ``benchmarks/`` is not importable."""

from __future__ import annotations

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
