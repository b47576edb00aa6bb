"""Shared fixtures: a unique pipe name per test, and platform markers."""

from __future__ import annotations

import itertools
import os
import sys
import uuid

import pytest

IS_WINDOWS = sys.platform == "win32"
_counter = itertools.count()


@pytest.fixture
def pipe_name() -> str:
    """A pipe name no other test (or test run) uses."""
    return f"t{os.getpid()}-{next(_counter)}-{uuid.uuid4().hex[:8]}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "posix" in item.keywords and IS_WINDOWS:
            item.add_marker(pytest.mark.skip(reason="POSIX-only behaviour (Unix sockets, uids)"))
        if "windows" in item.keywords and not IS_WINDOWS:
            item.add_marker(pytest.mark.skip(reason="Windows-only behaviour (named pipes)"))
