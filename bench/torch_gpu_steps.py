"""PyTorch side of `just gpu-check`'s throughput rows: the same training steps as
`gpu-check throughput` on the same GPU, as fast as stock PyTorch eager runs them. torchvision
`resnet50` (channels_last) with SGD momentum 0.9, timm `deit_small_patch16_224` (drop path 0.1,
SDPA attention) with AdamW; the fused optimizers where this PyTorch has them; bf16 autocast on a
bf16 batch, CE + MaxSup (alpha 0.1) on fixed random 224 px batches, `cudnn.benchmark = True`,
gradients freed before each forward, warm-up steps excluded, no loss read until the last step
(the host never waits for the GPU inside the timed span). Under autocast timm's DeiT keeps its
residual stream (the tokens between blocks and their gradients) in f32, where ours keeps it in
bf16: `torch_config` says so beside the row. Peak memory: torch.cuda.max_memory_allocated over
the timed steps.
Then a few steps timed phase by phase (forward, backward, optimizer; `torch_split_ms`) and one
under torch.profiler (`torch_kernels`: GPU time per kernel).

Usage: python3 bench/torch_gpu_steps.py --out torch.json [--batch 256 --warmup 5 --steps 20]
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F


def maxsup_loss(logits, target, alpha):
    """CE + alpha * mean(z_max - mean_k z_k) (the paper's MaxSup, as maxsup_loss::maxsup)."""
    z = logits.float()
    ce = F.cross_entropy(z, target)
    return ce + alpha * (z.max(dim=1).values - z.mean(dim=1)).mean()


def measure(name, batch, warmup, steps):
    torch.manual_seed(0)
    config = {"steps": steps, "warmup": warmup, "input": "bf16", "cudnn_benchmark": torch.backends.cudnn.benchmark}
    if name == "resnet50":
        import torchvision
        model = torchvision.models.resnet50(num_classes=1000).cuda().to(memory_format=torch.channels_last)
        opt, config["optimizer"] = optimizer(torch.optim.SGD, model, lr=0.1, momentum=0.9, weight_decay=5e-5)
        config["channels_last"] = True
    else:
        import timm
        model = timm.create_model("deit_small_patch16_224", num_classes=1000, drop_path_rate=0.1).cuda()
        opt, config["optimizer"] = optimizer(torch.optim.AdamW, model, lr=5e-4, weight_decay=0.05)
        config["fused_attn"] = bool(getattr(model.blocks[0].attn, "fused_attn", False))
        config["residual_stream"] = "f32 (autocast: LayerNorm and the residual adds in f32)"
    model.train()
    x = (torch.rand(batch, 3, 224, 224, device="cuda") * 2 - 1).to(torch.bfloat16)
    if name == "resnet50":
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.arange(batch, device="cuda") * 37) % 1000

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x)
        loss = maxsup_loss(logits, y, 0.1)
        loss.backward()
        opt.step()
        return loss.detach()

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(steps):
        last = step()
    last = last.item()  # waits for the last step: the timed span ends with the GPU's work
    seconds = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() / 1e9
    return {
        "model": name, "batch": batch, "torch_img_s": batch * steps / seconds,
        "torch_step_ms": 1e3 * seconds / steps, "torch_mem_gb": peak, "torch_config": config,
        "last_loss": last, "torch_split_ms": phase_split(model, opt, x, y, SPLIT_STEPS),
        "torch_kernels": kernel_profile(step),
    }


def optimizer(cls, model, **kwargs):
    """`cls` with fused=True (one kernel per parameter group) where this PyTorch has it, else its
    default (foreach); returns the optimizer and which one it is."""
    try:
        return cls(model.parameters(), fused=True, **kwargs), "fused"
    except (TypeError, RuntimeError, ValueError):
        return cls(model.parameters(), **kwargs), "default"


KERNEL_ROWS = 15


def kernel_profile(step):
    """One step under torch.profiler: every CUDA kernel's GPU time by name, longest first (the
    counterpart of `gpu-check throughput`'s `ours_kernels`, which times only our own launches)."""
    try:
        from torch.profiler import ProfilerActivity, profile
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        rows = []
        for e in prof.key_averages():
            us = getattr(e, "self_device_time_total", None)
            if us is None:
                us = getattr(e, "self_cuda_time_total", 0)
            if us > 0:
                rows.append({"name": e.key[:160], "launches": e.count, "ms": us / 1e3})
        rows.sort(key=lambda r: -r["ms"])
        return {"timed_ms": sum(r["ms"] for r in rows), "names": len(rows), "top": rows[:KERNEL_ROWS]}
    except Exception as e:  # the throughput row stands without it
        return {"error": repr(e)}


SPLIT_STEPS = 3


def phase_split(model, opt, x, y, steps):
    """Median ms of the forward (with the loss), the backward and the optimizer step, the device
    synchronised around each phase, as `gpu-check throughput`'s `ours_split_ms`."""
    times = {"forward": [], "backward": [], "optimizer": []}
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)  # as each timed step begins, outside the phases
        torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x)
        loss = maxsup_loss(logits, y, 0.1)
        torch.cuda.synchronize()
        times["forward"].append(time.perf_counter() - t)
        t = time.perf_counter()
        loss.backward()
        torch.cuda.synchronize()
        times["backward"].append(time.perf_counter() - t)
        t = time.perf_counter()
        opt.step()
        torch.cuda.synchronize()
        times["optimizer"].append(time.perf_counter() - t)
    return {k: 1e3 * sorted(v)[len(v) // 2] for k, v in times.items()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args()
    torch.backends.cudnn.benchmark = True
    rows = []
    for name in ["resnet50", "deit_small_patch16_224"]:
        try:
            rows.append(measure(name, a.batch, a.warmup, a.steps))
        except Exception as e:  # report, keep the other row
            rows.append({"model": name, "batch": a.batch, "error": repr(e)})
        torch.cuda.empty_cache()
    env = {
        "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "device": torch.cuda.get_device_name(0),
    }
    try:
        env["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    except Exception:
        pass
    try:
        import timm, torchvision
        env["timm"], env["torchvision"] = timm.__version__, torchvision.__version__
    except Exception:
        pass
    with open(a.out, "w") as f:
        json.dump({"env": env, "throughput": rows}, f, indent=2)


if __name__ == "__main__":
    main()
