#!/usr/bin/env bash
# Decode + RandomResizedCrop(224) + flip + normalize, one core, same JPEG bytes: maxsup-data vs
# torchvision+PIL (the anchor /work/shared/anchors/torchvision_pipeline.py or $ANCHOR), run back to back.
# Usage: bench/vs_torchvision.sh [JPEG_DIR] [N]. Default JPEG_DIR: the 20 real ImageNet photos of
# foolbox==3.3.4 (fetched with pip into /tmp/maxsup-bench-jpegs).
set -euo pipefail
crate="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
anchor="${ANCHOR:-/work/shared/anchors/torchvision_pipeline.py}"
dir="${1:-}"
n="${2:-400}"
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
ours=$(./target/release/examples/bench_decode "$dir" "$n")
theirs=$(python3 "$anchor" "$dir" "$n")
echo "$ours"
echo "$theirs"
python3 - "$ours" "$theirs" <<'PY'
import re, sys
a, b = (float(re.search(r"([\d.]+) img/s", s).group(1)) for s in sys.argv[1:])
print(f"ratio maxsup-data / torchvision+PIL: {a / b:.2f}x")
PY
