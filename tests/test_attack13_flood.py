"""Attack (issue 13): floods of small and empty frames against the fast paths
(``take_messages``/``parse_frames``, the aio wake-without-decode path, the scratch
read buffer): a real listener in another process must keep its memory bounded by
its read buffer and ``READ_AHEAD``, whatever ``max_messages`` asks for, accelerated
and pure.
"""

from __future__ import annotations

import pytest

from npipes._protocol import ITEM_COST, READ_AHEAD
from test_attack13_wire import MODES, frame, run_receiver

pytestmark = pytest.mark.posix

COUNT = 300_000
READ_BUFFER_BOUND = 1 << 20  # the read buffer: 64 KiB normally, one 256 KiB aio read at most
BATCH_BOUND = (READ_AHEAD // ITEM_COST) + READ_BUFFER_BOUND // 16  # messages in one recv_many
HWM_BOUND_KIB = 48 * 1024


@pytest.mark.parametrize("pure", [m == "pure" for m in MODES], ids=MODES)
@pytest.mark.parametrize(
    "opts",
    [
        {"mode": "sync", "api": "recv"},
        {"mode": "sync", "api": "recv_many"},
        {"mode": "aio", "api": "recv"},
        {"mode": "aio", "api": "recv", "yield": True},
        {"mode": "aio", "api": "recv_many"},
        {"mode": "aio", "api": "recv_many", "yield": True},
        {"mode": "sync", "api": "recv_many", "wait_first": 1.0},
        {"mode": "aio", "api": "recv_many", "wait_first": 1.0},
    ],
    ids=lambda o: "-".join(str(v) for v in o.values()),
)
@pytest.mark.parametrize("size", [0, 7])
def test_small_frame_flood_stays_bounded(
    pipe_name: str, opts: dict[str, object], pure: bool, size: int
) -> None:
    stream = frame(b"x" * size) * COUNT
    got = run_receiver(pipe_name, {**opts, "quiet": True}, stream, pure=pure)
    counts, end, closed = got[-2], got[-1]["end"], got[-3]
    assert closed == {"err": ["ConnectionClosedError", "OPEN"]}, got
    assert counts["count"] == COUNT, got
    assert counts["max_batch"] <= BATCH_BOUND, got
    _, buf, ready, hwm_kib = end
    assert buf <= READ_BUFFER_BOUND, got
    assert ready <= READ_AHEAD + ITEM_COST + size, got
    assert hwm_kib <= HWM_BOUND_KIB, got


@pytest.mark.parametrize("pure", [m == "pure" for m in MODES], ids=MODES)
@pytest.mark.parametrize("mode", ["sync", "aio"])
@pytest.mark.parametrize("pattern", ["large", "large-then-empty", "large-crc"])
def test_header_alone_reads_cost_a_bounded_number_of_reads(
    pipe_name: str, mode: str, pure: bool, pattern: str
) -> None:
    """After a large frame the next header is read alone (no copy of the next large
    payload): a peer cannot turn that into more than a few reads per large frame."""
    count = 200
    if pattern == "large":
        unit = frame(b"L" * 32768)
    elif pattern == "large-crc":
        unit = frame(b"L" * 32768, crc=True)
    else:
        unit = frame(b"L" * 32768) + frame(b"")
    frames = count * (2 if pattern == "large-then-empty" else 1)
    got = run_receiver(pipe_name, {"mode": mode, "quiet": True}, unit * count, pure=pure)
    counts = got[-2]
    assert counts["count"] == frames, got
    assert counts["reads"] <= 4 * count + 8, got
