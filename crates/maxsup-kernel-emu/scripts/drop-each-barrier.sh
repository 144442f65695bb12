#!/usr/bin/env bash
# Checks that the kernel tests see every barrier of the kernels: for each `__syncthreads()` and
# `__syncwarp()` of ops.cu and the files it includes, in turn, runs the tests on a copy of the
# kernels without it and expects a failure. Restores the files on exit.
# Usage: bash crates/maxsup-kernel-emu/scripts/drop-each-barrier.sh [FILE...]
# (FILE: kernel files under crates/maxsup-ops/kernels to check, default ops.cu and attention.cuh)
set -euo pipefail
cd "$(dirname "$0")/../../.."
dir=crates/maxsup-ops/kernels
files=()
for name in "${@:-ops.cu attention.cuh}"; do for n in $name; do files+=("$dir/$n"); done; done
saved=$(mktemp -d)
for f in "${files[@]}"; do cp "$f" "$saved/$(basename "$f")"; done
trap 'for f in "${files[@]}"; do cp "$saved/$(basename "$f")" "$f"; done; rm -rf "$saved"' EXIT
total=0
missed=0
for f in "${files[@]}"; do
  orig="$saved/$(basename "$f")"
  for barrier in '__syncthreads()' '__syncwarp()'; do
    count=$(grep -c -F "$barrier;" "$orig" || true)
    for k in $(seq 1 "$count"); do
      awk -v k="$k" -v b="$barrier;" '{ i = index($0, b); if (i) { n++; if (n == k) { $0 = substr($0, 1, i - 1) "/* dropped */" substr($0, i + length(b)) } } print }' "$orig" > "$f"
      line=$(grep -n '/\* dropped \*/' "$f" | cut -d: -f1)
      total=$((total + 1))
      if cargo test --release -q -p maxsup-kernel-emu >/dev/null 2>&1; then
        echo "$barrier $k ($(basename "$f") line $line): tests still pass"
        missed=$((missed + 1))
      else
        echo "$barrier $k ($(basename "$f") line $line): caught"
      fi
      cp "$orig" "$f"
    done
  done
done
echo "$((total - missed)) of $total barriers caught"
[ "$missed" -eq 0 ]
