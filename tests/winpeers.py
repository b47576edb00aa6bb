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


def write_one_message(path: str, size: int) -> None:
    """Connect to ``path`` and write one pipe message of ``size`` bytes, then wait to be read."""
    import pywintypes

    handle = win32file.CreateFile(
        path,
        win32file.GENERIC_READ | win32file.GENERIC_WRITE,
        0,
        None,
        win32file.OPEN_EXISTING,
        0,
        None,
    )
    try:
        win32file.WriteFile(handle, b"m" * size)  # returns once the reader took it, or broke
    except pywintypes.error:
        pass  # the server refused the rest of the message and closed
    finally:
        win32file.CloseHandle(handle)
