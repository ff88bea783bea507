"""BatchNorm over the global batch of a DDP job on CPUs (gloo), where torch's SyncBatchNorm does not run.

Why: `compress --nproc-per-node auto` splits the default batch of 16 over two CPU processes, and with plain
BatchNorm each rank normalises by the statistics of its own 8 images. Two seeds of the default run scored
dense mAP50 0.578 / 0.566 that way against 0.640 / 0.592 in one process (BENCHMARKS.md §0e). Summing the
per-channel sums over the ranks gives every rank the statistics of all 16 images, as one process computes them.

`GlobalBatchNorm2d` is a `nn.BatchNorm2d` (the class of a module is swapped in place, so the sparsity hook's
and the EMA's references, `isinstance` checks and state_dict keys are untouched): in training mode under an
initialised process group it all-reduces the per-channel sums (count, sum x, then sum (x - mean)^2) with a differentiable
all_reduce (its backward all-reduces the statistics' gradients, so every rank's input gradient is the global
batch's), otherwise it is BatchNorm2d's own forward.
"""
from __future__ import annotations

import torch
from torch import nn


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) whose gradient is the all_reduce(SUM) of the incoming gradients."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _distributed() -> bool:
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class GlobalBatchNorm2d(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _distributed()):
            return super().forward(x)
        all_reduce = _SumOverRanks.apply
        c = x.shape[1]
        # two passes (mean, then squared deviations): E[x^2] - mean^2 in one pass loses digits to cancellation
        # where a channel's mean is large against its spread (4 steps of the DDP test drifted 1.8e-4 that way)
        sums = all_reduce(torch.cat([x.sum((0, 2, 3)), x.new_full((1,), x.numel() / c)]))
        n = sums[c]
        mean = sums[:c] / n
        centred = x - mean[None, :, None, None]
        var = all_reduce((centred * centred).sum((0, 2, 3))) / n        # biased, as BatchNorm normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean, alpha=m)
                self.running_var.mul_(1 - m).add_(var * (n / (n - 1)), alpha=m)    # unbiased, as BatchNorm keeps
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def use_global_bn(model: nn.Module) -> int:
    """Turn every plain BatchNorm2d of `model` into a GlobalBatchNorm2d in place; returns how many."""
    n = 0
    for m in model.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = GlobalBatchNorm2d
            n += 1
    return n


def plain_bn(model: nn.Module) -> None:
    """Undo `use_global_bn` (the model leaves the trainer as it came)."""
    for m in model.modules():
        if type(m) is GlobalBatchNorm2d:
            m.__class__ = nn.BatchNorm2d


__all__ = ["GlobalBatchNorm2d", "plain_bn", "use_global_bn"]
