#!/usr/bin/env bash
# The CPU dry run of the GPU profile (scripts/gpu-tables.sh): the same flow on this machine with
# the CPU binaries and a tiny training (cifar10-resnet20, 1 epoch on 1,000 images), so every
# part of it except CUDA is exercised before a GPU session spends device time on it:
#   1. the codecs round-trip (gpu_data.py selftest); the real data is packed into parts;
#   2. with only part 1 arrived the profile stops with exit 4, asking for the next part;
#   3. with every part, a deadline too short for the work: exit 3 before training, and again
#      with a training cut off mid-epoch; nothing is taken as finished;
#   4. run again: it resumes, exits 0, and both tables are written; every rebuilt file equals the
#      original byte for byte.
# Needs: target/release/{train-conv,maxsup} (cargo build --release -p train-conv -p maxsup),
# data/cifar-10-batches-bin and data/fashion-mnist (the fetch scripts), python3 with numpy.
# About 3-5 minutes on 2 cores. Exit 0 when every check holds; KEEP=1 keeps its directory.
set -euo pipefail
cd "$(dirname "$0")/.."
t=$(mktemp -d)
trap 'if [ -n "${KEEP:-}" ]; then echo "kept $t"; else rm -rf "$t"; fi' EXIT
fail() { echo "test-gpu-tables: FAIL: $*" >&2; exit 1; }
for b in train-conv maxsup; do [ -x "target/release/$b" ] || fail "no target/release/$b"; done
python3 -c 'import numpy' 2>/dev/null || fail "python3 has no numpy (pip install numpy)"
for d in data/cifar-10-batches-bin data/fashion-mnist; do
  [ -d "$d" ] || fail "no $d (bash data/fetch-cifar10.sh; bash data/fetch-fashion-mnist.sh)"
done

python3 scripts/gpu_data.py selftest
GPU_DATA_XZ_PRESET=1 python3 scripts/gpu_data.py pack --out "$t/all" --first-mb 40 --part-mb 70
[ -d "$t/all/2" ] || fail "expected at least two parts"

export BIN=target/release DEVICE=cpu RECIPE=cifar10-resnet20 EPOCHS=1 SUBSET=1000
export RUNS=$t/runs DOCS=$t/docs CIFAR10_DIR=$t/cifar FASHION_DIR=$t/fashion PARTS=$t/arrived OUT=$t/out
mkdir -p "$t/arrived" "$OUT"
status() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["state"])' "$DOCS/data/gpu-tables-status.json"; }

# 2. Part 1 only.
cp -r "$t/all/1" "$t/arrived/"
rc=0; bash scripts/gpu-tables.sh > "$t/log1" 2>&1 || rc=$?
[ "$rc" -eq 4 ] || { cat "$t/log1"; fail "with part 1 only: exit $rc, expected 4"; }
grep -q "missing: " "$t/log1" || fail "no missing files named"
status | grep -q "waiting for data parts" || fail "status: $(status)"
[ -f "$OUT/gpu-tables-status.json" ] || fail "status not copied to \$OUT"

# 3. Every part. (a) A deadline that leaves no time after the unpacking: exit 3 before any
# training. (b) 6 s, no margin: the first training is cut off mid-epoch (one epoch takes ~10 s
# here), exit 3, no table.
cp -r "$t/all"/[2-9] "$t/arrived/" 2>/dev/null || true
rc=0; LIMIT_S=25 MARGIN_S=24 bash scripts/gpu-tables.sh > "$t/log2" 2>&1 || rc=$?
[ "$rc" -eq 3 ] || { cat "$t/log2"; fail "with no time left: exit $rc, expected 3"; }
grep -q "data complete" "$t/log2" && grep -q "out of time before" "$t/log2" || { cat "$t/log2"; fail "no 'out of time before'"; }
status | grep -q "out of time" || fail "status: $(status)"
rc=0; LIMIT_S=6 MARGIN_S=0 bash scripts/gpu-tables.sh > "$t/log2b" 2>&1 || rc=$?
[ "$rc" -eq 3 ] || { cat "$t/log2b"; fail "with a 6 s limit: exit $rc, expected 3"; }
grep -q "cut off at the deadline: .*train-conv" "$t/log2b" || { cat "$t/log2b"; fail "the training was not cut off"; }
[ ! -f "$DOCS/table1-gpu.md" ] && [ ! -f "$RUNS/ce/done" ] || fail "a cut-off run was taken as finished"

# 4. Again, with time: resumes and finishes.
rc=0; LIMIT_S=1200 bash scripts/gpu-tables.sh > "$t/log3" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || { cat "$t/log3"; fail "the resumed run: exit $rc"; }
grep -q "rebuilt and verified" "$t/log3" && fail "parts rebuilt twice"
for f in data_batch_1.bin data_batch_2.bin data_batch_3.bin data_batch_4.bin data_batch_5.bin test_batch.bin; do
    cmp -s "$t/cifar/$f" "data/cifar-10-batches-bin/$f" || fail "rebuilt $f differs"
done
for f in train-images-idx3-ubyte t10k-images-idx3-ubyte train-labels-idx1-ubyte t10k-labels-idx1-ubyte; do
    cmp -s "$t/fashion/$f" "data/fashion-mnist/$f" || fail "rebuilt $f differs"
done
for loss in ce ls ols zipf maxsup; do
    [ -f "$RUNS/$loss/features_val.safetensors" ] || fail "no val features for $loss"
done
grep -q "MaxSup" "$DOCS/table1-gpu.md" || fail "table 1 has no MaxSup row"
grep -q "MaxSup" "$DOCS/table2-gpu.md" || fail "table 2 has no MaxSup row"
[ -f "$OUT/table1-gpu.md" ] && [ -f "$OUT/runs/maxsup/log.jsonl" ] || fail "results not copied to \$OUT"
status | grep -q "tables written" || fail "status: $(status)"
python3 - "$DOCS/data/gpu-tables-status.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
assert [c["rc"] for c in s["commands"]] == [4, 3, 3, 0], s["commands"]
assert all(r["trained"] and r["epochs"] == 1 for r in s["runs"].values()), s["runs"]
PY
echo "test-gpu-tables: pass (packing, waiting for parts, cut-off and resume, both tables, exact data)"
