"""The L1RR penalty  P = s(t) * sum_l lam_l * sum_c w_lc |gamma_lc|  (+ beta_l1 * s(t) * sum |beta|),
applied after backward, before the optimizer step, either as a subgradient
    gamma.grad += s(t) * lam_l * w_lc * sign(gamma)                      (l1_update="subgradient"; slimming)
or as its proximal step (soft-thresholding with the BN group's learning rate eta)
    gamma <- sign(gamma) * max(|gamma| - eta * s(t) * lam_l * w_lc, 0)    (l1_update="proximal", default)
The proximal form keeps a zeroed channel at exactly 0 instead of letting it oscillate around 0 with an
amplitude of eta*s*w (which, with momentum, can exceed zero_threshold).

- reweighting:   w_lc ~ 1/(|gamma_lc|+eps) * (t_lc/mean_l t + 0.1)^(-reweight_taylor), normalised to mean 1 per
                 layer, capped at reweight_max, refreshed every `refresh_every` steps (reweighted L1, Candes et
                 al. 2008); t_lc = EMA of |gamma_lc * dLoss/dgamma_lc| (first-order Taylor importance), which
                 separates channels even when all |gamma| are still equal (a freshly trained dense model);
- dynamic:       s(t) ramps in, then follows the sparsity gap (see `StrengthController`), then relaxes;
- self-adaptive: lam_l from each layer's gamma redundancy and target-attention importance (`layer_lams`);
- slimming:      s(t) = slim_lam (optionally decayed linearly to 0.1x), w = 1, lam_l = 1, and residual-tied
                 BNs are not penalised (the popular YOLOv5 slimming recipe).

The per-step updates (penalty, Taylor EMA) run as fused `torch._foreach_*` ops over all penalised layers: a few
kernel launches per step instead of several per layer. The zero share that drives s(t) stays on the device, and
so does s(t) from the first step that depends on it: no host read per step (the logs read them once an epoch).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..config import SparseConfig
from .bnscan import prunable_bns, slimming_excluded
from .graph import trace_channels


class StrengthController:
    """Global strength s(t) for `total_steps` optimizer steps.

    dynamic (l1rr): ramp      s = lam * t / T_ramp                                  t < T_ramp
                    control   log s += dyn_gain * (target - share) * 100 / T       (grows behind, shrinks ahead)
                    relax     s = s_relax * (1 - (1 - relax_to) * progress)          last relax_frac of steps
    not dynamic:    s = lam (l1rr) or the slimming schedule lam * (1 - 0.9 t / T).
    """

    def __init__(self, cfg: SparseConfig, total_steps: int):
        self.cfg = cfg
        self.total = max(1, int(total_steps))
        self.slimming = cfg.method == "slimming"
        self.base = cfg.slim_lam if self.slimming else cfg.lam
        self.value = self.base          # the controller's integrator (in the control phase)
        self.relax_from: float | None = None

    @property
    def ramp_end(self) -> int:
        return int(round(self.cfg.ramp_frac * self.total))

    @property
    def relax_start(self) -> int:
        return int(round((1.0 - self.cfg.relax_frac) * self.total))

    def calibrate(self, median_gamma: float, lr0: float) -> None:
        """lam_auto: raise the base strength so that lr0 * base * steps = median |gamma| (proximal units)."""
        if self.slimming or not self.cfg.lam_auto or lr0 <= 0:
            return
        self.base = max(self.cfg.lam, median_gamma / (lr0 * self.total))
        self.value = self.base

    def phase(self, step: int) -> str:
        if step < self.ramp_end:
            return "ramp"
        return "relax" if step >= self.relax_start else "control"

    def update(self, step: int, share: float | torch.Tensor) -> float | torch.Tensor:
        """s(t) for this step, given the current share of |gamma| below zero_threshold: a float, or a float64
        device tensor (then s(t) becomes one in the control phase, with the same arithmetic)."""
        cfg, t = self.cfg, min(step, self.total)
        if self.slimming or not cfg.dynamic:
            decay = (1.0 - 0.9 * t / self.total) if (self.slimming and cfg.slim_decay) else 1.0
            return self.base * decay
        phase = self.phase(step)
        if phase == "ramp":
            return self.base * (step + 1) / max(1, self.ramp_end)
        if phase == "control":
            rate = cfg.dyn_gain * (cfg.target - share) * 100.0 / self.total
            lo, hi = cfg.lam_min_mult * self.base, cfg.lam_max_mult * self.base
            if isinstance(rate, torch.Tensor):
                self.value = (self.value * torch.exp(rate)).clamp(lo, hi)
            else:
                self.value = min(max(self.value * math.exp(rate), lo), hi)
            return self.value
        if self.relax_from is None:
            self.relax_from = self.value
        span = max(1, self.total - self.relax_start)
        progress = min(1.0, (step - self.relax_start) / span)
        return self.relax_from * (1.0 - (1.0 - cfg.relax_to) * progress)

    def state_dict(self) -> dict[str, Any]:
        return {"value": float(self.value), "total": self.total, "base": self.base,
                "relax_from": None if self.relax_from is None else float(self.relax_from)}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.value, self.relax_from, self.total = float(d["value"]), d["relax_from"], int(d["total"])
        self.base = float(d.get("base", self.base))


def reweight(gamma: torch.Tensor, eps: float, cap: float, taylor: torch.Tensor | None = None,
             taylor_exp: float = 0.0) -> torch.Tensor:
    """Normalised reweighting of one layer: mean 1 before capping; weak (and, with `taylor`, unimportant)
    channels > 1, strong ones < 1."""
    w = 1.0 / (gamma.detach().abs() + eps)
    if taylor is not None and taylor_exp > 0 and float(taylor.mean()) > 0:
        w = w * (taylor / taylor.mean() + 0.1) ** (-taylor_exp)
    return (w / w.mean()).clamp(max=cap)


def redundancy(gamma: torch.Tensor) -> float:
    """1 - participation ratio / C: 0 when all |gamma| are equal, -> 1 when a few channels carry the layer."""
    g = gamma.detach().abs().double()
    c = g.numel()
    denom = float((g * g).sum())
    if denom == 0.0:
        return 1.0
    return float(1.0 - (g.sum() ** 2 / denom) / c)


def layer_lams(red: dict[str, float], imp: dict[str, float], sizes: dict[str, int], cfg: SparseConfig) -> dict[str, float]:
    """Self-adaptive per-layer multipliers, channel-weighted mean 1, clipped to [1/adapt_clip, adapt_clip].

    lam_l ~ exp(a_r * (r_l - mean r)) * (I_l / mean I)^(-a_i): redundant layers get more penalty, layers
    whose channels carry the targets' attention (Taylor importance I_l) get less."""
    mean_r = sum(red.values()) / max(1, len(red))
    mean_i = sum(imp.values()) / max(1, len(imp)) if imp else 0.0
    raw = {}
    for name in red:
        v = math.exp(cfg.adapt_redundancy * (red[name] - mean_r))
        if mean_i > 0 and name in imp:
            v *= (max(imp[name], 1e-12) / mean_i) ** (-cfg.adapt_importance)
        raw[name] = v
    total = sum(sizes[n] for n in raw)
    norm = sum(raw[n] * sizes[n] for n in raw) / max(1, total)
    return {n: min(max(v / norm, 1.0 / cfg.adapt_clip), cfg.adapt_clip) for n, v in raw.items()}


class L1RRRegularizer:
    """Holds the per-channel weights, per-layer lambdas and s(t); `apply` adds the subgradients."""

    def __init__(self, model: nn.Module, cfg: SparseConfig, total_steps: int, skip_unsupported: bool = False):
        self.cfg = cfg
        graph = trace_channels(model, skip_unsupported=skip_unsupported)
        bns = prunable_bns(model, graph)
        skip = slimming_excluded(model, graph) if cfg.method == "slimming" else set()
        self.bns = {n: m for n, m in bns.items() if n not in skip}
        self.all_bns = bns
        self.controller = StrengthController(cfg, total_steps)
        self.weights = {n: torch.ones_like(m.weight, requires_grad=False) for n, m in self.bns.items()}
        self.lams = {n: 1.0 for n in self.bns}
        self.importance: dict[str, float] = {}    # EMA of per-layer target-attention Taylor importance
        self.taylor: dict[str, torch.Tensor] = {}  # EMA of per-channel |gamma * dLoss/dgamma|
        self.redundancy: dict[str, float] = {}
        # s(t) and the zero share of the last apply(): device tensors where they depend on the share (read rarely)
        self.strength: float | torch.Tensor = 0.0
        self.last_share: float | torch.Tensor = 0.0
        self.reweighting = cfg.method == "l1rr" and cfg.reweight
        self.adaptive = cfg.method == "l1rr" and cfg.adaptive
        self._channel_layer: torch.Tensor | None = None     # per channel of the penalised BNs: its layer's index
        self._lams_on_device: tuple[tuple[float, ...], torch.Tensor] | None = None

    def zero_share(self, penalised_only: bool = True) -> float:
        return float(self.zero_share_tensor(penalised_only))

    def zero_share_tensor(self, penalised_only: bool = True) -> torch.Tensor:
        """The share of |gamma| below zero_threshold as a 0-dim float64 tensor on the BNs' device."""
        bns = self.bns if penalised_only else self.all_bns
        g = torch.cat([m.weight.detach().abs().flatten() for m in bns.values()])
        return (g < self.cfg.zero_threshold).float().mean().double()

    def refresh(self) -> None:
        """Recompute reweighting weights and self-adaptive lambdas from the current gammas."""
        if self.reweighting:
            for n, m in self.bns.items():
                self.weights[n] = reweight(m.weight, self.cfg.reweight_eps, self.cfg.reweight_max,
                                           self.taylor.get(n), self.cfg.reweight_taylor)
            self._protect()
        if self.adaptive:
            mom = self.cfg.adapt_momentum
            for n, m in self.bns.items():
                r = redundancy(m.weight)
                self.redundancy[n] = r if n not in self.redundancy else mom * self.redundancy[n] + (1 - mom) * r
            sizes = {n: m.num_features for n, m in self.bns.items()}
            self.lams = layer_lams(self.redundancy, self.importance, sizes, self.cfg)

    def channel_scores(self) -> dict[str, torch.Tensor]:
        """Global importance of each penalised channel: |gamma| * (t/mean_layer t + 0.1)^reweight_taylor."""
        out = {}
        for n, m in self.bns.items():
            g = m.weight.detach().abs()
            t = self.taylor.get(n)
            if t is not None and self.cfg.reweight_taylor > 0 and float(t.mean()) > 0:
                g = g * (t / t.mean() + 0.1) ** self.cfg.reweight_taylor
            out[n] = g
        return out

    def _protect(self) -> None:
        """Zero the weight of the channels ranked above the (target + protect_margin) quantile of importance."""
        share = self.cfg.target + self.cfg.protect_margin
        if self.cfg.protect_margin < 0 or share >= 1.0:
            return
        scores = self.channel_scores()
        q = float(torch.quantile(torch.cat(list(scores.values())).float(), share))
        for n, sc in scores.items():
            self.weights[n] = torch.where(sc > q, torch.zeros_like(self.weights[n]), self.weights[n])

    def observe_importance(self, taylor: dict[str, torch.Tensor]) -> None:
        """Feed per-channel Taylor importances (|gamma * dE/dgamma|); kept as a per-layer EMA."""
        mom = self.cfg.adapt_momentum
        names = [n for n in taylor if n in self.bns]
        if not names:
            return
        vals = torch.stack([taylor[n].mean().float() for n in names])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # each rank saw other images: average, so every rank keeps identical lambdas (and gammas)
            torch.distributed.all_reduce(vals)
            vals /= torch.distributed.get_world_size()
        for n, v in zip(names, vals.tolist()):
            self.importance[n] = v if n not in self.importance else mom * self.importance[n] + (1 - mom) * v

    def _observe_loss_taylor(self) -> None:
        mom = self.cfg.adapt_momentum
        names = [n for n, m in self.bns.items() if m.weight.grad is not None]
        if not names:
            return
        ws = [self.bns[n].weight.detach() for n in names]
        t = list(torch._foreach_abs(torch._foreach_mul(ws, [self.bns[n].weight.grad for n in names])))
        old = [j for j, n in enumerate(names) if n in self.taylor]
        if old:
            blended = torch._foreach_add(torch._foreach_mul([self.taylor[names[j]] for j in old], mom),
                                         torch._foreach_mul([t[j] for j in old], 1 - mom))
            for j, v in zip(old, blended):
                t[j] = v
        self.taylor.update(zip(names, t))

    @property
    def proximal(self) -> bool:
        return self.cfg.method == "l1rr" and self.cfg.l1_update == "proximal"

    @staticmethod
    def _shrink_(params: list[torch.Tensor], thresholds: list[torch.Tensor], prox: bool) -> None:
        """prox: p <- sign(p) * max(|p| - threshold, 0); else p.grad += threshold * sign(p) (fused over params)."""
        signs = torch._foreach_sign(params)
        if prox:
            mags = torch._foreach_abs(params)
            torch._foreach_sub_(mags, thresholds)
            torch._foreach_clamp_min_(mags, 0)
            torch._foreach_mul_(mags, signs)
            torch._foreach_copy_(params, mags)
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        torch._foreach_add_([p.grad for p in params], torch._foreach_mul(thresholds, signs))

    def _per_channel(self, factor: float | torch.Tensor) -> list[torch.Tensor]:
        """`factor` (a float or a 0-dim tensor for every penalised BN, or a vector with one entry per BN) as
        float32 tensors shaped like the BN weights: the foreach ops then stay on their fused path, and nothing
        is copied from the host (a blocking copy would wait for the device)."""
        names = list(self.bns)
        dev = self.bns[names[0]].weight.device
        sizes = [self.bns[n].num_features for n in names]
        if self._channel_layer is None or self._channel_layer.device != dev:
            self._channel_layer = torch.repeat_interleave(torch.arange(len(names)), torch.tensor(sizes)).to(dev)
        if not isinstance(factor, torch.Tensor):
            return list(torch.full((sum(sizes),), factor, device=dev).split(sizes))
        factor = factor.float()
        spread = factor[self._channel_layer] if factor.dim() else factor.expand(sum(sizes))
        return list(spread.split(sizes))

    def _lam_vector(self) -> torch.Tensor:
        """The per-layer lambdas as a float64 vector on the BNs' device, copied there only when they change."""
        values = tuple(self.lams[n] for n in self.bns)
        if self._lams_on_device is None or self._lams_on_device[0] != values:
            dev = next(iter(self.bns.values())).weight.device
            self._lams_on_device = (values, torch.tensor(values, dtype=torch.float64).to(dev))
        return self._lams_on_device[1]

    @torch.no_grad()
    def apply(self, step: int, lr: float | None = None) -> float | torch.Tensor:
        """Apply the penalty for this step (see the module doc); returns s(t) (a device tensor in the dynamic
        control and relax phases). `lr` is the BN weights' learning rate, needed by the proximal update (without
        it the subgradient form is used)."""
        names = list(self.bns)
        self.last_share = self.zero_share_tensor()
        s = self.controller.update(step, self.last_share)
        self.strength = s
        if self.reweighting and self.cfg.reweight_taylor > 0:
            self._observe_loss_taylor()
        prox = self.proximal and lr is not None and lr > 0
        # w * float32(s * lam_l) [* lr], s * lam_l in float64 whether s is a float or a device tensor
        shrink = torch._foreach_mul([self.weights[n] for n in names], self._per_channel(s * self._lam_vector()))
        if prox:
            torch._foreach_mul_(shrink, lr)
        self._shrink_([self.bns[n].weight for n in names], shrink, prox)
        if self.cfg.beta_l1 > 0:     # the BN biases (an affine BN has one beta per gamma)
            thr = lr * self.cfg.beta_l1 * s if prox else self.cfg.beta_l1 * s
            self._shrink_([self.bns[n].bias for n in names], self._per_channel(thr), prox)
        return s

    def state_dict(self) -> dict[str, Any]:
        return {"controller": self.controller.state_dict(), "weights": {n: w.cpu() for n, w in self.weights.items()},
                "lams": dict(self.lams), "importance": dict(self.importance), "redundancy": dict(self.redundancy),
                "taylor": {n: t.cpu() for n, t in self.taylor.items()}}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.controller.load_state_dict(d["controller"])
        for n, w in d["weights"].items():
            if n in self.weights:
                self.weights[n] = w.to(self.weights[n].device)
        self.lams.update(d["lams"])
        self.importance, self.redundancy = dict(d["importance"]), dict(d["redundancy"])
        self.taylor = {n: t.to(self.weights[n].device) for n, t in d.get("taylor", {}).items() if n in self.weights}
