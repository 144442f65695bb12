#!/usr/bin/env python3
"""Lossless transport of CIFAR-10 and Fashion-MNIST to the lent GPU machine, in parts.

The GPU machine reaches no network and at most 64 MiB travel per command, repository included,
while CIFAR-10 is 184 MB (139 MB with plain xz). Each image plane is coded as the residual of
the LOCO-I median predictor (red and blue residuals minus green's), then xz: 17 MB per
10,000 CIFAR images instead of 23. Unpacking rebuilds the original files byte for byte and
checks each against the SHA-256 recorded when it was packed, so a damaged or mixed-up part is
refused, never trained on.

  gpu_data.py pack --cifar10 DIR --fashion-mnist DIR --out .gpu/parts --first-mb 44 --part-mb 58
      writes OUT/1/, OUT/2/, ... (each at most its budget) and OUT/parts.txt (which file went where)
  gpu_data.py unpack --parts DIR --cifar10 DIR --fashion-mnist DIR
      rebuilds every *.mxz under DIR (any part folders) whose target is missing or differs
  gpu_data.py status --cifar10 DIR --fashion-mnist DIR
      prints the files still missing (exit 1 if any)
  gpu_data.py selftest
      round trip of random and edge-case images through both codecs

Needs numpy (there with PyTorch) and the standard library only.
"""
import argparse
import hashlib
import json
import lzma
import os
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np

CIFAR_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
CIFAR_RECORD = 3073  # one label byte, then 3 x 32 x 32 pixels
FASHION_IMAGES = ["train-images-idx3-ubyte", "t10k-images-idx3-ubyte"]
FASHION_LABELS = ["train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"]
# GPU_DATA_XZ_PRESET (0-9) trades size for time in the CPU dry run; the parts that travel use 9e.
XZ = int(os.environ["GPU_DATA_XZ_PRESET"]) if "GPU_DATA_XZ_PRESET" in os.environ else 9 | lzma.PRESET_EXTREME


def neighbours(img, y, x):
    """Left, above and above-left of pixel (y, x) for every plane of `img` (..., H, W): the
    decoder's definition, which `residuals` reproduces for whole planes. Off the image they
    are 0, except that the first column's left neighbour is the pixel above."""
    zero = np.zeros(img.shape[:-2], dtype=np.int16)
    above = img[..., y - 1, x] if y > 0 else zero
    if x > 0:
        left = img[..., y, x - 1]
        corner = img[..., y - 1, x - 1] if y > 0 else zero
    else:
        left, corner = above, zero
    return left, above, corner


def median_prediction(a, b, c):
    """LOCO-I's median edge detector: min(a, b) above an edge, max(a, b) below, else a + b - c
    (always within [min, max], so within [0, 255])."""
    hi, lo = np.maximum(a, b), np.minimum(a, b)
    return np.where(c >= hi, lo, np.where(c <= lo, hi, a + b - c))


def residuals(planes):
    """(planes - prediction) mod 256 for uint8 planes (..., H, W)."""
    img = planes.astype(np.int16)
    a = np.zeros_like(img)
    b = np.zeros_like(img)
    c = np.zeros_like(img)
    b[..., 1:, :] = img[..., :-1, :]
    a[..., :, 1:] = img[..., :, :-1]
    a[..., :, 0] = b[..., :, 0]
    c[..., 1:, 1:] = img[..., :-1, :-1]
    return ((img - median_prediction(a, b, c)) % 256).astype(np.uint8)


def reconstruct(res):
    """The inverse of `residuals`: raster order, every plane at once."""
    h, w = res.shape[-2:]
    img = np.zeros(res.shape, dtype=np.int16)
    r = res.astype(np.int16)
    for y in range(h):
        for x in range(w):
            a, b, c = neighbours(img, y, x)
            img[..., y, x] = (median_prediction(a, b, c) + r[..., y, x]) % 256
    return img.astype(np.uint8)


def encode_cifar(raw):
    n = len(raw) // CIFAR_RECORD
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(n, CIFAR_RECORD)
    res = residuals(rec[:, 1:].reshape(n, 3, 32, 32)).astype(np.int16)
    res[:, 0] -= res[:, 1]
    res[:, 2] -= res[:, 1]
    return rec[:, 0].tobytes() + (res % 256).astype(np.uint8).tobytes()


def decode_cifar(payload, n):
    labels = np.frombuffer(payload[:n], dtype=np.uint8)
    res = np.frombuffer(payload[n:], dtype=np.uint8).reshape(n, 3, 32, 32).astype(np.int16)
    res[:, 0] += res[:, 1]
    res[:, 2] += res[:, 1]
    img = reconstruct((res % 256).astype(np.uint8)).reshape(n, 3 * 32 * 32)
    return np.concatenate([labels[:, None], img], axis=1).tobytes()


def encode_idx_images(raw):
    n, h, w = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
    return raw[:16] + residuals(np.frombuffer(raw[16:], dtype=np.uint8).reshape(n, h, w)).tobytes()


def decode_idx_images(payload):
    n, h, w = (int.from_bytes(payload[i : i + 4], "big") for i in (4, 8, 12))
    res = np.frombuffer(payload[16:], dtype=np.uint8).reshape(n, h, w)
    return payload[:16] + reconstruct(res).tobytes()


def targets(cifar10, fashion):
    """(dataset directory, file name, codec) of every file the GPU profile needs."""
    return (
        [(cifar10, f, "cifar") for f in CIFAR_FILES]
        + [(fashion, f, "idx-images") for f in FASHION_IMAGES]
        + [(fashion, f, "raw") for f in FASHION_LABELS]
    )


def pack_one(job):
    src, name, codec, dataset, dest = job
    raw = open(os.path.join(src, name), "rb").read()
    if codec == "cifar":
        if len(raw) % CIFAR_RECORD:
            raise SystemExit(f"{src}/{name}: {len(raw)} bytes is not a whole number of CIFAR records")
        payload = encode_cifar(raw)
    elif codec == "idx-images":
        payload = encode_idx_images(raw)
    else:
        payload = raw
    header = {"name": name, "dataset": dataset, "codec": codec, "size": len(raw),
              "sha256": hashlib.sha256(raw).hexdigest()}
    blob = json.dumps(header).encode() + b"\n" + payload
    with open(dest, "wb") as f:
        f.write(lzma.compress(blob, preset=XZ))
    return dest, os.path.getsize(dest)


def unpack_one(path, dirs):
    blob = lzma.decompress(open(path, "rb").read())
    line, payload = blob.split(b"\n", 1)
    h = json.loads(line)
    if h["codec"] == "cifar":
        raw = decode_cifar(payload, h["size"] // CIFAR_RECORD)
    elif h["codec"] == "idx-images":
        raw = decode_idx_images(payload)
    else:
        raw = payload
    digest = hashlib.sha256(raw).hexdigest()
    if len(raw) != h["size"] or digest != h["sha256"]:
        raise SystemExit(f"{path}: rebuilt {h['name']} ({len(raw)} bytes, sha256 {digest}) does not "
                         f"match what was packed ({h['size']} bytes, {h['sha256']})")
    dest = os.path.join(dirs[h["dataset"]], h["name"])
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with open(dest + ".tmp", "wb") as f:
        f.write(raw)
    os.replace(dest + ".tmp", dest)
    with open(dest + ".sha256", "w") as f:
        f.write(digest + "\n")
    return h["name"]


def missing(cifar10, fashion):
    """Files of `targets` not yet rebuilt (a rebuilt file has its verified .sha256 beside it)."""
    return [os.path.join(d, f) for d, f, _ in targets(cifar10, fashion)
            if not (os.path.isfile(os.path.join(d, f)) and os.path.isfile(os.path.join(d, f + ".sha256")))]


def cmd_pack(args):
    os.makedirs(args.out, exist_ok=True)
    tmp = os.path.join(args.out, "encoded")
    os.makedirs(tmp, exist_ok=True)
    jobs = [(d, f, codec, "cifar10" if d == args.cifar10 else "fashion-mnist", os.path.join(tmp, f + ".mxz"))
            for d, f, codec in targets(args.cifar10, args.fashion_mnist)]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        sizes = dict(pool.map(pack_one, jobs))
    # First fit, largest first: part 1 is smaller (the binaries travel with it).
    budgets = [args.first_mb * 1e6]
    parts = [[]]
    for path in sorted(sizes, key=sizes.get, reverse=True):
        for i, items in enumerate(parts):
            if sum(sizes[p] for p in items) + sizes[path] <= budgets[i]:
                items.append(path)
                break
        else:
            if sizes[path] > args.part_mb * 1e6:
                raise SystemExit(f"{path}: {sizes[path]} bytes does not fit a part of {args.part_mb} MB")
            parts.append([path])
            budgets.append(args.part_mb * 1e6)
    lines = []
    for i, items in enumerate(parts, 1):
        d = os.path.join(args.out, str(i))
        os.makedirs(d, exist_ok=True)
        for p in items:
            os.replace(p, os.path.join(d, os.path.basename(p)))
        total = sum(sizes[p] for p in items)
        lines.append(f"part {i}: {total / 1e6:.1f} MB: " + " ".join(os.path.basename(p) for p in sorted(items)))
    os.rmdir(tmp)
    open(os.path.join(args.out, "parts.txt"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


def cmd_unpack(args):
    dirs = {"cifar10": args.cifar10, "fashion-mnist": args.fashion_mnist}
    found = sorted(os.path.join(root, f) for root, _, files in os.walk(args.parts) for f in files if f.endswith(".mxz"))
    todo = []
    for path in found:
        # Skip what an earlier command already rebuilt from this very part file.
        name = os.path.basename(path)[: -len(".mxz")]
        dataset = "cifar10" if name in CIFAR_FILES else "fashion-mnist"
        stamp = os.path.join(dirs[dataset], name + ".sha256")
        if not (os.path.isfile(stamp) and os.path.isfile(os.path.join(dirs[dataset], name))):
            todo.append(path)
    with ProcessPoolExecutor(max_workers=min(len(todo), os.cpu_count()) or 1) as pool:
        for name in pool.map(unpack_one, todo, [dirs] * len(todo)):
            print(f"rebuilt and verified {name}")
    return cmd_status(args)


def cmd_status(args):
    left = missing(args.cifar10, args.fashion_mnist)
    for path in left:
        print(f"missing: {path}")
    if not left:
        print("data complete")
    return 1 if left else 0


def cmd_selftest(_args):
    rng = np.random.default_rng(0)
    cases = [rng.integers(0, 256, (7, 3, 32, 32), dtype=np.uint8),
             np.zeros((2, 3, 32, 32), np.uint8), np.full((2, 3, 32, 32), 255, np.uint8)]
    edges = np.zeros((3, 3, 32, 32), np.uint8)
    edges[:, :, ::2] = 255
    edges[1, :, :, ::3] = 0
    cases.append(edges)
    smooth = np.clip(np.add.outer(np.arange(32), np.arange(32)) * 4, 0, 255).astype(np.uint8)
    cases.append(np.broadcast_to(smooth, (2, 3, 32, 32)).copy())
    for img in cases:
        n = len(img)
        raw = np.concatenate([rng.integers(0, 10, (n, 1), dtype=np.uint8), img.reshape(n, -1)], axis=1).tobytes()
        assert decode_cifar(encode_cifar(raw), n) == raw, "cifar round trip"
        gray = img[:, 0, :28, :28]
        idx = (2051).to_bytes(4, "big") + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + gray.tobytes()
        assert decode_idx_images(encode_idx_images(idx)) == idx, "idx round trip"
    print(f"selftest: {len(cases)} image sets round-trip exactly through both codecs")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ["pack", "unpack", "status"]:
        s = sub.add_parser(name)
        s.add_argument("--cifar10", default="data/cifar-10-batches-bin")
        s.add_argument("--fashion-mnist", default="data/fashion-mnist")
        if name == "pack":
            s.add_argument("--out", default=".gpu/parts")
            s.add_argument("--first-mb", type=float, default=44)
            s.add_argument("--part-mb", type=float, default=58)
        if name == "unpack":
            s.add_argument("--parts", default=".gpu/parts")
    sub.add_parser("selftest")
    args = p.parse_args()
    return {"pack": cmd_pack, "unpack": cmd_unpack, "status": cmd_status, "selftest": cmd_selftest}[args.cmd](args) or 0


if __name__ == "__main__":
    sys.exit(main())
