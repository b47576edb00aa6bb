"""npipes._buffers.allocate: the receive buffers of every decoder, at and beyond its limits."""

from __future__ import annotations

import pytest

from npipes._buffers import _MIN_INPLACE, MAX_SIZE, allocate


@pytest.mark.parametrize("size", [-1, MAX_SIZE + 1])
def test_impossible_sizes_raise_memory_error(size: int) -> None:
    with pytest.raises(MemoryError, match=f"cannot allocate {size} bytes"):
        allocate(size)


@pytest.mark.parametrize("size", [0, 1, _MIN_INPLACE - 1, _MIN_INPLACE, 3 * _MIN_INPLACE + 5])
def test_the_view_writes_into_the_object(size: int) -> None:
    obj, view = allocate(size)
    assert len(obj) == size
    assert len(view) == size
    view[:] = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    assert bytes(obj) == bytes(view)
