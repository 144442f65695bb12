"""The probe protocol of maxsup-metrics (src/probe/mod.rs), re-done with scikit-learn.

Same split (SplitMix64 stratified), same standardisation (stats of the whole training set),
same λ grid walked from strong to weak with warm starts, same tie rule (stronger λ wins), refit on
train+val warm-started from the chosen fit. λ maps to sklearn as C = 1 / (λ · N_fit).
"""
import math
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

MASK = 2**64 - 1


class SplitMix64:
    def __init__(self, seed):
        self.s = seed & MASK

    def next_u64(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & MASK
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def shuffle(self, items):
        for i in range(len(items) - 1, 0, -1):
            j = self.next_u64() % (i + 1)
            items[i], items[j] = items[j], items[i]


def stratified_split(labels, val_fraction=0.2, seed=0):
    rng = SplitMix64(seed)
    train, val = [], []
    for c in range(int(labels.max()) + 1):
        members = [int(i) for i in np.flatnonzero(labels == c)]
        rng.shuffle(members)
        n_val = min(int(math.floor(val_fraction * len(members) + 0.5)), len(members))
        val += members[:n_val]
        train += members[n_val:]
    return np.array(sorted(train)), np.array(sorted(val))


def standardize(train_x, test_x):
    mean = train_x.astype(np.float64).mean(axis=0)
    std = train_x.astype(np.float64).std(axis=0)
    std[std <= 1e-12] = 1.0
    return ((train_x - mean) / std).astype(np.float32), ((test_x - mean) / std).astype(np.float32)


def log_grid(lo=1e-6, hi=1e5, count=45):
    return [10 ** (math.log10(lo) + (math.log10(hi) - math.log10(lo)) * i / (count - 1)) for i in range(count)]


def fit(x, y, lam, start, tol, max_iter):
    clf = LogisticRegression(C=1.0 / (lam * len(y)), tol=tol, max_iter=max_iter, warm_start=start is not None)
    if start is not None:
        clf.coef_, clf.intercept_ = start[0].copy(), start[1].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, y)
    return clf


def run_probe(train_x, train_y, test_x, test_y, lambdas=None, val_fraction=0.2, seed=0, tol=1e-4, max_iter=1000):
    t0 = time.perf_counter()
    lambdas = sorted(lambdas or log_grid(), reverse=True)
    train_x, test_x = standardize(train_x, test_x)
    tr, va = stratified_split(train_y, val_fraction, seed)
    path, best, warm = [], None, None
    for lam in lambdas:
        clf = fit(train_x[tr], train_y[tr], lam, warm, tol, max_iter)
        acc = float((clf.predict(train_x[va]) == train_y[va]).mean())
        path.append({"lambda": lam, "val_accuracy": acc, "iterations": int(clf.n_iter_[0])})
        if best is None or acc > best[0]:
            best = (acc, lam, (clf.coef_.copy(), clf.intercept_.copy()))
        warm = (clf.coef_, clf.intercept_)
    clf = fit(train_x, train_y, best[1], best[2], tol, max_iter)
    return {
        "path": path, "chosen_lambda": best[1], "chosen_val_accuracy": best[0],
        "test_accuracy": float((clf.predict(test_x) == test_y).mean()),
        "seconds": time.perf_counter() - t0, "val_indices": va.tolist(),
    }
