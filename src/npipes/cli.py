"""The ``npipes`` command: ``demo``, ``send``, ``recv``.

Built on the public API only. ``main(argv)`` returns the exit code, so tests
call it in-process.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from ._framings import FRAMINGS
from .errors import NpipesError
from .ipc import DEFAULT_NAME, IPC

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="npipes", description="Message passing between processes over named pipes."
    )
    parser.add_argument("--version", action="version", version=f"npipes {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="start a second process, say Hello, measure speed")
    demo.add_argument("--peer", metavar="NAME", help=argparse.SUPPRESS)

    bench = sub.add_parser(
        "bench",
        help="quick benchmark against a raw socket loop and other IPC libraries",
        description="A quick run of the benchmark suite (python -m benchmarks for the full one).",
    )
    bench.add_argument("args", nargs=argparse.REMAINDER, help="options passed to the suite")

    for command, text in (
        ("send", "send one message (either side may start first)"),
        ("recv", "receive messages and print them (either side may start first)"),
    ):
        p = sub.add_parser(command, help=text)
        p.add_argument("--name", default=DEFAULT_NAME, help=f"pipe name (default {DEFAULT_NAME})")
        p.add_argument("--crc", action="store_true", help="add/require a CRC-32")
        p.add_argument("--timeout", type=float, default=None, help="seconds to wait")
        p.add_argument(
            "--framing",
            default="npipes",
            choices=sorted(FRAMINGS),
            help="wire format (default npipes; lines for shells, npipes1 for 1.x programs)",
        )
        if command == "send":
            p.add_argument("message", help="the text to send")
        else:
            p.add_argument("--count", type=int, default=1, help="messages to receive (0: forever)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "bench":
            from . import _bench

            return _bench.main(args.args, quick=True)
        if args.command == "demo":
            from . import _demo

            if args.peer:
                return _demo.run_peer(args.peer)
            return _demo.run()
        with IPC(args.name, timeout=args.timeout, framing=args.framing) as ipc:
            if args.command == "send":
                ipc.send_message(args.message, crc=args.crc)
                return 0
            received = 0
            while args.count == 0 or received < args.count:
                message = ipc.receive_message(crc=args.crc)
                print(message if isinstance(message, str) else repr(message), flush=True)
                received += 1
            return 0
    except NpipesError as exc:
        print(f"npipes: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # an option the framing cannot do, e.g. --crc with lines
        print(f"npipes: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
