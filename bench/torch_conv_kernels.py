"""PyTorch's CPU convolution (oneDNN) on the shapes `conv-kernels` (bins/bench-train) prints: reads its lines
`n c hw o k s dx ...` on stdin, prints `fwd_ms bwd_ms` for each (forward; backward: input
gradient where dx is 1, weight gradient), medians of --reps after a warm-up.
"""
import argparse, sys, time
import torch

p = argparse.ArgumentParser()
p.add_argument("--reps", type=int, default=5)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads)
med = lambda v: sorted(v)[len(v) // 2]
print("torch_fwd_ms torch_bwd_ms")
for line in sys.stdin:
    f = line.split()
    if not f or not f[0].isdigit():
        continue
    n, c, hw, o, k, s, dx = map(int, f[:7])
    x = torch.randn(n, c, hw, hw)
    w = torch.randn(o, c, k, k) * 0.05
    with torch.no_grad():
        y = torch.nn.functional.conv2d(x, w, None, s, k // 2)
    dy = torch.randn(y.shape)
    fwd, bwd = [], []
    with torch.no_grad():
        for _ in range(a.reps + 1):
            t = time.perf_counter()
            torch.nn.functional.conv2d(x, w, None, s, k // 2)
            fwd.append(time.perf_counter() - t)
            t = time.perf_counter()
            torch.ops.aten.convolution_backward(dy, x, w, None, [s, s], [k // 2, k // 2], [1, 1],
                                                False, [0, 0], 1, [bool(dx), True, False])
            bwd.append(time.perf_counter() - t)
    print(f"{1e3 * med(fwd[1:]):.2f} {1e3 * med(bwd[1:]):.2f}")
