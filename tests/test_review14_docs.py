"""Review of issue 14's sample runner: a failing shell sample must not count as passing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from doc_samples import blocks
from test_doc_samples import _command

pytestmark = pytest.mark.posix


@pytest.mark.skipif(shutil.which("bash") is None, reason="shell samples run with bash")
def test_a_failing_command_before_a_pipe_fails_the_sample(tmp_path: Path) -> None:
    """``npipes recv ... | od`` in docs/cli.md: recv failing must fail the sample, not od's 0."""
    doc = tmp_path / "page.md"
    doc.write_text("<!-- sample: g recv -->\n```sh\nfalse | cat\n```\n", encoding="utf-8")
    (block,) = blocks(doc)
    argv, _ = _command(block, block.code, tmp_path)
    done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    assert done.returncode != 0


def test_the_bytes_pipeline_sample_checks_its_output() -> None:
    """docs/cli.md's bytes sample says what it prints; the marker must check it."""
    doc = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
    (recv,) = [b for b in blocks(doc) if (b.group, b.part) == ("bytes", "recv")]
    assert recv.prints == ["61 00 62 ff"]
