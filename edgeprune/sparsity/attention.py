"""Feature attention loss: how far the student's spatial attention on the P3-P5 neck features drifts
from the frozen dense teacher's, weighted towards ground-truth targets (small ones weighted up).

A(F) = vec(mean_c |F_c|^p) / ||vec(mean_c |F_c|^p)||_2          (Zagoruyko & Komodakis style, per image)
dev  = sum_x w(x) (A_s(x) - A_t(x))^2,   w = W / mean(W)         (= squared L2 distance when W == 1, in [0, 2])
W(x) = 1 + fg_weight * max_{boxes b covering x} boost(b),  boost(b) = clip(sqrt(small_area / area_b), 1, small_boost)
"""
from __future__ import annotations

from typing import Sequence

import torch

STRIDES = (8, 16, 32)


def attention_map(feat: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """[B, C, H, W] -> [B, H*W], non-negative, unit L2 norm per image."""
    a = feat.float().abs().pow(p).mean(1).flatten(1)
    # Scale to max 1 first so tiny features do not underflow (detached: the L2 normalisation below is
    # scale-invariant, so the gradient stays exact). A map whose max is below 1e-20 (a level pruned to
    # zero) is treated as flat, and the 1e-12 floor avoids 0/0: no NaN or overflowing gradients.
    amax = a.amax(dim=1, keepdim=True).detach()
    a = a * torch.where(amax > 1e-20, 1.0 / amax.clamp_min(1e-20), torch.ones_like(amax)) + 1e-12
    return a / a.norm(dim=1, keepdim=True)


def target_weights(targets: torch.Tensor | None, batch: int, h: int, w: int, stride: int, fg_weight: float = 4.0,
                   small_area: float = 1024.0, small_boost: float = 4.0,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Per-pixel weight map [B, H, W] of one feature level, on `device` (default: the targets').

    `targets` is [M, 6] = (image index, class, cx, cy, w, h), box coordinates normalised to the input.
    Every box marks at least the cell holding its centre, so boxes smaller than a cell still count.
    All boxes at once on the targets' device (no host read per step); the box arithmetic is float64, as the
    per-box Python formula it replaces, so the weights are the same to the bit."""
    if device is None:
        device = targets.device if targets is not None else "cpu"
    weights = torch.ones(batch, h, w, device=device)
    if targets is None or len(targets) == 0 or fg_weight == 0:
        return weights
    t = targets.detach().to(device, torch.float64)
    img, cx, cy, bw, bh = t[:, 0].long(), t[:, 2], t[:, 3], t[:, 4], t[:, 5]
    area = (bw * bh * ((h * stride) * (w * stride))).clamp_min(1e-6)
    value = (1.0 + fg_weight * torch.sqrt(small_area / area).clamp(1.0, small_boost)).float()   # [M]

    def span(c: torch.Tensor, side: torch.Tensor, n: int) -> torch.Tensor:
        """[M, n] cells covered along one axis: [floor(lo), ceil(hi)) widened to the centre's cell, clipped."""
        centre = torch.trunc(c * n)
        lo = torch.minimum(torch.floor((c - side / 2) * n), centre).clamp_min(0)
        hi = torch.maximum(torch.ceil((c + side / 2) * n), centre + 1).clamp_max(n)
        cells = torch.arange(n, device=device, dtype=torch.float64)
        return (cells >= lo[:, None]) & (cells < hi[:, None])

    inside = span(cy, bh, h)[:, :, None] & span(cx, bw, w)[:, None, :]                          # [M, H, W]
    boxes = torch.where(inside, value[:, None, None], torch.ones((), device=device))
    # each pixel keeps the largest weight of the boxes covering it (an order-free reduction: deterministic)
    weights.view(batch, -1).scatter_reduce_(0, img[:, None].expand(-1, h * w), boxes.view(len(t), -1), "amax")
    return weights


def level_weights(feats: Sequence[torch.Tensor], targets: torch.Tensor | None, fg_weight: float,
                  small_area: float, small_boost: float) -> list[torch.Tensor]:
    """[B, H*W] weights per level, normalised to mean 1 per image, on the features' device."""
    out = []
    for f, s in zip(feats, STRIDES):
        b, _, h, w = f.shape
        wm = target_weights(targets, b, h, w, s, fg_weight, small_area, small_boost, f.device).flatten(1)
        out.append((wm / wm.mean(1, keepdim=True)).to(f.dtype))
    return out


def reference(teacher: Sequence[torch.Tensor], targets: torch.Tensor | None = None, p: float = 2.0,
              fg_weight: float = 4.0, small_area: float = 1024.0, small_boost: float = 4.0
              ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The teacher's side of `attention_deviation`: (per-level target weights, teacher attention maps). Pass it
    as `ref` to score many students against one teacher without recomputing it (the ratio solver)."""
    return (level_weights(teacher, targets, fg_weight, small_area, small_boost),
            [attention_map(ft.detach(), p) for ft in teacher])


def attention_deviation(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor] | None,
                        targets: torch.Tensor | None = None, p: float = 2.0, fg_weight: float = 4.0,
                        small_area: float = 1024.0, small_boost: float = 4.0,
                        ref: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None) -> torch.Tensor:
    """Per-image deviation [B], averaged over the levels. 0 for identical features. `ref`: `reference(...)`
    of the teacher features and targets, used instead of `teacher` and `targets`."""
    if ref is None:
        ref = reference(teacher, targets, p, fg_weight, small_area, small_boost)
    devs = []
    for fs, at, wl in zip(student, ref[1], ref[0]):
        diff = attention_map(fs, p) - at
        devs.append((wl * diff.pow(2)).sum(1))
    return torch.stack(devs, 0).mean(0)


def attention_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                   targets: torch.Tensor | None = None, **kw: float) -> torch.Tensor:
    """Scalar loss = batch mean of `attention_deviation` (differentiable w.r.t. the student)."""
    return attention_deviation(student, teacher, targets, **kw).mean()


def target_energy(feats: Sequence[torch.Tensor], targets: torch.Tensor | None, p: float = 2.0,
                  fg_weight: float = 4.0, small_area: float = 1024.0, small_boost: float = 4.0) -> torch.Tensor:
    """Attention mass on targets: sum over levels of mean_x W'(x) * mean_c |F|^p with W' the *extra*
    target weight (0 outside boxes). Its gradient w.r.t. a BN gamma, times gamma, is that channel's
    Taylor importance for the targets (used by self-adaptation and the ratio solver)."""
    total = feats[0].new_zeros(())
    for f, wl in zip(feats, level_weights(feats, targets, fg_weight, small_area, small_boost)):
        raw = f.abs().pow(p).mean(1).flatten(1)
        fg = (wl - wl.min(1, keepdim=True).values).clamp_min(0)
        total = total + (fg * raw).mean(1).sum() / max(1, f.shape[0])
    return total
