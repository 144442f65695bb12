#!/usr/bin/env bash
# The paper's Table 1 (five losses: feature metrics) or Table 2 (three losses: linear transfer of
# frozen features) with prebuilt binaries: what `just reproduce-table1/2` and the GPU profile
# (scripts/gpu-tables.sh) run. Resumable: a finished step (a trained run, an extracted feature
# file) is kept and skipped, a cut-off training resumes from its last epoch's checkpoint.
#
#   scripts/reproduce-tables.sh --table 1|2 --bin DIR [--device cpu|cuda] [--out runs/table1]
#       [--recipe cifar10-resnet20 | cifar10-resnet18 on cuda] [--epochs N] [--subset N] [--imagenet DIR] [--cifar10 DIR]
#       [--fashion-mnist DIR] [--seed 0] [--deadline UNIX_SECONDS] [--table-out FILE] [--note TEXT]
#
# --subset N trains on (and measures the train split of) the first N training images and fits the
# transfer probe on N images. --deadline stops before it: a training step gets only the time that
# is left (less a margin for the rest), and the script exits 3 when it had to stop early, so the
# caller can run it again to continue. Exit 0: the table is written.
set -euo pipefail
cd "$(dirname "$0")/.."

table="" bin="" device=cpu out=runs/table1 recipe="" epochs="" subset="" imagenet="" seed=0
cifar10="" fashion="" deadline="" table_out="" note=""
while [ $# -gt 0 ]; do
    case "$1" in
        --table) table=$2 ;; --bin) bin=$2 ;; --device) device=$2 ;; --out) out=$2 ;;
        --recipe) recipe=$2 ;; --epochs) epochs=$2 ;; --subset) subset=$2 ;; --imagenet) imagenet=$2 ;;
        --cifar10) cifar10=$2 ;; --fashion-mnist) fashion=$2 ;; --seed) seed=$2 ;;
        --deadline) deadline=$2 ;; --table-out) table_out=$2 ;; --note) note=$2 ;;
        *) echo "reproduce-tables: unknown argument $1" >&2; exit 2 ;;
    esac
    [ $# -ge 2 ] || { echo "reproduce-tables: $1 needs a value" >&2; exit 2; }
    shift 2
done
case "$table" in 1 | 2) ;; *) echo "reproduce-tables: --table 1 or --table 2" >&2; exit 2 ;; esac
[ -x "$bin/train-conv" ] && [ -x "$bin/maxsup" ] || {
    echo "reproduce-tables: no train-conv and maxsup in --bin '$bin'" >&2; exit 2; }

# What the runs train on and how much of each split the features cover.
if [ -n "$imagenet" ]; then
    data=(--recipe "${recipe:-resnet50-imagenet}" --zip "$imagenet"); limit=(--limit 50000)
    target=(--cifar10 "${cifar10:-data/cifar-10-batches-bin}")
else
    # CIFAR-10: the CPU default, or on a GPU the profile that converges (docs/gpu-tables.md).
    case "$device" in cuda*) cifar_recipe=cifar10-resnet18 ;; *) cifar_recipe=cifar10-resnet20 ;; esac
    data=(--recipe "${recipe:-$cifar_recipe}"); limit=(--limit 10000)
    [ -z "$cifar10" ] || data+=(--cifar10 "$cifar10")
    target=(--fashion-mnist "${fashion:-data/fashion-mnist}")
fi
[ -z "$epochs" ] || data+=(--epochs "$epochs")
probe_limit=()
if [ -n "$subset" ]; then
    data+=(--train-subset "$subset" --eval-subset 2000); limit=(--limit "$subset"); probe_limit=(--limit "$subset")
fi

# Runs `$@` under the time left before the deadline, keeping `margin` seconds for what follows;
# returns 3 (and says so) when there is no time or the command was cut off.
margin=${MARGIN_S:-20}
timed() {
    if [ -z "$deadline" ]; then "$@"; return; fi
    local left=$((deadline - $(date +%s) - margin))
    if [ "$left" -lt 5 ]; then echo "reproduce-tables: out of time before: $*" >&2; return 3; fi
    local rc=0
    timeout "$left" "$@" || rc=$?
    if [ "$rc" -eq 124 ]; then echo "reproduce-tables: cut off at the deadline: $*" >&2; return 3; fi
    return "$rc"
}

train() { # loss: trains (or resumes) the run in $out/$loss unless it finished
    local dir="$out/$1" resume=()
    [ -f "$dir/done" ] && return 0
    [ -f "$dir/last.safetensors" ] && resume=(--resume "$dir/last.safetensors")
    timed "$bin/train-conv" "${data[@]}" --loss "$1" --seed "$seed" --device "$device" \
        --out-dir "$dir" --no-progress "${resume[@]}"
    touch "$dir/done"
}

extract() { # loss name args...: features of the run's last checkpoint into $out/$loss/$name
    local dir="$out/$1" name=$2
    shift 2
    [ -f "$dir/$name.safetensors" ] && return 0
    timed "$bin/maxsup" extract --weights "$dir/last.safetensors" "$@" --device "$device" \
        --out "$dir/$name.safetensors"
}

if [ "$table" = 1 ]; then
    for loss in ce ls ols zipf maxsup; do
        train "$loss"
        extract "$loss" features_train --split train "${limit[@]}"
        extract "$loss" features_val --split val
    done
    "$bin/maxsup" table1 --runs "$out" --out "${table_out:-$out/table1.md}" ${note:+--note "$note"}
else
    for loss in ce ls maxsup; do
        train "$loss"
        extract "$loss" transfer_train "${target[@]}" --split train "${probe_limit[@]}"
        extract "$loss" transfer_test "${target[@]}" --split val
    done
    "$bin/maxsup" table2 --runs "$out" --out "${table_out:-$out/table2.md}" ${note:+--note "$note"}
fi
