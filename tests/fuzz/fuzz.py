"""Run one harness under atheris: ``python tests/fuzz/fuzz.py NAME [libFuzzer options] [dirs]``.

npipes is imported under atheris' instrumentation, so coverage guides the
mutations. Needs atheris (a venv of its own: see tests/fuzz/run.py).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["npipes"]):
    import harnesses  # tests/fuzz is the script's directory, so first on sys.path


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in harnesses.HARNESSES:
        sys.exit(f"usage: fuzz.py {{{','.join(harnesses.HARNESSES)}}} [libFuzzer options]")
    harness = harnesses.HARNESSES[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], harness)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
