"""A scripted ``IPC`` peer for the delivery tests: ``python ipc_peer.py NAME TIMEOUT STEP...``.

It builds ``IPC(NAME, timeout=TIMEOUT)``, prints ``ready``, then runs each step
and prints one line per step, flushing each, so a test can wait for lines
instead of sleeping:

- ``send:TEXT`` / ``sendcrc:TEXT`` / ``sendbytes:TEXT`` / ``sendbig:MIB``
  (that many MiB of bytes): ``send_message`` -> ``sent``, or
  ``timeout <exc.timeout>``, or ``error <ExceptionName>``.
- ``recv`` / ``recvcrc``: ``receive_message`` -> ``got <repr>``, or as above.
- ``wait``: wait for a line on stdin (the test's go signal) -> ``go``.

It ends with ``os._exit(0)``: no ``close()``, no finalizers, so whatever
``send_message`` returned from must already be on its way.
"""

from __future__ import annotations

import os
import sys

import npipes
from npipes.ipc import IPC


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> None:
    name, timeout, steps = argv[0], float(argv[1]), argv[2:]
    ipc = IPC(name, timeout=timeout)
    _say("ready")
    for step in steps:
        action, _, text = step.partition(":")
        try:
            if action in ("send", "sendcrc"):
                ipc.send_message(text, crc=action == "sendcrc")
                _say("sent")
            elif action == "sendbytes":
                ipc.send_message(text.encode())
                _say("sent")
            elif action == "sendbig":
                ipc.send_message(bytes(int(text) << 20))
                _say("sent")
            elif action in ("recv", "recvcrc"):
                _say(f"got {ipc.receive_message(crc=action == 'recvcrc')!r}")
            elif action == "wait":
                sys.stdin.readline()
                _say("go")
            else:
                raise SystemExit(f"unknown step {step!r}")
        except npipes.PipeTimeoutError as exc:
            _say(f"timeout {exc.timeout}")
        except npipes.NpipesError as exc:
            _say(f"error {type(exc).__name__}")
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
