#!/usr/bin/env bash
# Decode + RandomResizedCrop(224) + flip + normalize, one core, same JPEG bytes: maxsup-data vs
# torchvision+PIL (the anchor crates/maxsup-data/bench/torchvision_pipeline.py or $ANCHOR), run back to back.
# Usage: bench/vs_torchvision.sh [JPEG_DIR] [N] [ROUNDS]. Default JPEG_DIR: the 20 real ImageNet
# photos of foolbox==3.3.4 (fetched with pip into /tmp/maxsup-bench-jpegs). The two run alternately
# ROUNDS times (default 5); each round's ratio and the median are printed, since a shared machine
# drifts by more than the differences being measured.
set -euo pipefail
crate="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
anchor="${ANCHOR:-$crate/bench/torchvision_pipeline.py}"
dir="${1:-}"
n="${2:-400}"
rounds="${3:-5}"
if [[ -z "$dir" ]]; then
    dir=/tmp/maxsup-bench-jpegs
    if ! ls "$dir"/*.jpg >/dev/null 2>&1; then
        mkdir -p "$dir/dl"
        pip download --no-deps -q -d "$dir/dl" foolbox==3.3.4
        python3 -c "import zipfile,sys,os; z=zipfile.ZipFile(sys.argv[1]); [open(os.path.join(sys.argv[2],os.path.basename(n)),'wb').write(z.read(n)) for n in z.namelist() if n.startswith('foolbox/data/imagenet_') and n.endswith('.jpg')]" "$dir"/dl/foolbox-3.3.4-*.whl "$dir"
    fi
fi
cd "$crate/../.."
cargo build --release -q -p maxsup-data --example bench_decode
ratios=()
for ((r = 1; r <= rounds; r++)); do
    ours=$(./target/release/examples/bench_decode "$dir" "$n" --crop-only)
    theirs=$(python3 "$anchor" "$dir" "$n")
    echo "$ours"
    echo "$theirs"
    ratios+=("$(python3 -c 'import re,sys; a,b=(float(re.search(r"([\d.]+) img/s",s).group(1)) for s in sys.argv[1:]); print(f"{a/b:.2f}")' "$ours" "$theirs")")
    echo "round $r: ratio maxsup-data / torchvision+PIL = ${ratios[-1]}x"
done
python3 -c 'import statistics,sys; r=[float(x) for x in sys.argv[1:]]; print(f"median ratio over {len(r)} rounds: {statistics.median(r):.2f}x (min {min(r):.2f}, max {max(r):.2f})")' "${ratios[@]}"
