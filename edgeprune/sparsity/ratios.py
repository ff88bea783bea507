"""Ratio solver: per-layer kept channels from the feature attention loss, scaled to a global FLOPs target.

1. importance of each channel: |gamma| (optionally x its target-attention Taylor importance);
2. per unit (a BN, or a residual group of BNs masked jointly, kept set = union of the members' top-k)
   the attention deviation dev_u(k) of a copy masked to k channels (gamma, beta := 0 for the rest), for
   k on a grid of keep fractions rounded up to `round_to`, at least `min_channels` (made monotone in k);
3. a common tolerance tau: each unit keeps the smallest k with dev_u(k) <= tau. tau = attention_tol, raised
   if needed until the analytic FLOPs reduction reaches `flops_target` (the target is a floor).
   With prune.target=latency (sparsity/latency.py) tau is raised until the latency predicted from a table is
   at most `prune.latency_budget` x the dense model's, each k snapped to the fastest width of its unit's
   latency staircase at or above it, on multiples of the target's alignment.
The slimming baseline (`mode="threshold"`) uses one global |gamma| percentile instead.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn
from tqdm import tqdm

from ..config import PruneConfig, SparseConfig
from ..errors import SparsityError
from ..fsio import atomic_write_json
from .attention import attention_deviation, reference, target_energy
from ..models.blocks import removable_branches
from ..models.spec import spec_sha
from ..prune.recombine import round_count
from .bnscan import junction_bns, prunable_bns, slimming_excluded
from .graph import unwrap
from .graph import conv_flops, trace_channels
from .latency import GraphLatency, alignment, snap, solver_table

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
        energy = target_energy(net.prediction_features(imgs), targets, p=cfg.attention_p, fg_weight=cfg.fg_weight,
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
        self.snapped: dict[int, dict[str, Any]] = {}       # k -> {"own", "kept"}: widths the latency target snapped to

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


class _Deviation:
    """The solver's evaluation: the mean attention deviation of the model, as currently masked, from the unmasked
    model on the ratio batches. What no mask changes is computed once: the reference side (target weights and
    attention maps) and the outputs of the model's top-level `layers`. A mask inside layer i cannot change what
    the layers that ran before it computed, so an evaluation replays their outputs from memory and runs only
    the rest (the same ops on the same inputs: the same deviation to the bit)."""

    def __init__(self, net: nn.Module, bns: dict[str, nn.BatchNorm2d], batches: Sequence[Batch],
                 kw: dict[str, float]):
        self.net, self.bns, self.batches, self.p = net, bns, batches, kw["p"]
        layers = getattr(net, "layers", None)
        self.layers = list(layers) if isinstance(layers, nn.ModuleList) else []
        self.layer_of = {id(m): i for i, layer in enumerate(self.layers) for m in layer.modules()}
        calls: list[tuple[int, Any]] = []
        hooks = [layer.register_forward_hook(lambda _m, _in, out, i=i: calls.append((i, out)))
                 for i, layer in enumerate(self.layers)]
        self.refs: list[Any] = []
        self.outs: list[dict[int, Any]] = []
        order: list[int] | None = None
        held, budget = 0, _memory_budget(batches)
        try:
            with torch.no_grad():
                for imgs, targets in batches:
                    calls.clear()
                    self.refs.append(reference(net.prediction_features(imgs), targets, **kw))
                    ran = [i for i, _ in calls]
                    order = ran if order is None else order
                    held += sum(o.numel() * o.element_size() for _, o in calls if isinstance(o, torch.Tensor))
                    # replay only where every layer ran once, in one order for all batches, within memory
                    if ran != order or len(set(ran)) != len(ran) or held > budget:
                        order = []
                    self.outs = [*self.outs, dict(calls)] if order else []
                    calls.clear()
        finally:
            for h in hooks:
                h.remove()
        self.order = order or []
        self.position = {i: k for k, i in enumerate(self.order)}
        head = getattr(net, "detect", None)
        self.head_bns = [m for m in head.modules() if isinstance(m, nn.BatchNorm2d)] if head is not None else []

    def _first_changed(self, bn: str) -> int:
        """Position in the replay order of the first layer a mask of `bn` changes: all of them for a BN of the
        head (it runs after every layer), none for a BN outside the replayed layers."""
        m = self.bns[bn]
        if any(m is h for h in self.head_bns):
            return len(self.order)
        return self.position.get(self.layer_of.get(id(m), -1), 0)

    def __call__(self, masked: Sequence[str]) -> float:
        """Deviation with the BNs `masked` (names) masked in place by the caller."""
        first = min((self._first_changed(n) for n in masked), default=0)
        replay = [self.layers[i] for i in self.order[:first]]
        devs = []
        with torch.no_grad():
            for b, (imgs, _) in enumerate(self.batches):
                for layer in replay:
                    layer.forward = functools.partial(_replay, self.outs[b][self.layer_of[id(layer)]])
                try:
                    devs.append(attention_deviation(self.net.prediction_features(imgs), None, p=self.p,
                                                    ref=self.refs[b]).mean())
                finally:
                    for layer in replay:
                        del layer.forward
        return float(torch.stack(devs).mean())


def _replay(out: Any, *args: Any, **kwargs: Any) -> Any:
    return out


def _memory_budget(batches: Sequence[Batch]) -> int:
    """Bytes the solver may hold in layer outputs: half of the free memory of the batches' device."""
    dev = batches[0][0].device
    if dev.type == "cuda":
        return torch.cuda.mem_get_info(dev)[0] // 2
    from ..data.torchdata import cache_budget
    return cache_budget()


def solve_ratios(model: nn.Module, batches: Sequence[Batch], cfg: SparseConfig, prune: PruneConfig,
                 mode: str = "attention", progress: bool = False,
                 table: tuple[dict[str, Any], str] | None = None) -> dict[str, Any]:
    """The ratios.json document (CONTRACTS.md) for `model` (a Detector with `spec` and `prediction_features`).

    `batches` are a few validation (imgs, targets) pairs. mode: "attention" (L1RR) or "threshold" (slimming).
    With prune.target=latency, `table` is (latency table, its source) from `sparsity.latency.solver_table`
    (obtained here when None)."""
    _check_target(cfg.flops_target, "sparse.flops_target")
    _check_target(cfg.target, "sparse.target")
    if mode not in ("attention", "threshold"):
        raise SparsityError(f"ratio solver mode {mode!r}: use 'attention' or 'threshold'")
    if prune.target not in ("flops", "latency"):
        raise SparsityError(f"config key prune.target: {prune.target!r} is not 'flops' or 'latency'")
    if prune.target == "latency":
        _check_target(prune.latency_budget, "prune.latency_budget")
        if mode == "threshold":
            raise SparsityError("prune.target=latency needs the L1RR ratio solver (sparse.method=l1rr); the "
                                "slimming baseline prunes by one global |gamma| threshold")
    if not batches:
        raise SparsityError("ratio solver: no validation batches given (the val split is empty?)")
    net = unwrap(model)
    convs = trace_channels(net, batches[0][0][:1], prune.skip_unsupported)
    bns = prunable_bns(net, convs)
    dense_flops = sum(conv_flops(convs).values())
    if mode == "threshold":
        layers, extra = _threshold(net, bns, cfg, prune, convs)
    else:
        if prune.target == "latency" and table is None:
            table = solver_table(net, prune, int(batches[0][0].shape[-1]))
        layers, extra = _attention(net, bns, batches, cfg, prune, convs, dense_flops, progress,
                                   table if prune.target == "latency" else None)
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
               prune: PruneConfig, convs: dict, dense_flops: float, progress: bool,
               table: tuple[dict[str, Any], str] | None = None):
    lat = None
    if table is not None:
        lat = GraphLatency(convs, table[0], where=table[1])
        # widths on multiples of the target's alignment (the pruner keeps them: they are its own fixed points)
        prune = dataclasses.replace(prune, round_to=alignment(table[0], prune.round_to))
    imp = channel_importance(net, batches, cfg, bns)
    kw = {"p": cfg.attention_p, "fg_weight": cfg.fg_weight, "small_area": cfg.small_area,
          "small_boost": cfg.small_boost}
    was = net.training
    net.eval()
    deviation = _Deviation(net, bns, batches, kw)
    masker = _Masker(bns, cfg.mask_beta)
    units = _units(convs, bns)
    # the latency target may remove a residual block whose branch it prunes to nothing (depth pruning: fewer
    # layers are often the bigger win at batch 1); the FLOPs target keeps min_channels everywhere, as before
    branches = removable_branches(net) if lat else {}
    removable = {u.uid for u in units if u.members == [u.uid] and u.uid in branches}
    for u in tqdm(units, desc="ratio solver", disable=not progress):
        ks = sorted({round_keep(u.channels * j / cfg.ratio_grid, u.channels, prune)
                     for j in range(1, cfg.ratio_grid + 1)} | {u.channels} | ({0} if u.uid in removable else set()),
                    reverse=True)
        worst = 0.0
        for k in ks:        # from keeping all down to the fewest: dev made non-decreasing as k shrinks
            sel = u.select(k, imp, prune)
            drop = {m: sorted(set(range(u.channels)) - sel["kept"]) for m in u.members}
            masked = [m for m, idx in drop.items() if idx]
            dev = 0.0 if not masked else masker.run(drop, lambda: deviation(masked))
            worst = max(worst, dev)
            u.candidates[k] = {**sel, "dev": worst}
    net.train(was)

    def choose(tau: float) -> dict[str, int]:
        return {u.uid: min(k for k, c in u.candidates.items() if c["dev"] <= tau) for u in units}

    def reduction(choice: dict[str, int]) -> float:
        kept = {m: units_by[uid].candidates[k]["kept"] for uid, k in choice.items() for m in units_by[uid].members}
        return 1.0 - sum(conv_flops(convs, kept).values()) / dense_flops

    units_by = {u.uid: u for u in units}

    def selection(u: _Unit, k: int) -> dict[str, Any]:
        """The unit's kept channels at k: a solved candidate, or (a snapped width) the importance's top k."""
        if k not in u.candidates and k not in u.snapped:
            u.snapped[k] = u.select(k, imp, prune)
        return u.candidates.get(k) or u.snapped[k]

    def kept_of(choice: dict[str, int]) -> dict[str, set[int]]:
        return {m: selection(units_by[uid], k)["kept"] for uid, k in choice.items() for m in units_by[uid].members}

    if lat is None:
        final = choose

        def meets(choice: dict[str, int]) -> bool:
            return reduction(choice) >= cfg.flops_target
    else:
        dense_ms = lat.total()
        budget_ms = prune.latency_budget * dense_ms

        def steps(u: _Unit) -> list[int]:
            return sorted({round_keep(c, u.channels, prune) for c in range(u.channels + 1)}
                          | ({0} if u.uid in removable else set()))

        def final(tau: float) -> dict[str, int]:
            return snap(units, choose(tau), lambda u, k: selection(u, k)["kept"], lat, steps)

        def meets(choice: dict[str, int]) -> bool:
            return lat.total(kept_of(choice)) <= budget_ms

    taus = sorted({c["dev"] for u in units for c in u.candidates.values()} | {cfg.attention_tol})
    tau = cfg.attention_tol
    if not meets(final(tau)):
        # The cut grows with tau, so bisect for the smallest tau that meets the target (a linear scan
        # recomputes the FLOPs for every distinct deviation value: minutes on a real model).
        higher = [t for t in taus if t > tau]
        lo, hi = 0, len(higher) - 1
        if not higher or not meets(final(higher[hi])):
            tau = taus[-1]
        else:
            while lo < hi:
                mid = (lo + hi) // 2
                if meets(final(higher[mid])):
                    hi = mid
                else:
                    lo = mid + 1
            tau = higher[lo]
    base, choice = choose(tau), final(tau)
    if lat is not None and tau > cfg.attention_tol:
        # one tau step can drop many units at once (far below the budget): give units back the width they had
        # at the next lower tau, the most deviating first, while the budget still holds
        below = max(t for t in taus if t < tau)
        base_below, wider = choose(below), final(below)
        for u in sorted(units, key=lambda u: -u.candidates[base[u.uid]]["dev"]):
            if wider[u.uid] > choice[u.uid] and meets(dict(choice, **{u.uid: wider[u.uid]})):
                choice[u.uid], base[u.uid] = wider[u.uid], base_below[u.uid]
    target = "flops_target" if lat is None else "latency_budget"
    layers: dict[str, Any] = {}
    for u in units:
        k = choice[u.uid]
        cand, dev = selection(u, k), u.candidates[base[u.uid]]["dev"]
        why = "within tol" if dev <= cfg.attention_tol else f"tol raised to meet {target}"
        reason = f"attention dev {dev:.4g} <= tau {tau:.4g} ({why})"
        if k != base[u.uid]:
            reason += f"; {base[u.uid]} -> {k} channels: the fastest width at or above it on the latency staircase"
        if k == 0:
            reason += "; branch pruned to nothing: the residual block is removed (depth pruning)"
        for m in u.members:
            if len(u.members) > 1:
                layers[m] = _entry(u.channels, cand["own"][m], reason, group=u.uid,
                                   group_keep_idx=sorted(cand["kept"]))
            else:
                layers[m] = _entry(u.channels, cand["kept"], reason)
    if lat is None:
        return layers, {"target": "flops", "attention_tol": cfg.attention_tol, "tau": tau,
                        "flops_target": cfg.flops_target,
                        "flops_target_met": reduction(choice) >= cfg.flops_target - 1e-9}
    predicted = lat.total(kept_of(choice))
    key = table[0]["key"]
    return layers, {"target": "latency", "attention_tol": cfg.attention_tol, "tau": tau,
                    "latency": {"table": table[1], "key": key, "budget": prune.latency_budget,
                                "dense_ms": dense_ms, "budget_ms": budget_ms, "predicted_ms": predicted,
                                "predicted_share": predicted / dense_ms, "met": predicted <= budget_ms + 1e-9,
                                "alignment": prune.round_to,
                                "blocks_removed": [branches[u] for u in sorted(removable) if choice[u] == 0]}}


def save_ratios(doc: dict[str, Any], path: str | Path) -> None:
    atomic_write_json(path, doc)
