"""Re-encodes the benchmark photos as baseline (non-progressive) JPEGs, the kind most ImageNet
files are: Pillow, quality 90, its default 4:2:0 chroma subsampling.

Usage: python3 make_baseline_set.py SRC_DIR DST_DIR   (e.g. /tmp/maxsup-bench-jpegs, fetched by
vs_torchvision.sh, to /tmp/maxsup-bench-baseline), then `bash vs_torchvision.sh DST_DIR 1000 9`.
"""
import glob, os, sys
from PIL import Image

src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
for path in sorted(glob.glob(os.path.join(src, "*.jpg"))):
    Image.open(path).convert("RGB").save(os.path.join(dst, os.path.basename(path)), quality=90)
print(f"wrote {len(glob.glob(os.path.join(dst, '*.jpg')))} baseline JPEGs to {dst}")
