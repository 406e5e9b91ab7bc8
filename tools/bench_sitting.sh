#!/usr/bin/env bash
# The benchmark sitting behind benches/RESULTS.md: the peers, then ours, on an idle machine.
# Run: cargo build --release -p spore-tools && setsid bash -c 'echo -19 > /proc/self/autogroup; exec nice -n -19 bash tools/bench_sitting.sh'
# Needs ../shared/peers set up (bash ../shared/peers/setup.sh, ~4 GB, once).
set -u
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR=/tmp
DAY=$(date -u +%Y-%m-%d)
D=/tmp/peers/results-$DAY
date -u +"peers start %H:%M:%S"
OUT=$D bash ../shared/peers/run_all.sh > /tmp/peers_run.log 2>&1
# ResNet-18, which the shared peers do not measure (same timing method and JSONL format).
for t in 1 2; do /tmp/peers/venv/bin/python tools/peers/resnet18.py --threads $t --out $D/results.jsonl >> /tmp/peers_run.log 2>&1; done
date -u +"peers end %H:%M:%S"
./target/release/spore bench cpu --out benches/data/spore-cpu-$DAY.jsonl --peers $D/results.jsonl > benches/data/spore-cpu-$DAY.md 2>&1
date -u +"spore cpu end %H:%M:%S"
./target/release/spore bench models --out benches/data/spore-models-$DAY.jsonl --peers $D/results.jsonl > benches/data/spore-models-$DAY.md 2>&1
date -u +"spore models end %H:%M:%S"
cargo test --test integration gpu_forward_ops::gpu_kernel_rates -- --ignored --nocapture --test-threads 1 > benches/data/gpu-lavapipe-forward-$DAY.txt 2>&1
cargo test --test integration grad_kernels_gflops -- --ignored --nocapture --test-threads 1 > benches/data/gpu-lavapipe-grad-$DAY.txt 2>&1
date -u +"gpu end %H:%M:%S"
