"""Test-only launcher for ``npipes bridge`` (until npipes.cli calls it): the common
options the CLI adds (--name, --framing, --crc, --timeout, -v) plus the bridge's own."""

from __future__ import annotations

import argparse
import sys

from npipes import bridge


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="npipes bridge")
    parser.add_argument("--name", default="IPC_PIPE_DEFAULT")
    parser.add_argument("--framing", default="npipes")
    parser.add_argument("--crc", action="store_true")
    parser.add_argument("--timeout", type=float, default=None)
    parser.add_argument("-v", "--verbose", action="store_true")
    bridge.add_arguments(parser)
    return bridge.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
