#!/usr/bin/env bash
# Data-parallel speedup on this machine: the same training epoch in one process and in
# `--nproc N` processes (the cores divided among them), images/s of each from the epoch line.
# Usage: bash bench/dp_speedup.sh [BINARY=target/release/train-conv] [N=2] [SUBSET=2560] [extra flags...]
set -euo pipefail
bin=${1:-target/release/train-conv}; n=${2:-2}; subset=${3:-2560}; shift $(( $# > 3 ? 3 : $# )) || true
[ -x "$bin" ] || cargo build --release -p "$(basename "$bin")"
bash data/fetch-cifar10.sh >/dev/null
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
common=(--cifar10 data/cifar-10-batches-bin --epochs 1 --train-subset "$subset" --eval-subset 500 --no-progress "$@")
rate() { grep -o '[0-9]* img/s' | head -1 | cut -d' ' -f1; }
one=$("$bin" "${common[@]}" --out-dir "$tmp/one" 2>&1 | rate)
many=$("$bin" "${common[@]}" --nproc "$n" --out-dir "$tmp/many" 2>&1 | rate)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "$(basename "$bin") ${*:-default recipe}, $subset images, 1 epoch"
echo "1 process: $one img/s; $n processes: $many img/s; speedup $(python3 -c "print(f'{$many/$one:.2f}x')")"
