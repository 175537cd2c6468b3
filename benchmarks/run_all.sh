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
tm=mtt,datm,mct,dpd
for dataset in mnist cifar10; do
  for ipc in 1 10; do
    python benchmarks/compare_methods.py --datasets $dataset --ipc $ipc --methods $tm \
      --runs 5 --baseline-runs 10 --out "$out"
  done
done
# What held trajectory matching back at MNIST IPC 1 (the former config: the IPC-1 one with
# max_start_epoch=6 and syn_steps=20), then the settings against each other.
c=benchmarks/configs
python benchmarks/ablate.py --config $c/mtt_mnist_ipc1_cpu.yaml --seeds 0,1,2 --runs 5 \
  --variant base:max_start_epoch=6,syn_steps=20 --variant window2:max_start_epoch=2,syn_steps=20 \
  --variant lr1000:max_start_epoch=6,syn_steps=20,lr_images=1000 \
  --variant window2_lr1000:max_start_epoch=2,syn_steps=20,lr_images=1000 \
  --variant window1:max_start_epoch=1,syn_steps=20 \
  --variant window2_it500:max_start_epoch=2,syn_steps=20,iterations=500 \
  --variant window2_steps40:max_start_epoch=2,syn_steps=40 --out "$out"
# lit-distill's MTT against the public MTT code (a patched copy: see the script's docstring).
if [ -n "${MTT_REFERENCE:-}" ]; then
  (cd benchmarks && python mtt_reference.py --reference "$MTT_REFERENCE" --seeds 0,1,2,3,4 \
    --runs 5 --work-dir ../runs/bench --out RESULTS.md)
fi
python benchmarks/ablate.py --config $c/mct_mnist_ipc1_cpu.yaml --seeds 0,1,2 --runs 5 \
  --variant line:max_start_epoch=null --variant window:max_start_epoch=2 \
  --variant line_projected:max_start_epoch=null,epoch_positions=projected \
  --variant window_projected:max_start_epoch=2,epoch_positions=projected --out "$out"
python benchmarks/ablate.py --config $c/mct_cifar10_ipc1_cpu.yaml --seeds 0,1,2 --runs 5 \
  --variant line:max_start_epoch=null --variant window:max_start_epoch=2 --out "$out"
python benchmarks/ablate.py --config $c/mct_cifar10_ipc10_cpu.yaml --seeds 0,1,2 --runs 5 \
  --variant line:max_start_epoch=null --variant window:max_start_epoch=4 --out "$out"
python benchmarks/ablate.py --config $c/mct_mnist_ipc10_cpu.yaml --seeds 0,1,2 --runs 5 \
  --variant line:max_start_epoch=null --variant window:max_start_epoch=4 --out "$out"
python benchmarks/ablate.py --config $c/datm_cifar10_ipc1_cpu.yaml --seeds 0,1,2 --runs 5 \
  --variant ftd_experts: --variant sgd_experts:experts=$c/experts_cifar10_mtt_cpu.yaml --out "$out"
python benchmarks/mct_convergence.py --dataset mnist --ipc 1 --iterations 200 --eval-every 25 \
  --accuracy 0.8 --loss 0.55 --out "$out"
python benchmarks/mct_convergence.py --dataset cifar10 --ipc 1 --iterations 200 --eval-every 50 \
  --accuracy 0.25 --loss 0.75 --threads 2 --out "$out"
# The sets of the every-method comparison compared fairly (both scores), with TGDD's and DM's
# (distilled first), and as NAS proxies.
for dataset in mnist cifar10; do
  for ipc in 1 10; do
    python benchmarks/fair_eval.py --part compare --dataset $dataset --ipc $ipc \
      --methods tgdd,dm,$tm --out "$out"
  done
done
python benchmarks/fair_eval.py --part nas --dataset mnist --ipc 1 --methods tgdd,datm,dpd --out "$out"
python benchmarks/fair_eval.py --part nas --dataset cifar10 --ipc 10 --methods tgdd,datm,dpd --out "$out"
python benchmarks/eval_speed.py --rounds 9 --out "$out"
python benchmarks/eval_speed.py --dataset mnist --ipc 1 --rounds 2 --out "$out"
python benchmarks/inference_layout.py --out "$out"
python benchmarks/eval_grouping.py --out "$out"
python benchmarks/eval_conv.py --out "$out"
python benchmarks/expert_batching.py --out "$out"
python benchmarks/distill_accuracy.py --out "$out"
python benchmarks/unroll_memory.py --out "$out"
python benchmarks/unroll_memory.py --width 128 --steps 10 20 --modes plain unroll replay --out "$out"
python benchmarks/unroll_memory.py --width 128 --steps 10 20 --modes plain unroll replay \
  --allocator system --out "$out"
python benchmarks/unroll_memory.py --width 128 --steps 10 20 --modes plain unroll replay \
  --allocator kept --out "$out"
python benchmarks/tm_arithmetic.py --width 128 --steps 10 20 --out "$out"
python benchmarks/allocator_effect.py --out "$out"
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
