#!/usr/bin/env bash
# The GPU profile of the paper's Tables 1 and 2 on the lent GPU machine (docs/gpu-tables.md):
# CE, LS, OLS, Zipf-LS and MaxSup trained with `--recipe cifar10-resnet18` (ResNet-18, CIFAR
# stem, batch 512, bf16, 15 epochs), train/val features, Table 1; the CE, LS and MaxSup
# features probed on Fashion-MNIST, Table 2.
#
# Here:  bash scripts/gpu-tables.sh pack   CUDA binaries (xz) into .gpu/bin, the data into
#        .gpu/parts/1, 2, ... (lossless, scripts/gpu_data.py), each part sized to travel with
#        what else a command carries (64 MiB in all, repository included).
# There: bash scripts/gpu-tables.sh        each command rebuilds and verifies the parts that
#        arrived (they stay while the machine is warm), then, once the data is complete, trains
#        and measures until the time is up (LIMIT_S, default 560 s), and resumes there on the
#        next command. Writes docs/table1-gpu.md, docs/table2-gpu.md and
#        docs/data/gpu-tables-status.json, copied with the run logs to $OUT.
#
# Commands for the lent machine (run with carry): 1. [".gpu/bin", ".gpu/parts/1"]
# 2. [".gpu/parts/2"] ... the last part's command starts training. Exit 0: both tables written;
# 3: time ran out, run the same command again (carry nothing) to continue; 4: data incomplete.
#
# Overrides (the CPU dry run, scripts/test-gpu-tables.sh, uses them): BIN (prebuilt binaries
# instead of .gpu/bin), DEVICE (cuda), RECIPE (cifar10-resnet18), EPOCHS, SUBSET, SEED (0),
# RUNS (runs/gpu-tables), CIFAR10_DIR, FASHION_DIR, PARTS (.gpu/parts), DOCS (docs).
set -u
cd "$(dirname "$0")/.."
log() { echo "[gpu-tables $(date -u +%T)] $*"; }

cifar10=${CIFAR10_DIR:-data/cifar-10-batches-bin}
fashion=${FASHION_DIR:-data/fashion-mnist}
parts=${PARTS:-.gpu/parts}

if [ "${1:-}" = pack ]; then
    set -e
    mkdir -p .gpu/bin
    for b in train-conv maxsup; do
        [ -x "target/cuda/release/$b" ] || { echo "no target/cuda/release/$b: run 'just build-cuda' first" >&2; exit 2; }
        xz -9 -T0 -c "target/cuda/release/$b" > ".gpu/bin/$b.xz"
    done
    bash data/fetch-cifar10.sh && bash data/fetch-fashion-mnist.sh
    rm -rf "$parts"
    # Part 1 travels with the two binaries (~14 MB) and the repository (~5 MB).
    python3 scripts/gpu_data.py pack --cifar10 "$cifar10" --fashion-mnist "$fashion" --out "$parts" \
        --first-mb 42 --part-mb 58
    du -sh .gpu/bin "$parts"/*/
    exit 0
fi

start=$(date +%s)
deadline=$((start + ${LIMIT_S:-560}))
device=${DEVICE:-cuda}
runs=${RUNS:-runs/gpu-tables}
docs=${DOCS:-docs}
mkdir -p "$runs" "$docs/data"
# Kept with the runs (ignored, so it stays between commands while the machine is warm) and
# copied beside the tables.
status=$runs/status.json

# Copies what a command produced back through $OUT (when the device tool set it) and records the
# state: what is done, what is left, the time each part took.
finish() {
    local rc=$1 state=$2
    local py3=${py:-python3}
    "$py3" - "$runs" "$status" "$state" "$rc" "$start" <<'PY'
import json, os, sys, time
runs, status, state, rc, start = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
losses = {}
for loss in ["ce", "ls", "ols", "zipf", "maxsup"]:
    d = os.path.join(runs, loss)
    if not os.path.isdir(d):
        continue
    train, evals = [], []
    log = os.path.join(d, "log.jsonl")
    if os.path.exists(log):
        for line in open(log):
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("event") == "train":
                train.append(r)
            elif r.get("event") == "eval":
                evals.append(r)
    losses[loss] = {
        "trained": os.path.exists(os.path.join(d, "done")),
        "epochs": len({r.get("epoch") for r in evals}),
        "val_top1": evals[-1]["top1"] if evals else None,
        "train_seconds": round(sum(r.get("seconds", 0) for r in train), 1),
        "images_per_second": train[-1].get("images_per_second") if train else None,
        "eval_seconds": round(sum(r.get("seconds", 0) for r in evals), 1),
        "features": sorted(f for f in os.listdir(d) if f.startswith(("features_", "transfer_"))),
    }
prev = json.load(open(status)) if os.path.exists(status) else {}
commands = prev.get("commands", []) + [{"state": state, "rc": rc, "seconds": round(time.time() - start, 1)}]
json.dump({"state": state, "commands": commands, "runs": losses}, open(status, "w"), indent=2)
PY
    cp "$status" "$docs/data/gpu-tables-status.json"
    if [ -n "${OUT:-}" ]; then
        cp "$status" "$OUT/gpu-tables-status.json"
        for f in "$docs/table1-gpu.md" "$docs/table2-gpu.md"; do [ -f "$f" ] && cp "$f" "$OUT/"; done
        for d in "$runs"/*/; do
            [ -d "$d" ] || continue
            mkdir -p "$OUT/runs/$(basename "$d")"
            cp "$d"/*.json* "$OUT/runs/$(basename "$d")/" 2>/dev/null || true
        done
    fi
    log "$state (exit $rc)"
    exit "$rc"
}

if [ "$device" = cpu ]; then py=${PYTHON:-python3}; else source scripts/gpu-env.sh; fi

# The binaries: prebuilt ones (BIN) or the packed ones, unpacked once per machine.
bin=${BIN:-.gpu/run}
if [ -z "${BIN:-}" ]; then
    mkdir -p "$bin"
    for b in train-conv maxsup; do
        if [ -f ".gpu/bin/$b.xz" ] && { [ ! -x "$bin/$b" ] || [ ".gpu/bin/$b.xz" -nt "$bin/$b" ]; }; then
            "$py" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
                ".gpu/bin/$b.xz" "$bin/$b.tmp" && chmod +x "$bin/$b.tmp" && mv "$bin/$b.tmp" "$bin/$b"
        fi
        [ -x "$bin/$b" ] || { log "no $bin/$b: carry .gpu/bin (from 'bash scripts/gpu-tables.sh pack')"; finish 4 "no binaries"; }
    done
fi

# The data: rebuild whatever parts arrived; train only once every file is there and verified.
log "data: rebuilding the parts that arrived"
if ! "$py" scripts/gpu_data.py unpack --parts "$parts" --cifar10 "$cifar10" --fashion-mnist "$fashion"; then
    finish 4 "waiting for data parts (carry the next .gpu/parts/N)"
fi

common=(--bin "$bin" --device "$device" --out "$runs" --recipe "${RECIPE:-cifar10-resnet18}" --seed "${SEED:-0}"
    --cifar10 "$cifar10" --fashion-mnist "$fashion" --deadline "$deadline"
    ${EPOCHS:+--epochs "$EPOCHS"} ${SUBSET:+--subset "$SUBSET"})
note="Command: bash scripts/gpu-tables.sh (recipe ${RECIPE:-cifar10-resnet18}${EPOCHS:+, $EPOCHS epochs}${SUBSET:+, subset $SUBSET}, seed ${SEED:-0}, device $device)"
for t in 1 2; do
    log "table $t"
    rc=0
    bash scripts/reproduce-tables.sh --table "$t" "${common[@]}" --table-out "$docs/table$t-gpu.md" --note "$note" || rc=$?
    [ "$rc" -eq 0 ] || finish "$rc" "table $t not finished (exit $rc$([ "$rc" -eq 3 ] && echo ': out of time, run again'))"
done
finish 0 "tables written"
