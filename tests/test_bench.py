"""The benchmark harness runs end to end and writes what it promises (no timing checks)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from npipes._bench import main
from npipes._bench.config import format_size, parse_args, parse_size
from npipes._bench.runner import select

BASELINE = "raw-pywin32" if sys.platform == "win32" else "raw-socket"
SIZES = (64, 1024)


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
