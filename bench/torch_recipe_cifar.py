"""PyTorch replica of the `cifar10-resnet20` recipe (train-conv's default), to choose its epoch
count and learning rate on a GPU in minutes instead of CPU hours.

Same model (He et al. ResNet-20, projection shortcuts: bench/torch_steps.py), loss (CE + MaxSup,
alpha linear 0.1 -> 0.2 over epochs), SGD (momentum 0.9, Nesterov, weight decay 5e-4 on conv and
linear weights only), per-iteration schedule (1 warm-up epoch from 0.01, then cosine to 0), batch
128 with drop_last, CIFAR pad-4 random crop + flip, CIFAR-10 mean/std, test accuracy per epoch.
The data stay on the GPU; augmentation runs there.

Usage: python3 bench/torch_recipe_cifar.py DATA_DIR EPOCHS:LR[:SEED[:BATCH]] ...
  DATA_DIR holds the CIFAR-10 binary batches (data_batch_1..5.bin, test_batch.bin).
Prints one JSON line per run: {"epochs", "lr", "seed", "test_top1": [per epoch], "seconds"}.
"""
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from torch_steps import resnet_cifar_he  # noqa: E402

MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)


def load(path):
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 3073)
    return torch.from_numpy(raw[:, 1:].reshape(-1, 3, 32, 32).copy()), torch.from_numpy(raw[:, 0].astype(np.int64))


def augment(x, gen):
    """Pad-4 random crop and horizontal flip, per sample."""
    b = x.shape[0]
    xp = F.pad(x, (4, 4, 4, 4))
    oy = torch.randint(0, 9, (b,), device=x.device, generator=gen)
    ox = torch.randint(0, 9, (b,), device=x.device, generator=gen)
    ar = torch.arange(32, device=x.device)
    rows = (oy[:, None] + ar)[:, None, :, None]
    cols = (ox[:, None] + ar)[:, None, None, :]
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(3, device=x.device)[None, :, None, None]
    out = xp[bi, ci, rows, cols]
    flip = torch.rand(b, device=x.device, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def run(data, epochs, lr, seed, dev, batch=128):
    (xtr, ytr), (xte, yte) = data
    torch.manual_seed(seed)
    gen = torch.Generator(device=dev).manual_seed(seed)
    model = resnet_cifar_he(20, 10).to(dev)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=lr, momentum=0.9, nesterov=True)
    per_epoch = xtr.shape[0] // batch
    mean, std = MEAN.to(dev), STD.to(dev)
    accs, t0, it = [], time.time(), 0
    for epoch in range(epochs):
        alpha = 0.1 + 0.1 * epoch / max(epochs - 1, 1)
        model.train()
        perm = torch.randperm(xtr.shape[0], device=dev, generator=gen)
        for i in range(per_epoch):
            t = it / per_epoch
            cur = 0.01 + (lr - 0.01) * t if t < 1 else 0.5 * lr * (1 + math.cos(math.pi * (t - 1) / max(epochs - 1, 1)))
            for g in opt.param_groups:
                g["lr"] = cur
            idx = perm[i * batch:(i + 1) * batch]
            x = (augment(xtr[idx].float() / 255, gen) - mean) / std
            z = model(x)
            loss = F.cross_entropy(z, ytr[idx]) + alpha * (z.max(1).values - z.mean(1)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            it += 1
        model.eval()
        correct = 0
        with torch.no_grad():
            for j in range(0, xte.shape[0], 1000):
                z = model((xte[j:j + 1000].float() / 255 - mean) / std)
                correct += (z.argmax(1) == yte[j:j + 1000]).sum().item()
        accs.append(round(100 * correct / xte.shape[0], 2))
    return {"epochs": epochs, "lr": lr, "seed": seed, "test_top1": accs, "seconds": round(time.time() - t0, 1)}


def main():
    root, specs = sys.argv[1], sys.argv[2:]
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    parts = [load(os.path.join(root, f"data_batch_{i}.bin")) for i in range(1, 6)]
    xtr = torch.cat([p[0] for p in parts]).to(dev)
    ytr = torch.cat([p[1] for p in parts]).to(dev)
    xte, yte = load(os.path.join(root, "test_batch.bin"))
    data = ((xtr, ytr), (xte.to(dev), yte.to(dev)))
    torch.backends.cudnn.benchmark = True
    for spec in specs:
        parts = spec.split(":")
        e, lr = parts[0], parts[1]
        seed = parts[2] if len(parts) > 2 else "0"
        batch = parts[3] if len(parts) > 3 else "128"
        out = run(data, int(e), float(lr), int(seed), dev, int(batch))
        out["batch"] = int(batch)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
