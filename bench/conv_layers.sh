#!/usr/bin/env bash
# Per-layer times of the convolution kernels (bins/bench-train/src/bin/conv-kernels.rs), the
# Winograd F(4x4, 3x3) path against im2col + GEMM (MAXSUP_WINOGRAD=0) in the same run: prints
# both and the ratio winograd/im2col. Layers the Winograd path does not take show ~1.0 (the same
# kernel twice). The thresholds in crates/maxsup-ops/src/cpu/winograd.rs come from it.
# Usage: THREADS=2 REPS=5 bench/conv_layers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
REPS="${REPS:-5}"
cargo build --release -q -p bench-train --bin conv-kernels
run() { REPS="$REPS" RAYON_NUM_THREADS="$THREADS" CANDLE_NUM_THREADS=1 target/release/conv-kernels; }
im2col=$(MAXSUP_WINOGRAD=0 run)
wino=$(run)
echo "uptime: $(uptime)  THREADS=$THREADS REPS=$REPS"
paste -d' ' <(echo "$im2col") <(echo "$wino" | cut -d' ' -f8,9) | awk '
  NR == 1 { print "n c hw o k s dx | im2col fwd bwd | winograd fwd bwd | ratio fwd bwd"; next }
  { printf "%s %s %s %s %s %s %s | %8.2f %8.2f | %8.2f %8.2f | %5.2f %5.2f\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$10/$8,$11/$9 }'
