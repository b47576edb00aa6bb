"""The ``npipes`` command: ``demo``, ``send``, ``recv``.

Built on the public API only. ``main(argv)`` returns the exit code, so tests
call it in-process.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from ._framings import FRAMINGS, get_codec
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
        help="quick benchmark against raw sockets and other IPC (from a source checkout)",
        # Every argument, --help included, goes to the harness ("+": none is ours).
        prefix_chars="+",
        add_help=False,
    )
    bench.add_argument("args", nargs=argparse.REMAINDER)

    for command, text in (
        (
            "send",
            "send one message; with the default framing, wait until a receiver took it"
            " (either side may start first)",
        ),
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
            # The harness is not in the wheel: run the checkout's benchmarks/ (next to src/).
            import importlib
            from pathlib import Path

            root = Path(__file__).resolve().parents[2]
            if not (root / "benchmarks" / "__init__.py").is_file():
                print(
                    "npipes bench: the benchmark harness is not installed with npipes; it is in"
                    " the source repository. From a checkout: python -m benchmarks --quick"
                    " (or npipes bench, with npipes imported from that checkout's src/).",
                    file=sys.stderr,
                )
                return 2
            if str(root) not in sys.path:  # spawned children inherit sys.path
                sys.path.insert(0, str(root))
            harness = importlib.import_module("benchmarks")
            return int(harness.main(args.args, quick=True))
        if args.command == "demo":
            from . import _demo

            if args.peer:
                return _demo.run_peer(args.peer)
            return _demo.run()
        if args.crc and not get_codec(args.framing).supports_crc:
            # Refuse before anything waits for a peer.
            print(
                f"npipes: --crc needs a framing with a checksum (npipes or npipes1);"
                f" {args.framing} has none: drop --crc or choose another --framing",
                file=sys.stderr,
            )
            return 2
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
