"""Fuzz every harness for a while: ``python tests/fuzz/run.py [--seconds 60] [--only NAME ...]``.

Run it with an interpreter that has atheris (a venv of its own, not the
shared one), from the checkout root::

    python3 -m venv /tmp/fuzzvenv && /tmp/fuzzvenv/bin/pip install atheris
    PYTHONPATH=src /tmp/fuzzvenv/bin/python tests/fuzz/run.py --seconds 60

Each harness starts from a scratch copy of its checked-in corpus
(tests/fuzz/corpus/NAME, less the known findings in ``harnesses.KNOWN``), under libFuzzer's
``-timeout`` (a hang) and ``-rss_limit_mb`` (memory). Exits 1 if any harness
found something; the input is left in the findings directory it prints (copy
it into the corpus, minimised with ``-minimize_crash=1``, to keep it).
Replay one input: ``python tests/fuzz/fuzz.py NAME FILE``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "src"))

from harnesses import HARNESSES, KNOWN, KNOWN_BUGS  # noqa: E402 - after the path set-up


def _say(text: str, *, error: bool = False) -> None:
    out = sys.stderr if error else sys.stdout
    out.write(text + "\n")
    out.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="per harness (default 60)")
    parser.add_argument("--only", nargs="*", choices=sorted(HARNESSES), help="these harnesses")
    parser.add_argument("--findings", type=Path, help="where crashing inputs go (default: temp)")
    parser.add_argument(
        "--strict", action="store_true", help="report the known bugs too (harnesses.KNOWN_BUGS)"
    )
    args = parser.parse_args(argv)
    findings = args.findings or Path(tempfile.mkdtemp(prefix="npipes-fuzz-findings-"))
    findings.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if not args.strict:
        env["NPIPES_FUZZ_TOLERATE"] = ",".join(KNOWN_BUGS)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE.parents[1] / "src"), *filter(None, [env.get("PYTHONPATH")])]
    )
    accelerated = subprocess.run(
        [sys.executable, "-c", "import npipes._accel as a; print(a.ACCELERATED)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The decoders run with the C accelerator when it is built for this interpreter (the
    # speedups harness then compares it with the pure code), else pure Python only.
    _say(f"npipes._accel.ACCELERATED={accelerated}")
    failed = []
    for name in args.only or HARNESSES:
        work = Path(tempfile.mkdtemp(prefix=f"npipes-fuzz-{name}-"))
        for seed in sorted((HERE / "corpus" / name).iterdir()):  # known findings stay out
            if f"{name}/{seed.name}" not in KNOWN:
                shutil.copyfile(seed, work / seed.name)
        command = [
            sys.executable,
            str(HERE / "fuzz.py"),
            name,
            f"-max_total_time={args.seconds}",
            "-timeout=10",  # one input taking 10 s is a hang
            "-rss_limit_mb=1024",
            "-max_len=4096",
            f"-artifact_prefix={findings}{os.sep}{name}-",
            "-print_final_stats=1",
            str(work),
        ]
        started = time.monotonic()
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        took = time.monotonic() - started
        stats = [line for line in result.stderr.splitlines() if line.startswith("stat::")]
        runs = next((line.split()[-1] for line in stats if "number_of_executed_units" in line), "?")
        cov = [line for line in result.stderr.splitlines() if "cov:" in line]
        last = cov[-1].split("cov:")[1].split()[0] if cov else "?"
        status = "ok" if result.returncode == 0 else f"FINDING (exit {result.returncode})"
        _say(f"{name:26} {status:18} {took:6.1f} s  {runs:>8} runs  cov {last}")
        shutil.rmtree(work, ignore_errors=True)  # what it found; the corpus keeps the seeds
        if result.returncode != 0:
            failed.append(name)
            start = result.stderr.find("Uncaught Python exception")  # atheris' report
            _say(result.stderr[start:] if start >= 0 else result.stderr[-4000:], error=True)
    if failed:
        _say(f"findings in {findings}: {', '.join(failed)}", error=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
