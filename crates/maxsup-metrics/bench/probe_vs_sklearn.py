"""Benchmark: `maxsup probe` vs scikit-learn LogisticRegression(lbfgs) on the same features,
split, λ grid, standardisation and warm-start path (see sklearn_probe.py), in the same run.

    cargo build --release -p maxsup
    python3 crates/maxsup-metrics/bench/probe_vs_sklearn.py [--n 10000] [--d 512] [--k 10] [--max-iter 1000]

Synthetic clustered features: K Gaussian class centres in D dimensions, anisotropic noise,
a ReLU-like positive shift (like pooled CNN activations). Prints both accuracies, times and the
time ratio (ours / sklearn; the target is <= 0.5). Our time is the whole command (process start,
file reading included); sklearn's is the fit loop only.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import sklearn_probe as sp  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))


def make(n, d, k, rng, centres, scales):
    y = rng.integers(0, k, size=n)
    x = centres[y] + rng.normal(size=(n, d)) * scales
    x = np.maximum(x + 0.5, 0.0)  # non-negative, sparse-ish like post-ReLU pooled features
    logits = rng.normal(size=(n, k)).astype(np.float32)
    return x.astype(np.float32), y, logits


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000, help="training samples (test gets n/5)")
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--max-iter", type=int, default=1000)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--num-lambdas", type=int, default=45)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sklearn-threads", type=int, default=None,
                    help="cap BLAS/OpenMP threads for sklearn (threadpoolctl); default: library default")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "maxsup"))
    a = ap.parse_args()

    rng = np.random.default_rng(a.seed)
    centres = rng.normal(size=(a.k, a.d)) * 0.12
    scales = rng.uniform(0.3, 1.5, size=a.d)
    xtr, ytr, ltr = make(a.n, a.d, a.k, rng, centres, scales)
    xte, yte, lte = make(a.n // 5, a.d, a.k, rng, centres, scales)
    with tempfile.TemporaryDirectory() as tmp:
        tr, te = os.path.join(tmp, "train.safetensors"), os.path.join(tmp, "test.safetensors")
        save_file({"features": xtr, "logits": ltr, "labels": ytr.astype(np.int64)}, tr)
        save_file({"features": xte, "logits": lte, "labels": yte.astype(np.int64)}, te)
        cmd = [a.binary, "probe", tr, te, "--json", "--max-iter", str(a.max_iter), "--tol", str(a.tol),
               "--num-lambdas", str(a.num_lambdas), "--seed", str(a.seed)]
        t0 = time.perf_counter()
        ours = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        ours_s = time.perf_counter() - t0

    grid = sp.log_grid(1e-6, 1e5, a.num_lambdas)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=a.sklearn_threads):
        theirs = sp.run_probe(xtr, ytr, xte, yte, lambdas=grid, seed=a.seed, tol=a.tol, max_iter=a.max_iter)

    print(f"N={a.n} (test {a.n // 5}), D={a.d}, K={a.k}, {a.num_lambdas} λ in [1e-6, 1e5], tol {a.tol}, max_iter {a.max_iter}, cores {os.cpu_count()}, sklearn threads {a.sklearn_threads or 'default'}")
    print(f"{'':10} {'chosen λ':>10} {'val acc':>8} {'test acc':>8} {'iters':>7} {'time s':>8}")
    ours_it = sum(p["iterations"] for p in ours["path"])
    their_it = sum(p["iterations"] for p in theirs["path"])
    print(f"{'maxsup':10} {ours['chosen_lambda']:10.3e} {ours['chosen_val_accuracy']:8.4f} {ours['test_accuracy']:8.4f} {ours_it:7d} {ours_s:8.2f}")
    print(f"{'sklearn':10} {theirs['chosen_lambda']:10.3e} {theirs['chosen_val_accuracy']:8.4f} {theirs['test_accuracy']:8.4f} {their_it:7d} {theirs['seconds']:8.2f}")
    gap = 100 * abs(ours["test_accuracy"] - theirs["test_accuracy"])
    print(f"test accuracy gap {gap:.2f} points (target <= 0.3); time ratio maxsup/sklearn {ours_s / theirs['seconds']:.3f} (target <= 0.5)")
    worst = max(abs(p["val_accuracy"] - q["val_accuracy"]) for p, q in zip(ours["path"], theirs["path"]))
    print(f"largest per-λ validation accuracy difference {100 * worst:.2f} points "
          f"(at λ {max(zip(ours['path'], theirs['path']), key=lambda pq: abs(pq[0]['val_accuracy'] - pq[1]['val_accuracy']))[0]['lambda']:.3g}); "
          f"maxsup objective evaluations {sum(p['evaluations'] for p in ours['path'])}")


if __name__ == "__main__":
    main()
