"""The README's main job, timed from nothing: experts -> TGDD -> evaluation on digits.

Runs ``lit-distill fit --config tgdd_digits.yaml`` in an empty temporary folder (so the experts
are trained first, as on a fresh machine), reports its wall time and the results table it
printed, and checks that the distilled set beats the random real subset.

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

from common import add_output_arguments, command_line, emit, section

ROW = re.compile(r"^\| (tgdd|random_real) \|.*\| ([\d.]+) ± ([\d.]+) \| \d+ \|$", re.MULTILINE)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="tgdd_digits.yaml")
    parser.add_argument("overrides", nargs="*", help="extra lit-distill arguments")
    add_output_arguments(parser)
    return parser.parse_args(argv)


def run(config: str, overrides: Sequence[str]) -> tuple[float, str]:
    """Wall seconds and combined output of ``lit-distill fit`` in a fresh folder."""
    command = [sys.executable, "-m", "lit_distill", "fit", "--config", config, *overrides]
    command.append("--trainer.enable_progress_bar=false")
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=True)
        return time.perf_counter() - start, done.stdout + done.stderr


def main(argv: Sequence[str] | None = None) -> dict[str, tuple[float, float]]:
    args = parse_args(argv)
    seconds, output = run(args.config, args.overrides)
    rows = {m.group(1): (float(m.group(2)), float(m.group(3))) for m in ROW.finditer(output)}
    table = "\n".join(line for line in output.splitlines() if line.startswith("|"))
    (tgdd, tgdd_std), (real, real_std) = rows["tgdd"], rows["random_real"]
    verdict = "yes" if tgdd - real > tgdd_std + real_std else "NO"
    body = (
        f"Wall time from nothing (experts trained, distillation, evaluation): **{seconds:.0f} s**."
        f"\n\n{table}\n\nDistilled set ahead of the random real subset by more than the two "
        f"stds summed: {verdict} ({tgdd - real:+.2f} points).\n"
    )
    settings = {"config": args.config, "overrides": " ".join(args.overrides) or "none"}
    title = "Quick start: lit-distill fit --config tgdd_digits.yaml"
    emit(section(title, command_line(__file__, argv), "cpu", settings, body), args.out)
    return rows


if __name__ == "__main__":
    main()
