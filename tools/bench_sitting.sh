#!/usr/bin/env bash
# The benchmark sitting behind benches/RESULTS.md: the peers, then ours, on an idle machine.
# Run: cargo build --release -p spore-tools && setsid bash -c 'echo -19 > /proc/self/autogroup; exec nice -n -19 bash tools/bench_sitting.sh'
# Needs ../shared/peers set up (bash ../shared/peers/setup.sh, ~4 GB, once).
# TAG names this sitting's files (default: the date); GPU_RATES=1 adds the per-kernel
# software-adapter rate tables (~15 min more).
set -u
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR=/tmp
TAG=${TAG:-$(date -u +%Y-%m-%d)}
D=/tmp/peers/results-$TAG
B=./target/release/spore
date -u +"peers start %H:%M:%S"
OUT=$D bash ../shared/peers/run_all.sh > /tmp/peers_run.log 2>&1
# ResNet-18, which the shared peers do not measure (same timing method and JSONL format).
for t in 1 2; do /tmp/peers/venv/bin/python tools/peers/resnet18.py --threads $t --out $D/results.jsonl >> /tmp/peers_run.log 2>&1; done
date -u +"peers end %H:%M:%S"
$B bench cpu --out benches/data/spore-cpu-$TAG.jsonl --peers $D/results.jsonl > benches/data/spore-cpu-$TAG.md 2>&1
date -u +"spore cpu end %H:%M:%S"
$B bench models --out benches/data/spore-models-$TAG.jsonl --peers $D/results.jsonl > benches/data/spore-models-$TAG.md 2>&1
date -u +"spore models end %H:%M:%S"
# The software GPU adapter: autotuning (MobileNetV2 and ResNet-18 layer shapes), then whole
# models with default and tuned kernels side by side, and one run's per-segment stats.
T=benches/data/tune-lavapipe-$TAG.json
rm -f $T
$B autotune --zoo mobilenet_v2 --out $T > benches/data/autotune-mobilenet_v2-lavapipe-$TAG.txt 2>&1
$B autotune --zoo resnet18 --out $T > benches/data/autotune-resnet18-lavapipe-$TAG.txt 2>&1
$B autotune --zoo lenet5 --batch 32 --out $T > benches/data/autotune-lenet5-lavapipe-$TAG.txt 2>&1
date -u +"autotune end %H:%M:%S"
$B bench models --gpu --software-gpu --tune-cache $T --out benches/data/spore-models-gpu-lavapipe-$TAG.jsonl > benches/data/spore-models-gpu-lavapipe-$TAG.md 2>&1
date -u +"gpu models end %H:%M:%S"
$B zoo mobilenet_v2 --out /tmp/mnv2-sitting.spore > /dev/null
{ $B run /tmp/mnv2-sitting.spore --device gpu --repeat 5; $B run /tmp/mnv2-sitting.spore --device gpu --repeat 5 --tune-cache $T; } > benches/data/run-mobilenet_v2-lavapipe-$TAG.txt 2>&1
date -u +"gpu run end %H:%M:%S"
if [ "${GPU_RATES:-0}" = 1 ]; then
  cargo test --release --test integration gpu_forward_ops::gpu_kernel_rates -- --ignored --nocapture --test-threads 1 > benches/data/gpu-lavapipe-forward-$TAG.txt 2>&1
  cargo test --release --test integration grad_kernels_gflops -- --ignored --nocapture --test-threads 1 > benches/data/gpu-lavapipe-grad-$TAG.txt 2>&1
  date -u +"gpu rates end %H:%M:%S"
fi
