"""Error messages print durations rounded, through one formatter (issue 14: a
timeout read ``0.9999977959998887 s`` after arithmetic on a deadline)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from npipes._deadline import seconds

SRC = Path(__file__).parent.parent / "src" / "npipes"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.9999977959998887, "1 s"),
        (1.0, "1 s"),
        (0.25, "0.25 s"),
        (2.5004, "2.5 s"),
        (0.0004, "0.0004 s"),
        (0.0, "0 s"),
        (120.4, "120 s"),
        (None, "no time limit"),
    ],
)
def test_seconds_rounds_for_people(value: float | None, text: str) -> None:
    assert seconds(value) == text


def test_no_message_formats_a_raw_duration() -> None:
    """Every ``... {timeout} s`` in the library goes through ``seconds()``."""
    raw = re.compile(r"\{[^{}]*(?:timeout|remaining|deadline)[^{}]*\} s\b")
    found = [
        f"{path.relative_to(SRC)}:{n}: {line.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if raw.search(line)
    ]
    assert found == []
