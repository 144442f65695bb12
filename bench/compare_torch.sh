#!/usr/bin/env bash
# Same-run comparison of a training step: bench-train (candle + maxsup-ops) vs PyTorch CPU, both
# f32 with the same thread count, model, batch, loss (CE + MaxSup 0.1) and SGD settings.
# For each config it runs, back to back: PyTorch (bench/torch_steps.py) and the registry model
# (crates/maxsup-models). Prints step-time ratios ours/PyTorch and peak-RSS ratios.
#
# Usage: bench/compare_torch.sh [model:batch[:img] ...]   (default: the five issue configs;
#        img defaults to 32)
#        THREADS=2 STEPS=5 ROUNDS=3 bench/compare_torch.sh resnet20_cifar:128 resnet18:16:224
# ROUNDS (default 1; use an odd number): per config, run PyTorch and ours alternately that many times and report
# the median of each side's per-round medians (peak memory: the largest), so that a burst of
# load on the shared box during one side's few seconds does not decide the ratio.
# Other jobs on the cores distort both sides, and not necessarily equally: check `uptime`.
# candle's own elementwise ops use a separate spinning thread pool; our binaries keep them on the
# calling thread (CANDLE_NUM_THREADS=1, maxsup_cli::cpu_threads) unless CANDLE_NUM_THREADS is set.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
STEPS="${STEPS:-5}"
ROUNDS="${ROUNDS:-1}"
# Weight decay for both sides (WD=0 avoids maxsup-optim's Sgd keeping a graph per step alive).
WD="${WD:-1e-4}"
CONFIGS=("$@")
if [ ${#CONFIGS[@]} -eq 0 ]; then
  CONFIGS=(resnet18_cifar:64 resnet50:64 resnet20_cifar:128 deit_small_patch4_32:64 resnet18:16:224)
fi
cargo build --release -q -p bench-train
BIN=target/release/bench-train
field() { grep -o "^$1=[0-9.]*" | cut -d= -f2; }
ratio() { echo "scale=2; $1 / $2" | bc -l; }
ours() { RAYON_NUM_THREADS="$THREADS" "$BIN" --model "$1" --batch "$2" --img "$3" --steps "$STEPS" --threads "$THREADS" --weight-decay "$WD"; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
largest() { sort -g | tail -1; }
echo "uptime: $(uptime)  THREADS=$THREADS STEPS=$STEPS ROUNDS=$ROUNDS WD=$WD CANDLE_NUM_THREADS=${CANDLE_NUM_THREADS:-1 (ours)}"
printf "%-22s %5s %4s | %8s %8s %6s | %8s %8s %6s\n" model batch img ours_s torch_s ratio ours_MB torch_MB ratio
for cfg in "${CONFIGS[@]}"; do
  IFS=: read -r model batch img <<<"$cfg"
  img="${img:-32}"
  ts_all=(); tm_all=(); os_all=(); om_all=()
  for _ in $(seq "$ROUNDS"); do
    torch=$(OMP_NUM_THREADS="$THREADS" python3 bench/torch_steps.py --model "$model" --batch "$batch" --img "$img" --steps "$STEPS" --threads "$THREADS" --weight-decay "$WD")
    ts_all+=("$(echo "$torch" | field median_step_s)"); tm_all+=("$(echo "$torch" | field peak_rss_mb)")
    out=$(ours "$model" "$batch" "$img")
    os_all+=("$(echo "$out" | field median_step_s)"); om_all+=("$(echo "$out" | field peak_rss_mb)")
  done
  ts=$(printf '%s\n' "${ts_all[@]}" | median); tm=$(printf '%s\n' "${tm_all[@]}" | largest)
  os=$(printf '%s\n' "${os_all[@]}" | median); om=$(printf '%s\n' "${om_all[@]}" | largest)
  printf "%-22s %5s %4s | %8s %8s %6s | %8s %8s %6s\n" "$model" "$batch" "$img" "$os" "$ts" "$(ratio "$os" "$ts")" "$om" "$tm" "$(ratio "$om" "$tm")"
done
