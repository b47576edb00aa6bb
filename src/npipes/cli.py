"""The ``npipes`` command: send, recv, serve, ping, ls, clean, where, bridge, demo, bench.

Built on the public API only (``npipes.connect``/``listen``/``serve`` and the
:class:`~npipes.ipc.IPC` facade): the command has no wire rule of its own.
``main(argv)`` returns the exit code, so tests may call it in-process; the
reference (every option, the exit codes, examples) is docs/cli.md.

Errors print one line on stderr, ``npipes COMMAND: what happened; what to do``,
never a traceback. :func:`exit_code` is the one mapping from errors to exit
codes. Impossible option combinations are refused (exit 2) by :func:`_check`
before anything waits for a peer.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import __version__
from ._cli_commands import COMMANDS, MAX_REPLY, TEXT_ONLY, OutputClosed, UsageError
from ._framings import FRAMINGS, get_codec
from .errors import ChecksumError, InvalidPipeNameError, NpipesError
from .ipc import DEFAULT_NAME

__all__ = [
    "EXIT_CHECKSUM",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_PERMISSION",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "exit_code",
    "main",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3
EXIT_NOT_FOUND = 4
EXIT_PERMISSION = 5
EXIT_CHECKSUM = 6
EXIT_INTERRUPTED = 130
_EXIT_SIGPIPE = 141  # stdout's reader left (recv | head -1): what a shell reports for cat


def exit_code(exc: BaseException) -> int:
    """The exit code for an error that ended a command (docs/cli.md, "Exit codes").

    npipes errors also derive from the builtin exceptions (errors.py), so the
    builtin classes decide: a missing ``--file`` is "not found" like a missing pipe.
    """
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, UsageError | InvalidPipeNameError):
        return EXIT_USAGE
    if isinstance(exc, ChecksumError):
        return EXIT_CHECKSUM
    if isinstance(exc, TimeoutError):
        return EXIT_TIMEOUT
    if isinstance(exc, FileNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(exc, PermissionError):
        return EXIT_PERMISSION
    return EXIT_ERROR


def one_line(exc: BaseException) -> str:
    """The error as one line (the library's messages already round durations:
    ``_deadline.seconds``)."""
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"pipe name (default {DEFAULT_NAME})")
    parser.add_argument(
        "--framing",
        default="npipes",
        choices=sorted(FRAMINGS),
        help="wire format (default npipes; lines for shells, npipes1 for 1.x programs)",
    )
    parser.add_argument("--crc", action="store_true", help="add and require a CRC-32")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds each wait may take (default: wait as long as it takes)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log connect, accept and close on stderr",
    )


def _parser(with_bridge: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="npipes",
        description="Message passing between processes over named pipes (docs/cli.md).",
    )
    parser.add_argument("--version", action="version", version=f"npipes {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    p = sub.add_parser(
        "send",
        help="send one message (MESSAGE, stdin with -, or --file); either side may start first",
    )
    _common(p)
    p.add_argument("message", nargs="?", metavar="MESSAGE | -", help="text to send; - reads stdin")
    p.add_argument("--file", metavar="PATH", help="send the bytes of this file")
    p.add_argument("--binary", action="store_true", help="send a bytes message, not text")
    p.add_argument(
        "--connect",
        action="store_true",
        help="connect to a listening program (plain message, no IPC pairing); fail if none",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="like --connect, but wait (up to --timeout) for the listener to appear",
    )

    p = sub.add_parser("recv", help="receive messages and print them")
    _common(p)
    p.add_argument(
        "--count", type=int, default=1, metavar="N", help="messages to receive (0: forever)"
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON object a line")
    out.add_argument("--binary", action="store_true", help="raw payload bytes to stdout")
    p.add_argument(
        "--connect",
        action="store_true",
        help="connect to a listening program (waiting up to --timeout) instead of pairing",
    )

    p = sub.add_parser("serve", help="answer every message: --echo, or through --exec CMD")
    _common(p)
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--echo", action="store_true", help="send each message back")
    how.add_argument(
        "--exec",
        metavar="CMD",
        dest="exec_cmd",
        help="pipe each message through CMD (its stdout is the reply)",
    )
    p.add_argument(
        "--max-clients", type=int, default=64, metavar="N", help="clients served at once"
    )
    p.add_argument(
        "--max-reply",
        type=int,
        default=MAX_REPLY,
        metavar="BYTES",
        help=f"--exec: largest CMD output sent back; past it CMD is killed (default {MAX_REPLY})",
    )

    p = sub.add_parser("ping", help="round trips against an echo peer (npipes serve --echo)")
    _common(p)
    p.add_argument("--count", type=int, default=4, metavar="N", help="round trips (0: forever)")
    p.add_argument("--size", type=int, default=56, metavar="BYTES", help="message size")
    p.add_argument(
        "--interval", type=float, default=0.0, metavar="SECONDS", help="pause between trips"
    )

    p = sub.add_parser("ls", help="list this user's endpoints: alive or stale, pid, owner")
    _common(p)
    p.add_argument("--json", action="store_true", help="a JSON array")

    p = sub.add_parser("clean", help="remove stale endpoints (never live ones)")
    _common(p)
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")

    p = sub.add_parser("where", help="print the OS address of a name (for socat, C, .NET)")
    _common(p)
    p.add_argument("where_name", nargs="?", metavar="NAME", help="the name (default --name)")
    p.add_argument(
        "--dotnet",
        action="store_true",
        help="where .NET puts the pipe NAME (POSIX: $TMPDIR/CoreFxPipe_NAME; docs/dotnet.md)",
    )

    p = sub.add_parser(
        "bridge", help="relay a local endpoint onto ZeroMQ (docs/beyond-one-machine.md)"
    )
    _common(p)
    if not with_bridge:  # only `npipes bridge ...` loads npipes.bridge (and what it imports)
        p.set_defaults(bridge_unavailable=True)
        return parser
    try:
        from . import bridge
    except ImportError:
        # Its options are unknown then: main() lets them through, and running the
        # bridge raises the ImportError again, mapped to the install hint.
        p.set_defaults(bridge_unavailable=True)
    else:
        bridge.add_arguments(p)
    return parser


def _check(args: argparse.Namespace) -> None:
    """Refuse impossible combinations at once, before any wait (exit 2)."""
    codec = get_codec(args.framing)
    if args.crc and not codec.supports_crc:
        raise UsageError(
            f"--crc needs a framing with a checksum (npipes or npipes1); {args.framing}"
            " has none: drop --crc or choose another --framing"
        )
    if args.timeout is not None and not args.timeout >= 0:
        raise UsageError(f"--timeout must be a number of seconds >= 0, not {args.timeout}")
    if getattr(args, "count", 0) < 0:
        raise UsageError(f"--count must be >= 0 (0: forever), not {args.count}")
    command = args.command
    if command == "send":
        sources = (args.message is not None) + (args.file is not None)
        if sources != 1:
            raise UsageError(
                "give exactly one of MESSAGE, - (stdin) or --file PATH"
                + (" (not both)" if sources else "")
            )
        if args.binary and args.framing in TEXT_ONLY:
            raise UsageError(
                f"--binary needs a framing that carries bytes; {args.framing} carries"
                " only text: drop --binary or choose another --framing"
            )
    if command == "serve" and args.max_clients < 1:
        raise UsageError(f"--max-clients must be >= 1, not {args.max_clients}")
    if command == "serve" and args.max_reply < 0:
        raise UsageError(f"--max-reply must be >= 0 bytes, not {args.max_reply}")
    if command == "ping":
        if args.size < 0:
            raise UsageError(f"--size must be >= 0 bytes, not {args.size}")
        if not args.interval >= 0:
            raise UsageError(f"--interval must be >= 0 seconds, not {args.interval}")


def _setup_logging(verbose: bool) -> None:
    if not verbose:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("npipes: %(name)s: %(message)s"))
    logger = logging.getLogger("npipes")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)


def _bench(args: argparse.Namespace) -> int:
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
        return EXIT_USAGE
    if str(root) not in sys.path:  # spawned children inherit sys.path
        sys.path.insert(0, str(root))
    harness = importlib.import_module("benchmarks")
    return int(harness.main(args.args, quick=True))


def _bridge(args: argparse.Namespace) -> int:
    try:
        from . import bridge

        return bridge.run(args)
    except ImportError as exc:
        if "zmq" in (exc.name or str(exc)):
            raise UsageError(
                "npipes bridge needs pyzmq: pip install 'npipes[bridge]'", code=EXIT_ERROR
            ) from exc
        raise
    except Exception as exc:
        # ZeroMQ's own errors (a port in use, a bad endpoint): one line, exit 1.
        if type(exc).__module__.split(".")[0] != "zmq":
            raise
        raise UsageError(f"ZeroMQ: {exc}", code=EXIT_ERROR) from exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser(with_bridge="bridge" in argv)
    args, extra = parser.parse_known_args(argv)
    command: str = args.command
    if extra and not (command == "bridge" and getattr(args, "bridge_unavailable", False)):
        parser.parse_args(argv)  # exits 2 naming the unrecognized arguments
    if command == "bench":
        return _bench(args)
    if command == "demo":
        from . import _demo

        if args.peer:
            return _demo.run_peer(args.peer)
        return _demo.run()
    _setup_logging(args.verbose)
    try:
        _check(args)
        if command == "bridge":
            return _bridge(args)
        return COMMANDS[command](args)
    except KeyboardInterrupt:
        print(f"npipes {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as exc:
        print(f"npipes {command}: {one_line(exc)}", file=sys.stderr)
        return exc.code
    except OutputClosed:
        return _EXIT_SIGPIPE
    except (NpipesError, OSError, ValueError, TypeError, NotImplementedError) as exc:
        print(f"npipes {command}: {one_line(exc)}", file=sys.stderr)
        if isinstance(exc, (ValueError, TypeError)) and not isinstance(exc, NpipesError):
            return EXIT_USAGE  # an option the library refused before any I/O
        return exit_code(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
