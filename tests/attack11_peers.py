"""Victims for tests/test_attack11_*.py, run as ``python attack11_peers.py MODE ARGS...``.

Each prints one line per step (flushed), so the test waits for lines, not sleeps.
"""

from __future__ import annotations

import sys


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _peak_kib() -> int:
    import resource  # POSIX only: imported here, never at module level

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def ipc_send_while_flooded(name: str, timeout: float) -> None:
    """An IPC sender (limit 1 MiB) waiting for its ack while the peer floods it.

    Prints ``connected``, then ``<outcome> <peak RSS growth in KiB>``.
    """
    from npipes.errors import NpipesError
    from npipes.ipc import IPC

    base = _peak_kib()
    with IPC(name, timeout=timeout, max_message_size=1 << 20) as ipc:
        say("connected")
        try:
            ipc.send_message(b"x")
            outcome = "sent"
        except NpipesError as exc:
            outcome = type(exc).__name__
        say(f"{outcome} {_peak_kib() - base}")


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "ipc-send-while-flooded":
        ipc_send_while_flooded(args[0], float(args[1]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
