"""The README's main job, timed from nothing: experts -> TGDD -> evaluation on digits.

Runs ``lit-distill fit --config tgdd_digits.yaml`` in an empty temporary folder (so the experts
are trained first, as on a fresh machine) with the progress bar on, as the README runs it;
reports its wall time, its CPU time (all threads) and the results table it printed, and checks
that the distilled set beats the random real subset.

    python benchmarks/quickstart_time.py [--out benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from common import add_output_arguments, children_cpu, command_line, emit, section

ROW = re.compile(r"^\| (tgdd|random_real) \|.*\| ([\d.]+) ± ([\d.]+) \| \d+ \|$", re.MULTILINE)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="tgdd_digits.yaml")
    parser.add_argument("overrides", nargs="*", help="extra lit-distill arguments")
    parser.add_argument(
        "--no-progress-bar", action="store_true", help="turn the progress bar off (README: on)"
    )
    add_output_arguments(parser)
    return parser.parse_args(argv)


def run(config: str, overrides: Sequence[str], bar: bool) -> tuple[float, float, str]:
    """Wall and CPU seconds and combined output of ``lit-distill fit`` in a fresh folder."""
    command = [sys.executable, "-m", "lit_distill", "fit", "--config", config, *overrides]
    if not bar:
        command.append("--trainer.enable_progress_bar=false")
    with tempfile.TemporaryDirectory() as folder:
        cpu, start = children_cpu(), time.perf_counter()
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - start
        return wall, children_cpu() - cpu, done.stdout + done.stderr


def main(argv: Sequence[str] | None = None) -> dict[str, tuple[float, float]]:
    args = parse_args(argv)
    seconds, cpu, output = run(args.config, args.overrides, not args.no_progress_bar)
    rows = {m.group(1): (float(m.group(2)), float(m.group(3))) for m in ROW.finditer(output)}
    table = "\n".join(line for line in output.splitlines() if line.startswith("|"))
    (tgdd, tgdd_std), (real, real_std) = rows["tgdd"], rows["random_real"]
    verdict = "yes" if tgdd - real > tgdd_std + real_std else "NO"
    body = (
        f"Wall time from nothing (experts trained, distillation, evaluation): **{seconds:.0f} s** "
        f"({cpu:.0f} s of CPU time)."
        f"\n\n{table}\n\nDistilled set ahead of the random real subset by more than the two "
        f"stds summed: {verdict} ({tgdd - real:+.2f} points).\n"
    )
    settings = {
        "config": args.config,
        "overrides": " ".join(args.overrides) or "none",
        "progress bar": "off" if args.no_progress_bar else "on",
    }
    title = "Quick start: lit-distill fit --config tgdd_digits.yaml"
    emit(section(title, command_line(__file__, argv), "cpu", settings, body), args.out)
    return rows


if __name__ == "__main__":
    main()
