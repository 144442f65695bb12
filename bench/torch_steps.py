"""PyTorch CPU reference for bench-train: same models, batch, loss (CE + MaxSup), optimizer
(SGD lr 0.1, momentum 0.9 and weight decay 1e-4 unless overridden, or AdamW lr 1e-3 with --optimizer adamw) and timing rule (first step is warm-up; median of
the rest). Prints `median_step_s=` and `peak_rss_mb=` like bench-train.

Usage: python3 bench/torch_steps.py --model resnet18_cifar --batch 64 --steps 5 [--threads 2]
"""
import argparse
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


class CifarBasicBlock(nn.Module):
    """He et al. CIFAR block with a 1x1-conv + BN projection shortcut when the shape changes."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


def resnet_cifar_he(depth, classes):
    n = (depth - 2) // 6
    layers, cin = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()], 16
    for cout, stride in [(16, 1), (32, 2), (64, 2)]:
        for i in range(n):
            layers.append(CifarBasicBlock(cin, cout, stride if i == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes)]
    return nn.Sequential(*layers)


def build(name, classes, img):
    if name == "resnet18_cifar":
        m = torchvision.models.resnet18(num_classes=classes)
        m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        m.maxpool = nn.Identity()
        return m
    if name in ("resnet18", "resnet50"):
        return getattr(torchvision.models, name)(num_classes=classes)
    if name == "resnet20_cifar":
        return resnet_cifar_he(20, classes)
    if name == "deit_small_patch4_32":
        return torchvision.models.VisionTransformer(image_size=img, patch_size=4, num_layers=12, num_heads=6,
                                                    hidden_dim=384, mlp_dim=4 * 384, num_classes=classes)
    raise SystemExit(f"torch_steps.py: unknown model {name}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--img", type=int, default=32)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = build(a.model, a.classes, a.img).train()
    if a.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=a.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=a.momentum, weight_decay=a.weight_decay)
    x = torch.randn(a.batch, 3, a.img, a.img)
    y = torch.randint(0, a.classes, (a.batch,))
    times = []
    for step in range(a.steps):
        t = time.perf_counter()
        opt.zero_grad()
        z = model(x)
        loss = F.cross_entropy(z, y) + a.alpha * (z.max(1).values - z.mean(1)).mean()
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t
        times.append(dt)
        print(f"step {step}: {dt:.3f}s loss {loss.item():.4f}", flush=True)
    timed = sorted(times[1:])
    print(f"median_step_s={timed[len(timed) // 2]:.4f}")
    print(f"peak_rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")


if __name__ == "__main__":
    main()
