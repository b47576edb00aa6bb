"""Run, then write the JSON, the Markdown and the plots, and print the Markdown."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from . import contenders, plots
from .config import parse_args
from .machine import wine_version
from .markdown import render
from .runner import run, select
from .samples import read_json, write_json
from .summary import Summary

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path
    from typing import TextIO

    from .samples import Results

__all__ = ["run_and_report", "stem"]


def stem(*, quick: bool) -> str:
    """The output files' common name: ``bench-linux``, ``bench-windows-wine-quick``..."""
    if sys.platform == "win32":
        where = "windows-wine" if wine_version() else "windows"
    else:
        where = sys.platform
    return f"bench-{where}{'-quick' if quick else ''}"


def _list(out: TextIO) -> int:
    for name, reason in select(None):
        contender = contenders.create(name) if reason is None else None
        what = contender.summary if contender is not None else f"skipped: {reason}"
        out.write(f"{name:16} {what}\n")
    return 0


def _write(results: Results, out_dir: Path, name: str, *, draw: bool, out: TextIO) -> list[Path]:
    """Write the Markdown (and print it) and the plots; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = Summary(results)
    markdown = render(summary)
    md_path = out_dir / f"{name}.md"
    md_path.write_text(markdown, encoding="utf-8")
    out.write("\n" + markdown + "\n")
    written = [md_path]
    if draw:
        reason = plots.unavailable()
        if reason is None:
            written += plots.draw(summary, out_dir, name)
        else:
            out.write(f"no plots: {reason}\n")
    return written


def run_and_report(argv: Sequence[str] | None, *, quick: bool, out: TextIO) -> int:
    config, args = parse_args(argv, quick=quick)
    if args.list:
        return _list(out)
    if args.report_from is not None:
        results = read_json(args.report_from)
        name = args.report_from.stem
        written = _write(results, config.out, name, draw=config.plots, out=out)
        out.write("wrote " + ", ".join(str(p) for p in written) + "\n")
        return 0
    try:
        select(config.only)
    except ValueError as exc:
        out.write(f"npipes bench: {exc}\n")
        return 2
    results = run(config, out)
    config.out.mkdir(parents=True, exist_ok=True)
    name = stem(quick=config.quick)
    json_path = config.out / f"{name}.json"
    write_json(results, json_path)
    written = [json_path, *_write(results, config.out, name, draw=config.plots, out=out)]
    out.write("wrote " + ", ".join(str(p) for p in written) + "\n")
    failed = [c.name for c in results.contenders if c.status == "failed"]
    return 1 if failed or not results.ran() else 0
