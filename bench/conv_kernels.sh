#!/usr/bin/env bash
# Per-layer convolution kernels, ours (bins/bench-train/src/bin/conv-kernels.rs: raw slices, no
# graph) against PyTorch's (bench/torch_conv_kernels.py: aten conv2d and convolution_backward),
# every conv shape of the five bench/compare_torch.sh configs, same thread count, same run.
# Prints both and the ratios ours/PyTorch, then the totals per model block.
# Usage: THREADS=2 REPS=5 bench/conv_kernels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
REPS="${REPS:-5}"
cargo build --release -q -p bench-train --bin conv-kernels
ours=$(REPS="$REPS" RAYON_NUM_THREADS="$THREADS" CANDLE_NUM_THREADS=1 target/release/conv-kernels)
torch=$(echo "$ours" | OMP_NUM_THREADS="$THREADS" python3 bench/torch_conv_kernels.py --reps "$REPS" --threads "$THREADS")
echo "uptime: $(uptime)  THREADS=$THREADS REPS=$REPS"
paste -d' ' <(echo "$ours") <(echo "$torch") | awk '
  NR == 1 { printf "%-28s | %7s %7s | %7s %7s | %5s %5s\n", "n c hw o k s dx", "fwd_ms", "bwd_ms", "torch_f", "torch_b", "fwd", "bwd"; next }
  { printf "%-28s | %7.2f %7.2f | %7.2f %7.2f | %5.2f %5.2f\n", $1" "$2" "$3" "$4" "$5" "$6" "$7, $8, $9, $10, $11, $8/$10, $9/$11
    ours += $8 + $9; theirs += $10 + $11 }
  END { printf "all layers, forward + backward: ours %.1f ms, PyTorch %.1f ms, ratio %.2f\n", ours, theirs, ours/theirs }'
