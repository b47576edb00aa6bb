"""Replay the fuzz corpus (tests/fuzz/corpus/HARNESS/*) through the fuzz harnesses, without atheris.

Every checked-in input must end in messages or an npipes error, within the
harness's bounds (tests/fuzz/harnesses.py says what each harness checks), so
the normal suite keeps what the fuzzer found. Fuzzing itself: tests/fuzz/run.py.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent / "fuzz"
CORPUS = FUZZ / "corpus"


def _load_harnesses() -> tuple[dict[str, object], dict[str, str]]:
    spec = importlib.util.spec_from_file_location("npipes_fuzz_harnesses", FUZZ / "harnesses.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module.HARNESSES, module.KNOWN


HARNESSES, KNOWN = _load_harnesses()


def _cases() -> list[object]:
    cases: list[object] = []
    for path in sorted(CORPUS.glob("*/*")):
        rel = path.relative_to(CORPUS).as_posix()
        marks = []
        if rel in KNOWN:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN[rel]))
        cases.append(pytest.param(path, id=rel, marks=marks))
    return cases


def test_every_harness_has_a_corpus() -> None:
    for name in HARNESSES:
        assert any((CORPUS / name).iterdir()), f"tests/fuzz/corpus/{name} is empty"
    assert {p.name for p in CORPUS.iterdir()} == set(HARNESSES)


def test_corpus_is_small() -> None:
    total = sum(p.stat().st_size for p in CORPUS.glob("*/*"))
    assert total < 200 * 1024, f"the fuzz corpus is {total} bytes; keep it under 200 KiB"


@pytest.mark.parametrize("path", _cases())
def test_corpus_input(path: Path) -> None:
    HARNESSES[path.parent.name](path.read_bytes())  # type: ignore[operator]
