"""Ratio solver: per-layer kept channels from the feature attention loss, scaled to a global FLOPs target.

1. importance of each channel: |gamma| (optionally x its target-attention Taylor importance);
2. per unit (a BN, or a residual group of BNs masked jointly, kept set = union of the members' top-k)
   the attention deviation dev_u(k) of a copy masked to k channels (gamma, beta := 0 for the rest), for
   k on a grid of keep fractions rounded up to `round_to`, at least `min_channels` (made monotone in k);
3. a common tolerance tau: each unit keeps the smallest k with dev_u(k) <= tau. tau = attention_tol, raised
   if needed until the analytic FLOPs reduction reaches `flops_target` (the target is a floor).
The slimming baseline (`mode="threshold"`) uses one global |gamma| percentile instead.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn
from tqdm import tqdm

from ..config import PruneConfig, SparseConfig
from ..errors import PruneError, SparsityError
from ..fsio import atomic_write_json
from .attention import attention_deviation, target_energy
from ..models.spec import spec_sha
from ..prune.recombine import round_count
from .bnscan import junction_bns, prunable_bns, slimming_excluded, unwrap
from .graph import conv_flops, trace_channels

Batch = tuple[torch.Tensor, torch.Tensor]   # (imgs [B,3,S,S], targets [M,6])


def _check_target(value: float, key: str) -> None:
    if not 0.0 < value < 1.0:
        raise SparsityError(f"config key {key}: must lie strictly between 0 and 1, got {value}")


def round_keep(k: float, channels: int, prune: PruneConfig) -> int:
    """Kept count as the pruner rounds it (prune.recombine.round_count): at least min_channels, rounded up
    to a multiple of round_to, at most all channels."""
    return round_count(int(math.ceil(k - 1e-9)), channels, prune.round_to, prune.min_channels)


def channel_importance(model: nn.Module, batches: Sequence[Batch], cfg: SparseConfig,
                       bns: dict[str, nn.BatchNorm2d]) -> dict[str, torch.Tensor]:
    """|gamma| per channel of `bns` (prunable_bns); with importance="taylor" scaled by (0.5 + 0.5 T_c /
    mean_layer T), where T_c = |gamma_c dE/dgamma_c| and E is the attention mass on targets
    (attention.target_energy)."""
    imp = {n: m.weight.detach().abs().clone() for n, m in bns.items()}
    if cfg.importance != "taylor" or not batches:
        return imp
    net = unwrap(model)
    was = net.training
    net.eval()
    taylor = {n: torch.zeros_like(v) for n, v in imp.items()}
    params = [bns[n].weight for n in imp]
    for imgs, targets in batches:
        energy = target_energy(net.forward_features(imgs), targets, p=cfg.attention_p, fg_weight=cfg.fg_weight,
                               small_area=cfg.small_area, small_boost=cfg.small_boost)
        grads = torch.autograd.grad(energy, params, allow_unused=True)
        for n, g, p in zip(imp, grads, params):
            if g is not None:
                taylor[n] += (g * p.detach()).abs()
    net.train(was)
    for n in imp:
        mean = taylor[n].mean()
        if mean > 0:
            imp[n] = imp[n] * (0.5 + 0.5 * taylor[n] / mean)
    return imp


class _Unit:
    """A BN or a residual group pruned as one."""

    def __init__(self, uid: str, members: list[str], channels: int):
        self.uid, self.members, self.channels = uid, members, channels
        self.candidates: dict[int, dict[str, Any]] = {}    # k -> {"own": {bn: idx}, "kept": set, "dev": float}

    def select(self, k: int, imp: dict[str, torch.Tensor], prune: PruneConfig) -> dict[str, Any]:
        own = {m: set(torch.topk(imp[m], k).indices.tolist()) for m in self.members}
        kept = set().union(*own.values())
        if len(self.members) > 1:           # round the union up, filling by the members' best importance
            target = round_keep(len(kept), self.channels, prune)
            if target > len(kept):
                best = torch.stack([imp[m] for m in self.members]).max(0).values
                order = [i for i in torch.argsort(best, descending=True).tolist() if i not in kept]
                kept.update(order[: target - len(kept)])
        return {"own": own, "kept": kept}


def _units(graph: Any, bns: dict[str, nn.BatchNorm2d]) -> list[_Unit]:
    grouped = junction_bns(graph)
    in_group = {m for ms in grouped.values() for m in ms}
    units = [_Unit(gid, ms, bns[ms[0]].num_features) for gid, ms in grouped.items()]
    units += [_Unit(n, [n], m.num_features) for n, m in bns.items() if n not in in_group]
    return units


class _Masker:
    """Zeroes gamma (and beta) of unkept channels in place, restoring them afterwards."""

    def __init__(self, bns: dict[str, nn.BatchNorm2d], mask_beta: bool):
        self.bns, self.mask_beta = bns, mask_beta

    @torch.no_grad()
    def run(self, drop: dict[str, list[int]], fn):
        saved = {n: (self.bns[n].weight[idx].clone(), self.bns[n].bias[idx].clone()) for n, idx in drop.items()}
        try:
            for n, idx in drop.items():
                self.bns[n].weight[idx] = 0.0
                if self.mask_beta:
                    self.bns[n].bias[idx] = 0.0
            return fn()
        finally:
            for n, idx in drop.items():
                self.bns[n].weight[idx], self.bns[n].bias[idx] = saved[n]


def solve_ratios(model: nn.Module, batches: Sequence[Batch], cfg: SparseConfig, prune: PruneConfig,
                 mode: str = "attention", progress: bool = False) -> dict[str, Any]:
    """The ratios.json document (CONTRACTS.md) for `model` (a Detector with `spec` and `forward_features`).

    `batches` are a few validation (imgs, targets) pairs. mode: "attention" (L1RR) or "threshold" (slimming)."""
    _check_target(cfg.flops_target, "sparse.flops_target")
    _check_target(cfg.target, "sparse.target")
    if mode not in ("attention", "threshold"):
        raise SparsityError(f"ratio solver mode {mode!r}: use 'attention' or 'threshold'")
    if not batches:
        raise SparsityError("ratio solver: no validation batches given (the val split is empty?)")
    net = unwrap(model)
    convs = trace_channels(net, batches[0][0][:1], prune.skip_unsupported)
    bns = prunable_bns(net, convs)
    dense_flops = sum(conv_flops(convs).values())
    if mode == "threshold":
        layers, extra = _threshold(net, bns, cfg, prune, convs)
    else:
        layers, extra = _attention(net, bns, batches, cfg, prune, convs, dense_flops, progress)
    layers = {n: layers[n] for n in bns}                 # model order (plots, diffs)
    kept_eff = {n: set(e.get("group_keep_idx", e["keep_idx"])) for n, e in layers.items()}
    flops = sum(conv_flops(convs, kept_eff).values())
    return {"version": 1, "spec_sha": spec_sha(net.spec), "method": cfg.method, "mode": mode,
            "zero_threshold": cfg.zero_threshold, "flops_dense": dense_flops, "flops_kept": flops,
            "flops_reduction": 1.0 - flops / dense_flops, **extra, "layers": layers}


def _entry(channels: int, keep_idx: Iterable[int], reason: str, **extra: Any) -> dict[str, Any]:
    idx = sorted(int(i) for i in keep_idx)
    return {"channels": channels, "keep": len(idx), "keep_idx": idx, "reason": reason, **extra}


def _threshold(net: nn.Module, bns: dict[str, nn.BatchNorm2d], cfg: SparseConfig, prune: PruneConfig,
               graph: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Network slimming: one global |gamma| percentile (at `target`) over the penalised BNs, never above
    a layer's largest |gamma|; residual-tied BNs keep everything."""
    skip = slimming_excluded(net, graph)
    pool = {n: m.weight.detach().abs() for n, m in bns.items() if n not in skip}
    allg = torch.cat(list(pool.values()))
    thr = float(torch.quantile(allg, cfg.target))
    thr = min(thr, min(float(g.max()) for g in pool.values()) - 1e-12)
    layers = {}
    for n, m in bns.items():
        c = m.num_features
        if n in skip:
            layers[n] = _entry(c, range(c), "slimming: residual-tied BN, not pruned")
            continue
        g = pool[n]
        k = round_keep(int((g > thr).sum()), c, prune)
        layers[n] = _entry(c, torch.topk(g, k).indices.tolist(), f"slimming: |gamma| > {thr:.4g} (global)")
    return layers, {"threshold": thr}


def _attention(net: nn.Module, bns: dict[str, nn.BatchNorm2d], batches: Sequence[Batch], cfg: SparseConfig,
               prune: PruneConfig, convs: dict, dense_flops: float, progress: bool):
    imp = channel_importance(net, batches, cfg, bns)
    kw = {"p": cfg.attention_p, "fg_weight": cfg.fg_weight, "small_area": cfg.small_area,
          "small_boost": cfg.small_boost}
    was = net.training
    net.eval()
    with torch.no_grad():
        refs = [net.forward_features(imgs) for imgs, _ in batches]

    def deviation() -> float:
        with torch.no_grad():
            devs = [attention_deviation(net.forward_features(imgs), ref, t, **kw).mean()
                    for (imgs, t), ref in zip(batches, refs)]
        return float(torch.stack(devs).mean())

    masker = _Masker(bns, cfg.mask_beta)
    units = _units(convs, bns)
    for u in tqdm(units, desc="ratio solver", disable=not progress):
        ks = sorted({round_keep(u.channels * j / cfg.ratio_grid, u.channels, prune)
                     for j in range(1, cfg.ratio_grid + 1)} | {u.channels}, reverse=True)
        worst = 0.0
        for k in ks:        # from keeping all down to the fewest: dev made non-decreasing as k shrinks
            sel = u.select(k, imp, prune)
            drop = {m: sorted(set(range(u.channels)) - sel["kept"]) for m in u.members}
            dev = 0.0 if not any(drop.values()) else masker.run(drop, deviation)
            worst = max(worst, dev)
            u.candidates[k] = {**sel, "dev": worst}
    net.train(was)

    def choose(tau: float) -> dict[str, int]:
        return {u.uid: min(k for k, c in u.candidates.items() if c["dev"] <= tau) for u in units}

    def reduction(choice: dict[str, int]) -> float:
        kept = {m: units_by[uid].candidates[k]["kept"] for uid, k in choice.items() for m in units_by[uid].members}
        return 1.0 - sum(conv_flops(convs, kept).values()) / dense_flops

    units_by = {u.uid: u for u in units}
    taus = sorted({c["dev"] for u in units for c in u.candidates.values()} | {cfg.attention_tol})
    tau = cfg.attention_tol
    if reduction(choose(tau)) < cfg.flops_target:
        # The reduction grows with tau, so bisect for the smallest tau that meets the target (a linear scan
        # recomputes the FLOPs for every distinct deviation value: minutes on a real model).
        higher = [t for t in taus if t > tau]
        lo, hi = 0, len(higher) - 1
        if not higher or reduction(choose(higher[hi])) < cfg.flops_target:
            tau = taus[-1]
        else:
            while lo < hi:
                mid = (lo + hi) // 2
                if reduction(choose(higher[mid])) >= cfg.flops_target:
                    hi = mid
                else:
                    lo = mid + 1
            tau = higher[lo]
    choice = choose(tau)
    layers: dict[str, Any] = {}
    for u in units:
        k = choice[u.uid]
        cand = u.candidates[k]
        why = "within tol" if cand["dev"] <= cfg.attention_tol else "tol raised to meet flops_target"
        for m in u.members:
            reason = f"attention dev {cand['dev']:.4g} <= tau {tau:.4g} ({why})"
            if len(u.members) > 1:
                layers[m] = _entry(u.channels, cand["own"][m], reason, group=u.uid,
                                   group_keep_idx=sorted(cand["kept"]))
            else:
                layers[m] = _entry(u.channels, cand["kept"], reason)
    reached = reduction(choice)
    return layers, {"attention_tol": cfg.attention_tol, "tau": tau, "flops_target": cfg.flops_target,
                    "flops_target_met": reached >= cfg.flops_target - 1e-9}


def save_ratios(doc: dict[str, Any], path: str | Path) -> None:
    atomic_write_json(path, doc)


def load_ratios(path: str | Path, model: nn.Module) -> dict[str, Any]:
    """Read ratios.json and check it belongs to `model`'s architecture: the spec_sha must be present and match,
    and every layer is checked by the pruner's own validator (`prune.io.keep_from_ratios`)."""
    from ..prune.io import keep_from_ratios

    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise SparsityError(f"{path}: ratios file not found (run `edgeprune sparse` first)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SparsityError(f"{path}: not valid JSON ({exc})") from None
    net = unwrap(model)
    want = spec_sha(net.spec)
    if isinstance(doc, dict) and doc.get("spec_sha") != want:
        raise SparsityError(f"{path}: spec_sha {str(doc.get('spec_sha'))[:12]}... does not match this model's "
                            f"{want[:12]}... (ratios for another architecture); re-run the sparse stage")
    try:
        keep_from_ratios(doc, net, str(path))
    except PruneError as exc:
        raise SparsityError(str(exc)) from None
    return doc
