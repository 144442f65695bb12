#!/usr/bin/env bash
# Checks that the kernel tests see every barrier of ops.cu: for each `__syncthreads()` in turn,
# runs the tests on a copy of the kernels without it and expects a failure. Restores ops.cu on
# exit. Usage: bash crates/maxsup-kernel-emu/scripts/drop-each-barrier.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
ops=crates/maxsup-ops/kernels/ops.cu
saved=$(mktemp)
cp "$ops" "$saved"
trap 'cp "$saved" "$ops"; rm -f "$saved"' EXIT
count=$(grep -c '__syncthreads()' "$saved")
missed=0
for k in $(seq 1 "$count"); do
  awk -v k="$k" '{ if (index($0, "__syncthreads()")) { n++; if (n == k) { sub(/__syncthreads\(\);/, "/* dropped */"); } } print }' "$saved" > "$ops"
  line=$(grep -n '/\* dropped \*/' "$ops" | cut -d: -f1)
  if cargo test --release -q -p maxsup-kernel-emu >/dev/null 2>&1; then
    echo "barrier $k (ops.cu line $line): tests still pass"
    missed=$((missed + 1))
  else
    echo "barrier $k (ops.cu line $line): caught"
  fi
done
echo "$((count - missed)) of $count barriers caught"
[ "$missed" -eq 0 ]
