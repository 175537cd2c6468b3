"""How long the test suite takes: the default run (``python -m pytest``) and CI's full run.

Runs each pytest command in a subprocess from the repository root and reports its wall time,
its CPU time (all processes and threads it started) and pytest's own summary line, so the
README's statements about test time are measured ones.

    python benchmarks/test_time.py [--full] [--out benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from common import add_output_arguments, children_cpu, command_line, emit, section, table

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"^=*\s*(\d+ (passed|failed).*) in [\d.]+s.*$", re.MULTILINE)
RUNS = {
    "default (`python -m pytest`)": [],
    'full, as CI (`python -m pytest -m "slow or not slow"`)': ["-m", "slow or not slow"],
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="also time CI's full run")
    add_output_arguments(parser)
    return parser.parse_args(argv)


def timed(extra: Sequence[str]) -> tuple[float, float, str]:
    """Wall and CPU seconds of one pytest run, and its summary line."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra]
    cpu, start = children_cpu(), time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, children_cpu() - cpu
    found = SUMMARY.findall(done.stdout)
    summary = found[-1][0] if found else f"no summary (exit status {done.returncode})"
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:])
    return wall, cpu, summary


def main(argv: Sequence[str] | None = None) -> list[list[object]]:
    args = parse_args(argv)
    rows = []
    for name, extra in list(RUNS.items())[: 2 if args.full else 1]:
        wall, cpu, summary = timed(extra)
        rows.append([name, f"{wall / 60:.1f}", f"{cpu / 60:.1f}", summary])
    body = table(["run", "wall (min)", "CPU (min)", "pytest summary"], rows) + "\n"
    settings = {"root": ROOT.name, "processes": "one pytest process (DDP tests start their own)"}
    emit(section("Test suite time", command_line(__file__, argv), "cpu", settings, body), args.out)
    return rows


if __name__ == "__main__":
    main()
