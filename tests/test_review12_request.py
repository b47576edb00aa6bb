"""Review of issue 12, request/reply: a Ctrl+C right as the request went out.

``request()`` counts a request whose reply is owed once its frame went out, so
a caller that gives up leaves its late reply to be skipped. A Ctrl+C landing
after the frame went out but before it was counted made the next request take
the abandoned one's reply. A profile hook raises it at exactly that point (the
moment the write returns): the sockets or pipes and the server are real; only
the timing is pinned.
"""

from __future__ import annotations

import _thread
import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import npipes

WAIT = 30.0


@contextlib.contextmanager
def _ctrl_c_as_request_sent() -> Iterator[None]:
    """Deliver Ctrl+C (once) as the request's write returns (the frame went out)."""
    fired = False

    def hook(frame: Any, event: str, arg: Any) -> None:
        nonlocal fired
        if (
            event == "return"
            and frame.f_code.co_name == "_write"
            and frame.f_back is not None
            and frame.f_back.f_code.co_name == "_request_once"
            and not fired
        ):
            fired = True
            sys.setprofile(None)
            _thread.interrupt_main()

    sys.setprofile(hook)
    try:
        yield
    finally:
        sys.setprofile(None)
    assert fired, "the request was never written"


def test_ctrl_c_as_the_request_went_out_leaves_its_reply_to_be_skipped(pipe_name: str) -> None:
    with npipes.serve(pipe_name, respond=lambda m: b"re:" + m) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        with npipes.connect(pipe_name, timeout=WAIT, wait_for_listener=True) as conn:
            with pytest.raises(KeyboardInterrupt), _ctrl_c_as_request_sent():
                conn.request(b"abandoned", timeout=WAIT)
            assert not conn.closed
            assert conn.request(b"mine", timeout=WAIT) == b"re:mine"
            assert conn.request(b"next", timeout=WAIT) == b"re:next"
        server.close()
        thread.join(WAIT)
