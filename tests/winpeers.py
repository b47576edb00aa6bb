"""Peer processes for the Windows-only tests (raw pywin32, no npipes on their side)."""

from __future__ import annotations

import multiprocessing.synchronize

import win32file
import win32pipe


def hold_raw_pipe(
    path: str, ready: multiprocessing.synchronize.Event, done: multiprocessing.synchronize.Event
) -> None:
    """Own ``path`` with a plain CreateNamedPipe (a foreign server) until ``done``."""
    handle = win32pipe.CreateNamedPipe(
        path,
        win32pipe.PIPE_ACCESS_DUPLEX,
        win32pipe.PIPE_TYPE_MESSAGE | win32pipe.PIPE_READMODE_MESSAGE | win32pipe.PIPE_WAIT,
        win32pipe.PIPE_UNLIMITED_INSTANCES,
        65536,
        65536,
        0,
        None,
    )
    ready.set()
    done.wait(60)
    win32file.CloseHandle(handle)
