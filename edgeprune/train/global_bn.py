"""BatchNorm over the global batch of a DDP job on CPUs (gloo), where torch's SyncBatchNorm does not run.

Why: `compress --nproc-per-node auto` splits the default batch of 16 over two CPU processes, and with plain
BatchNorm each rank normalises by the statistics of its own 8 images. Two seeds of the default run ended at
fine-tuned mAP50 0.638 / 0.582 that way against 0.690 / 0.683 in one process (BENCHMARKS.md §0e); with the
statistics of all 16 images, as one process computes them, the default ended at 0.701.

`GlobalBatchNorm2d` is a `nn.BatchNorm2d` (the class of a module is swapped in place, so the sparsity hook's
and the EMA's references, `isinstance` checks and state_dict keys are untouched): in training mode under an
initialised process group it normalises with the global batch's statistics (one all_gather forward, one
all_reduce backward, ATen's kernels for the elementwise work: `_GlobalBatchNorm`), otherwise it is
BatchNorm2d's own forward. A first version built the same result from autograd'ed tensor ops and cost 62 %
more per training step than ATen's BatchNorm on one CPU thread.
"""
from __future__ import annotations

import torch
from torch import nn


class _GlobalBatchNorm(torch.autograd.Function):
    """Batch normalisation with the statistics of every rank's micro-batch, on ATen's CPU kernels.

    Forward: each rank's (mean, biased var) from ATen's kernel, all-gathered and combined (Chan's parallel
    formula: no E[x^2] - mean^2 cancellation), then ATen's batch_norm with those statistics. Backward:
    ATen's training-mode backward given the global mean/invstd averages dy and dy * x_hat over this rank's
    images only; the missing part is per channel affine in x_hat, so one all_reduce of the local sums
    (sum dy, sum dy * x_hat) and one fused pass correct it. The weight and bias gradients stay local: DDP
    averages them (the trainer scales the loss by the world size)."""

    @staticmethod
    def forward(ctx, x, weight, bias, bn):
        import torch.distributed as dist

        # ATen's statistics kernel (mean, biased var): torch.var_mean over (N, H, W) of an NCHW tensor took
        # 20 ms where this takes 4.3 (8 x 32 x 128 x 128, one thread)
        mean, var = torch.batch_norm_update_stats(x, None, None, 0.0)
        count = x.numel() // x.shape[1]
        local = torch.cat([mean, var, mean.new_full((1,), float(count))])
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local)
        c = x.shape[1]
        stats = torch.stack(parts)                           # world x (mean | var | count)
        counts = stats[:, 2 * c:]
        n = counts.sum()
        mean_g = (stats[:, :c] * counts).sum(0) / n
        var_g = ((stats[:, c:2 * c] + (stats[:, :c] - mean_g) ** 2) * counts).sum(0) / n
        if bn.track_running_stats:
            bn.num_batches_tracked.add_(1)
            m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            bn.running_mean.mul_(1 - m).add_(mean_g, alpha=m)
            bn.running_var.mul_(1 - m).add_(var_g * (n / (n - 1)), alpha=m)    # unbiased, as BatchNorm keeps
        invstd = torch.rsqrt(var_g + bn.eps)
        ctx.save_for_backward(x, weight, mean_g, invstd)
        ctx.eps, ctx.count, ctx.n = bn.eps, count, float(n)
        return torch.batch_norm(x, weight, bias, mean_g, var_g, False, 0.0, bn.eps, False)

    @staticmethod
    def backward(ctx, dy):
        import torch.distributed as dist

        x, weight, mean, invstd = ctx.saved_tensors
        dy = dy.contiguous()
        dx, dw, db = torch.ops.aten.native_batch_norm_backward(
            dy, x, weight, None, None, mean, invstd, True, ctx.eps, [True, weight is not None, True])
        if weight is None:
            dw = (dy * ((x - mean[None, :, None, None]) * invstd[None, :, None, None])).sum((0, 2, 3))
        sums = torch.cat([db, dw])
        dist.all_reduce(sums)
        c = x.shape[1]
        # ATen subtracted w*invstd*(local mean of dy + x_hat * local mean of dy*x_hat); global means wanted
        scale = (weight if weight is not None else torch.ones_like(invstd)) * invstd
        d1 = (db / ctx.count - sums[:c] / ctx.n) * scale                # per channel: constant part
        d2 = (dw / ctx.count - sums[c:] / ctx.n) * scale * invstd       # per channel: slope in x
        dx.addcmul_(x, d2[None, :, None, None]).add_((d1 - d2 * mean)[None, :, None, None])
        return dx, (dw if weight is not None else None), (db if ctx.needs_input_grad[2] else None), None


def _distributed() -> bool:
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class GlobalBatchNorm2d(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _distributed()):
            return super().forward(x)
        return _GlobalBatchNorm.apply(x, self.weight, self.bias, self)


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
