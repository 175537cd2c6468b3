#!/usr/bin/env bash
# Rerun every measurement with its CPU defaults and rewrite benchmarks/RESULTS.md.
# Takes about a quarter of an hour on 2 cores; each script's --help shows how to scale it up
# (e.g. --device cuda --width 128 for the paper recipe on a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/RESULTS.md
cat > "$out" <<'HEADER'
# Measured results

Every section below was written by the script and command it names (`benchmarks/run_all.sh`
reruns them all and rewrites this file). CPU figures come from a shared 2-core machine: timings
are medians of several repeats and compared as ratios measured in the same run.

HEADER
python benchmarks/trajectory_storage.py --out "$out"
python benchmarks/expert_throughput.py --out "$out"
python benchmarks/expert_throughput.py --width 8 --repeats 5 --out "$out"
python benchmarks/quickstart_time.py --out "$out"
python benchmarks/distill_accuracy.py --out "$out"
python benchmarks/distill_cost.py --out "$out"
