"""``python -m benchmarks [--quick] [--only NAME,...] [--sizes ...] [--out DIR]``: the full run.

The harness ships inside npipes (``npipes._bench``, also ``npipes bench``
for a quick run); this entry point only calls it. Results go to
``benchmarks/results/`` by default; see docs/performance.md.
"""

from __future__ import annotations

import sys

from npipes._bench import main

if __name__ == "__main__":
    sys.exit(main())
