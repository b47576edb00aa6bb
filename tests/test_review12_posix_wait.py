"""Review of issue 12, ``npipes.wait`` on POSIX: Ctrl+C as it starts watching a listener.

``wait`` counts itself among a listener's waiters (so ``close()`` keeps the
wake-up pipe open while a wait watches it). A Ctrl+C landing as the listener
counted it, before the wait recorded that, left the count up for ever: the
listener's close() then never closed its wake-up pipe (two descriptors leaked
per interrupted wait). A profile hook raises it at exactly that point: the
socket and the signal are real; only the timing is pinned.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import npipes

pytestmark = pytest.mark.posix

WAIT = 30.0


@contextlib.contextmanager
def _ctrl_c_as_start_wait_returns() -> Iterator[None]:
    fired = False

    def hook(frame: Any, event: str, arg: Any) -> None:
        nonlocal fired
        if event == "return" and frame.f_code.co_name == "_start_wait" and arg and not fired:
            fired = True
            sys.setprofile(None)
            _thread.interrupt_main()

    sys.setprofile(hook)
    try:
        yield
    finally:
        sys.setprofile(None)
    assert fired, "wait never started watching the listener"


def test_ctrl_c_as_wait_starts_watching_a_listener_leaks_no_descriptor(pipe_name: str) -> None:
    listener = npipes.listen(pipe_name)
    raw = listener._raw
    with pytest.raises(KeyboardInterrupt), _ctrl_c_as_start_wait_returns():
        npipes.wait([listener], timeout=WAIT)
    wake = (raw._wake_r, raw._wake_w)
    with npipes.connect(pipe_name, timeout=WAIT) as client:
        client.send(b"hello")
        assert npipes.wait([listener], timeout=WAIT) == [listener]
        with listener.accept(timeout=WAIT) as server:
            assert server.recv(timeout=WAIT) == b"hello"
    listener.close()
    assert raw._waiters == 0, "the interrupted wait still counts as a waiter"
    for fd in wake:
        with pytest.raises(OSError, match=r"Errno 9\b"):  # EBADF
            os.fstat(fd)  # closed with the listener
