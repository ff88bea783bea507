"""Model complexity: parameter count, FLOPs (= 2 x multiply-accumulates of conv and linear layers, the
convention of torch.utils.flop_counter) and a CPU latency helper (warm-up, then the median of N runs)."""
from __future__ import annotations

import copy
import statistics
import time

import torch
from torch import nn


def count(model: nn.Module, imgsz: int | tuple[int, int], batch: int = 1,
          inputs: torch.Tensor | None = None) -> dict[str, int]:
    """{"params", "flops"} for one forward pass at `imgsz` (int or (h, w)) in eval mode, of zeros or of
    `inputs` (its hooks see that forward: a caller can observe it too)."""
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    macs = [0]

    def conv_hook(m: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        macs[0] += out.numel() * k

    def linear_hook(m: nn.Linear, _inp, out: torch.Tensor) -> None:
        macs[0] += out.numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(batch, 3, h, w, device=device) if inputs is None else inputs)
    finally:
        for hd in handles:
            hd.remove()
        model.train(was_training)
    return {"params": int(sum(p.numel() for p in model.parameters())), "flops": int(2 * macs[0])}


def cpu_latency(model: nn.Module, imgsz: int, batch: int = 1, warmup: int = 5, iters: int = 20,
                threads: int | None = None) -> dict[str, float]:
    """Median / min / mean forward latency in ms on the CPU (eval mode, no grad)."""
    prev_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    was_training = model.training
    model.eval()
    x = torch.rand(batch, 3, imgsz, imgsz)
    times = []
    try:
        with torch.no_grad():
            on_cpu = next(model.parameters()).device.type == "cpu"
            model_cpu = model if on_cpu else copy.deepcopy(model).cpu()   # never move the caller's model
            for _ in range(warmup):
                model_cpu(x)
            for _ in range(iters):
                t0 = time.perf_counter()
                model_cpu(x)
                times.append((time.perf_counter() - t0) * 1000.0)
    finally:
        torch.set_num_threads(prev_threads)
        model.train(was_training)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "mean_ms": statistics.mean(times),
            "iters": iters, "batch": batch, "threads": torch.get_num_threads() if not threads else threads}
