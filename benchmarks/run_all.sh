#!/usr/bin/env bash
# Rerun every measurement with its CPU defaults and rewrite benchmarks/RESULTS.md.
# Takes several hours on 2 cores (the every-method comparison alone about one and a half on MNIST and CIFAR-10);
# each script's --help shows how to scale it up (e.g. --device cuda --width 128 on a GPU).
# Timing scripts run alone; each process uses one thread (OMP_NUM_THREADS=1) unless it says so.
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/RESULTS.md
cat > "$out" <<'HEADER'
# Measured results

Every section below was written by the script and command it names (`benchmarks/run_all.sh`
reruns them all and rewrites this file). CPU figures come from a shared 2-core machine: timings
are medians of several repeats and compared as ratios measured in the same run.

HEADER
export OMP_NUM_THREADS=1
python benchmarks/trajectory_storage.py --out "$out"
python benchmarks/quickstart_time.py --out "$out"
python benchmarks/compare_methods.py --datasets mnist --ipc 1 --out "$out"
python benchmarks/compare_methods.py --datasets cifar10 --ipc 1 --num-experts 1 --out "$out"
python benchmarks/distill_accuracy.py --out "$out"
python benchmarks/unroll_memory.py --out "$out"
python benchmarks/convex_line.py --out "$out"
python benchmarks/mct_convergence.py --out "$out"
python benchmarks/tgdd_memory.py --out "$out"
python benchmarks/tgdd_memory.py --width 128 --out "$out"
python benchmarks/tgdd_speed.py --out "$out"
python benchmarks/tgdd_speed.py --channels-last off --out "$out"
python benchmarks/tgdd_speed.py --real-forward-batch 1024 --out "$out"
python benchmarks/precision.py --out "$out"
python benchmarks/ddp_scaling.py --out "$out"
unset OMP_NUM_THREADS
python benchmarks/expert_throughput.py --out "$out"
python benchmarks/expert_throughput.py --width 8 --repeats 5 --out "$out"
python benchmarks/distill_cost.py --out "$out"
python benchmarks/distill_cost.py --iterations 20 --rounds 2 --out "$out"
python benchmarks/distill_cost.py --iterations 20 --rounds 2 \
  --model-arg channels_last=false --model-arg real_forward_batch=1024 --out "$out"
python benchmarks/test_time.py --full --out "$out"
