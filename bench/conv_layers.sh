#!/usr/bin/env bash
# Per-layer times of the 3x3 convolutions of the benchmark models, Winograd F(4x4, 3x3) against
# im2col + GEMM (MAXSUP_WINOGRAD=0), in the same run: prints both and the ratio winograd/im2col.
# Usage: THREADS=2 REPS=5 bench/conv_layers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
cargo build --release -q -p maxsup-ops --example conv_layers
BIN=target/release/examples/conv_layers
run() { RAYON_NUM_THREADS="$THREADS" CANDLE_NUM_THREADS=1 "$BIN"; }
im2col=$(MAXSUP_WINOGRAD=0 run)
wino=$(run)
echo "uptime: $(uptime)  THREADS=$THREADS"
paste -d' ' <(echo "$im2col") <(echo "$wino" | cut -d' ' -f5,6) | awk 'NR==1 {print "n c hw o | im2col fwd train | winograd fwd train | ratio fwd train"; next}
  {printf "%s %s %s %s | %8.2f %8.2f | %8.2f %8.2f | %5.2f %5.2f\n", $1,$2,$3,$4,$5,$6,$7,$8,$7/$5,$8/$6}'
