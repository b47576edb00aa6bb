"""The benchmark harness runs end to end and writes what it promises (no timing checks)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import npipes
from benchmarks import main
from benchmarks.config import format_size, parse_args, parse_size
from benchmarks.runner import select

BASELINE = "raw-pywin32" if sys.platform == "win32" else "raw-socket"
SIZES = (64, 1024)
SRC = Path(npipes.__file__).resolve().parents[1]  # the src/ folder of the npipes under test
ROOT = Path(__file__).resolve().parents[1]  # the checkout: benchmarks/ is here, not in src/


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh python with only ``src`` and the stdlib importable from here.

    ``-P`` keeps the working directory off ``sys.path`` (as the embeddable Windows
    Python does under Wine), so only the code decides where ``benchmarks`` comes from.
    """
    return subprocess.run(
        [sys.executable, "-P", "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


def _outputs(out: Path) -> tuple[dict[str, object], str]:
    (json_path,) = out.glob("bench-*-quick.json")
    (md_path,) = out.glob("bench-*-quick.md")
    assert json_path.stem == md_path.stem
    assert not list(out.glob("*.png"))  # --no-plots
    return json.loads(json_path.read_text(encoding="utf-8")), md_path.read_text(encoding="utf-8")


def test_quick_run_writes_json_and_markdown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--repeats", "1", "--sizes", "64,1K", "--only", f"npipes,{BASELINE}"]
    argv += ["--time", "0.02", "--memory-size", "1M", "--no-plots", "--out", str(tmp_path)]
    assert main(argv, quick=True) == 0

    data, markdown = _outputs(tmp_path)
    assert data["schema"] == "npipes-bench/1"
    assert data["baseline"] == BASELINE
    machine = data["machine"]
    assert isinstance(machine, dict)
    assert {"date", "platform", "cpu_count", "python"} <= machine.keys()
    config = data["config"]
    assert isinstance(config, dict)
    assert config["repeats"] == 1
    assert config["throughput_sizes"] == list(SIZES)

    contenders = data["contenders"]
    assert isinstance(contenders, list)
    assert {c["name"]: c["status"] for c in contenders} == {"npipes": "ran", BASELINE: "ran"}
    assert all(c["versions"] or c["name"] == BASELINE for c in contenders)

    expected = {(name, size) for name in ("npipes", BASELINE) for size in SIZES}
    latency, throughput, memory = data["latency"], data["throughput"], data["memory"]
    assert isinstance(latency, list)
    assert isinstance(throughput, list)
    assert isinstance(memory, list)
    assert {(s["contender"], s["size"]) for s in latency} == expected
    assert {(s["contender"], s["size"]) for s in throughput} == expected
    for s in latency:
        assert 0 < s["min_us"] <= s["median_us"] <= s["p99_us"] <= s["max_us"]
        assert s["count"] >= 1
    for s in throughput:
        assert s["seconds"] > 0
        assert s["mb_per_s"] == pytest.approx(s["size"] * s["count"] / s["seconds"] / 1e6)
    assert {m["contender"] for m in memory} == {"npipes", BASELINE}
    assert all(m["size"] == 1 << 20 for m in memory)

    for heading in ("### Round trip, median us", "### One-way throughput, MB/s", "### Targets"):
        assert heading in markdown
    assert "| contender | 64 B | 1 KiB |" in markdown
    assert f"| **{BASELINE}** |" in markdown
    assert "| npipes |" in markdown
    assert markdown in capsys.readouterr().out  # the report is also printed

    # The report can be rendered again from the JSON alone (e.g. on another machine).
    (json_path,) = tmp_path.glob("bench-*-quick.json")
    again = tmp_path / "again"
    assert main(["--report-from", str(json_path), "--no-plots", "--out", str(again)]) == 0
    assert (again / f"{json_path.stem}.md").read_text(encoding="utf-8") == markdown


def test_sizes_parse_and_print() -> None:
    assert [parse_size(s) for s in ("64", "1K", "64KiB", "16M", "1m")] == [
        64,
        1024,
        65536,
        16 << 20,
        1 << 20,
    ]
    assert [format_size(n) for n in (64, 1024, 65536, 1 << 20, 1000)] == [
        "64 B",
        "1 KiB",
        "64 KiB",
        "1 MiB",
        "1000 B",
    ]


def test_quick_defaults_and_size_options() -> None:
    config, args = parse_args([], quick=True)
    assert not args.list
    assert config.quick
    assert config.repeats == 3
    config, _ = parse_args(["--sizes", "1M,64,64K"])
    assert config.throughput_sizes == (64, 65536, 1 << 20)
    assert config.latency_sizes == (64, 65536)  # round trips: sizes up to 64 KiB


def test_unknown_contender_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="unknown contender"):
        select(("npipes", "nope"))
    assert main(["--only", "nope", "--no-plots"]) == 2
    assert "unknown contender" in capsys.readouterr().out


def test_list_names_every_contender(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in ("npipes", "raw-socket", "raw-pywin32", "multiprocessing", "pyzmq"):
        assert name in out


def test_harness_is_not_in_the_package() -> None:
    """The harness moved to the repository's benchmarks/, outside src/ (so not in the wheel)."""
    assert not list((SRC / "npipes").glob("_bench/**/*.py"))
    assert (ROOT / "benchmarks" / "__init__.py").is_file()
    assert Path(main.__code__.co_filename).resolve().parent == ROOT / "benchmarks"


def test_npipes_bench_runs_the_checkouts_harness(tmp_path: Path) -> None:
    """``npipes bench`` finds benchmarks/ next to src/, whatever the working directory."""
    code = (
        f"import sys; sys.path.insert(0, {str(SRC)!r}); from npipes.cli import main;"
        " sys.exit(main(['bench', '--list']))"
    )
    done = _python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    for name in ("npipes", "raw-socket", "raw-pywin32", "multiprocessing"):
        assert name in done.stdout


def test_npipes_bench_without_a_checkout_says_how_to_run_it(tmp_path: Path) -> None:
    """An npipes without benchmarks/ beside it (as installed from the wheel) says what to do."""
    installed = tmp_path / "site"
    shutil.copytree(
        SRC / "npipes",
        installed / "npipes",
        ignore=shutil.ignore_patterns("__pycache__"),
        copy_function=shutil.copyfile,  # copy2 calls CopyFile2, which Wine 8 lacks
    )
    code = (
        f"import sys; sys.path.insert(0, {str(installed)!r}); from npipes.cli import main;"
        " sys.exit(main(['bench', '--list']))"
    )
    done = _python(code, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "not installed with npipes" in done.stderr
    assert "python -m benchmarks --quick" in done.stderr
    assert "Traceback" not in done.stderr


def test_main_runs_as_a_file(tmp_path: Path) -> None:
    """``python benchmarks/__main__.py`` works without the checkout on ``sys.path`` (Wine)."""
    script = ROOT / "benchmarks" / "__main__.py"
    code = (
        f"import runpy, sys; sys.path.insert(0, {str(SRC)!r});"
        f" sys.argv = [{str(script)!r}, '--list']; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    done = _python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "raw-socket" in done.stdout


@pytest.mark.posix  # it measures the POSIX backend (and says so on Windows)
def test_percall_prints_every_layer_as_a_number() -> None:
    """``python -m benchmarks.percall`` (the per-call table of docs/performance.md) runs
    and prints one row per layer, each a number of microseconds: a smoke test, no timing."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.percall", "--rounds", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| `")]
    assert len(rows) >= 8, done.stdout
    for row in rows:
        assert float(row.rstrip(" |").rsplit("|", 1)[1]) >= 0, row
    from npipes import _accel

    mode = "C accelerator" if _accel.ACCELERATED else "pure Python"
    assert mode in done.stdout.splitlines()[0]
