# Task runner for maxsup-rs (https://github.com/casey/just). `just --list` shows the recipes.

# Run the whole test suite (what CI runs).
test:
    cargo test --workspace --release

# Regenerate the PyTorch reference fixtures (needs torch, scipy).
fixtures:
    cd crates/maxsup-loss/fixtures && python3 gen_fixtures.py
