#!/usr/bin/env bash
# A/B of two bench-train builds on the same machine, alternating per round (the shared VM drifts):
#   bench/ab_bench_train.sh OLD_BIN NEW_BIN ROUNDS model:batch[:img] [model:batch[:img] ...]
# e.g. build the old commit with `git worktree add /tmp/old <commit>` and
# `CARGO_TARGET_DIR=target/old cargo build --release -p bench-train` inside it.
# Prints each round's median step time and peak RSS, then the median ratio new/old per config.
set -u
old=$1; new=$2; rounds=$3; shift 3
for cfg in "$@"; do
  IFS=: read -r m b img <<<"$cfg"
  img=${img:-32}
  ratios=()
  for r in $(seq "$rounds"); do
    run() { RAYON_NUM_THREADS=2 "$1" --model "$m" --batch "$b" --img "$img" --steps 4 --threads 2 --weight-decay 1e-4 2>/dev/null; }
    o=$(run "$old" | sed -n 's/^median_step_s=//p'); n=$(run "$new" | sed -n 's/^median_step_s=//p')
    ratio=$(awk -v a="$o" -v b="$n" 'BEGIN { printf "%.3f", b / a }')
    ratios+=("$ratio")
    echo "$m b$b round $r: old ${o}s new ${n}s ratio $ratio"
  done
  med=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo "$m b$b median new/old: $med"
done
