"""Physical pruning: slice convs/BNs/linears in place by the plan's kept channel classes.

Exactness. The *masked* model is the dense model with every removed channel's BN gamma and beta set
to 0 (`masked_model(..., zero_beta=True)`): such a channel outputs act(0) = 0 (SiLU/ReLU/ReLU6), so
dropping it changes nothing. With `fold=True` (default) the reference is the dense model with only the
owner BNs' gamma zeroed (what sparse training produces): a removed channel then outputs a constant
act(beta) (through any later op), and that constant is folded into each consumer, into the consumer's
BN running_mean (conv -> BN) or its bias. This is exact for 1x1 consumers; a kxk zero-padded consumer
sees the constant only inside the image, so folding is exact in the interior and approximate on the
border rows/columns.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig
from ..errors import PruneError
from ..metrics.complexity import count
from ..models.blocks import removable_branches
from .graph import ChannelGraph, build_graph
from .io import keep_from_ratios, read_ratios, spec_from_pruned
from .recombine import Plan, decide, recombination_map


@dataclass
class PruneResult:
    model: nn.Module
    recombination_map: dict[str, Any]
    table: list[dict[str, Any]]
    stats: dict[str, Any]
    plan: Plan
    spec: dict[str, Any] | None = None   # set for our detector (prune_from_ratios)


def complexity(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """Parameters and FLOPs (2*MACs) of one eval-mode forward of the example input's first sample."""
    return count(model, tuple(example_input.shape[-2:]), inputs=example_input[:1])


def _tensor(mods: dict[str, nn.Module], dotted: str) -> torch.Tensor:
    mod, _, attr = dotted.rpartition(".")
    return getattr(mods[mod], attr)


def random_bn_stats(model: nn.Module, seed: int = 0, spread: float = 0.3) -> nn.Module:
    """Give every BatchNorm random gamma in [0.5, 1.5), beta and running mean ~ N(0, spread^2) and running var
    in [0.5, 1.5), in place (returned for chaining). A freshly built model's identity BNs would hide a dropped
    or misordered channel from an exactness or parity check; these do not."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * spread)
                m.running_mean.copy_(torch.randn(n, generator=g) * spread)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model


def output_rel_err(ref: Any, out: Any) -> float | None:
    """max |ref - out| / max |ref| over every output tensor (a tensor, or nested lists, tuples and dicts of
    them): the measure of the exactness checks, a pruned model against masked_model. None when the two
    outputs do not have the same shape."""
    a, b = _flat_outputs(ref), _flat_outputs(out)
    if a.shape != b.shape:
        return None
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-12))


def _flat_outputs(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out.flatten()
    if isinstance(out, dict):
        out = list(out.values())
    return torch.cat([_flat_outputs(o) for o in out])


def masked_model(model: nn.Module, plan: Plan, zero_beta: bool = True) -> nn.Module:
    """A dense copy whose removed channels are masked. zero_beta=True (the fold=False reference): every
    gate's scale and shift (BN gamma/beta, or a BN-less producer's weight rows and bias), every BN's
    gamma/beta and every tied parameter (layer scale, position embedding ...) are zeroed on removed
    channels, so those channels are 0. zero_beta=False (the fold=True reference): only the gates' scale."""
    out = copy.deepcopy(model)
    mods = dict(out.named_modules())
    g = plan.graph
    with torch.no_grad():
        for gate in g.gates.values():
            removed = torch.from_numpy(~plan.kept(gate.ids))
            _tensor(mods, gate.scale)[removed] = 0
            if zero_beta and gate.shift is not None:
                _tensor(mods, gate.shift)[removed] = 0
        if zero_beta:
            for bn, ids in g.bn_layouts.items():
                removed = torch.from_numpy(~plan.kept(ids))
                for name in ("weight", "bias"):
                    t = getattr(mods[bn], name, None)
                    if isinstance(t, torch.Tensor):
                        t[removed] = 0
            for dotted, ids in g.params.items():
                _tensor(mods, dotted)[torch.from_numpy(~plan.kept(ids))] = 0
    return out


def _fold(model: nn.Module, plan: Plan, example_input: torch.Tensor) -> dict[str, int] | None:
    """Fold each removed channel's constant output (owner gamma = 0, beta kept) into its consumers. Its
    forward also counts the dense model's complexity (returned; None when nothing is removed)."""
    g = plan.graph
    removed_in = {c: np.flatnonzero(~plan.kept(ids)) for c, ids in g.consumers.items()}
    removed_in = {c: r for c, r in removed_in.items() if r.size}
    if not removed_in:
        return None
    captured: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def fn(_module: nn.Module, args: tuple) -> None:
            if name not in captured:
                # first sample, removed channels, read at the centre (a removed channel is constant there)
                x = args[0][0].index_select(0, torch.from_numpy(removed_in[name]))
                captured[name] = x[(slice(None), *(s // 2 for s in x.shape[1:]))].clone()
        return fn

    saved = {}
    handles = [g.modules[c].register_forward_pre_hook(hook(c)) for c in removed_in]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for gate in g.gates.values():
                w = g.tensor(gate.scale)
                saved[gate.scale] = w.detach().clone()
                w[torch.from_numpy(~plan.kept(gate.ids))] = 0
            cost = complexity(model, example_input)   # zeroed gates change no shape: the dense count
    finally:
        with torch.no_grad():
            for dotted, w in saved.items():
                g.tensor(dotted).copy_(w)
        for h in handles:
            h.remove()
        model.train(was_training)
    missing = sorted(set(removed_in) - set(captured))
    if missing:
        raise PruneError(f"folding: {missing[:3]} did not run on the example input; pass fold=False (--no-fold)")
    owner_of = g.producer_bn()
    with torch.no_grad():
        for c, r in removed_in.items():
            mod = g.modules[c]
            cols = mod.weight[:, torch.from_numpy(r)]
            cols = cols.sum(dim=tuple(range(2, cols.dim()))) if cols.dim() > 2 else cols
            delta = cols @ captured[c].to(cols.dtype)
            if c in owner_of:  # conv -> BN: BN(z + d) with running_mean m equals BN(z) with m - d
                g.modules[owner_of[c]].running_mean -= delta
            elif mod.bias is not None:
                mod.bias += delta
            else:
                mod.bias = nn.Parameter(delta.clone())
    return cost


def _branch_shifts(plan: Plan, branches: dict[str, str]) -> dict[str, torch.Tensor]:
    """Depth pruning: {block path: shift} for each residual bottleneck whose inner BN (cv1) lost every channel.
    Its branch then outputs cv2 of a constant: 0 under the masked reference (zero_beta), and with folding the
    removed channels' act(beta) is already in cv2's BN (_fold ran first), so cv2 of zeros is that constant
    (exact in the interior for a kxk cv2, like every fold). The shift keeps cv2's kept output channels."""
    g = plan.graph
    out = {}
    for bn, block in branches.items():
        if plan.kept(g.gates[bn].ids).any():
            continue
        cv2 = g.modules[block].cv2
        was = cv2.training
        cv2.eval()
        with torch.no_grad():
            const = cv2(torch.zeros(1, cv2.conv.in_channels, 1, 1)).flatten()
        cv2.train(was)
        kept = torch.from_numpy(np.flatnonzero(plan.kept(g.producers[f"{block}.cv2.conv"])))
        out[block] = const.index_select(0, kept)
    return out


def _take(t: torch.Tensor | None, dim: int, idx: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else t.detach().index_select(dim, idx).clone()


def _set_param(mod: nn.Module, name: str, value: torch.Tensor | None) -> None:
    old = getattr(mod, name)
    if value is None:
        return
    if isinstance(old, nn.Parameter):
        setattr(mod, name, nn.Parameter(value, requires_grad=old.requires_grad))
    else:
        setattr(mod, name, value)


def _slice(plan: Plan) -> None:
    g = plan.graph

    def idx(ids: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.flatnonzero(plan.kept(ids)))

    for path in set(g.producers) | set(g.consumers):
        mod = g.modules[path]
        w = mod.weight.detach()
        if path in g.producers:
            o = idx(g.producers[path])
            w = w.index_select(0, o)
            _set_param(mod, "bias", _take(mod.bias, 0, o))
        if path in g.consumers:
            w = w.index_select(1, idx(g.consumers[path]))
        _set_param(mod, "weight", w.clone())
        if isinstance(mod, nn.Linear):
            mod.out_features, mod.in_features = w.shape[0], w.shape[1]
        else:
            mod.out_channels, mod.in_channels = w.shape[0], w.shape[1] * mod.groups
    for path, ids in g.depthwise.items():
        mod, k = g.modules[path], idx(ids)
        _set_param(mod, "weight", _take(mod.weight, 0, k))
        _set_param(mod, "bias", _take(mod.bias, 0, k))
        mod.in_channels = mod.out_channels = mod.groups = len(k)
    for path, (ins, outs) in g.grouped.items():
        # whole groups: the kept output rows keep their (unchanged) in-group columns
        mod, k = g.modules[path], idx(outs)
        per_group = mod.in_channels // mod.groups
        _set_param(mod, "weight", _take(mod.weight, 0, k))
        _set_param(mod, "bias", _take(mod.bias, 0, k))
        mod.in_channels, mod.out_channels = int(plan.kept(ins).sum()), len(k)
        mod.groups = mod.in_channels // per_group
    for path, ids in g.bn_layouts.items():
        mod, k = g.modules[path], idx(ids)
        for name in ("weight", "bias", "running_mean", "running_var"):
            if f"{path}.{name}" not in g.params and isinstance(getattr(mod, name, None), torch.Tensor):
                _set_param(mod, name, _take(getattr(mod, name), 0, k))
        if hasattr(mod, "num_features"):
            mod.num_features = len(k)
    for dotted, ids in g.params.items():
        keep = plan.kept(ids)
        if keep.all():
            continue
        dims = [d for d in range(keep.ndim) if keep.shape[d] > 1 and not np.array_equal(
            keep, np.broadcast_to(keep.take([0], axis=d), keep.shape))]
        if len(dims) != 1:
            raise PruneError(f"parameter {dotted}: its removed channels do not lie along one dim; please report "
                             "the model")
        d = dims[0]
        line = keep[tuple(slice(None) if i == d else 0 for i in range(keep.ndim))]
        mod, _, attr = dotted.rpartition(".")
        _set_param(g.modules[mod], attr, _take(getattr(g.modules[mod], attr), d, torch.from_numpy(np.flatnonzero(line))))


def _table(model: nn.Module, plan: Plan, before: dict[str, int]) -> list[dict[str, Any]]:
    g = plan.graph
    bn_of = g.producer_bn()
    junction_of = {p: j.id for j in g.junctions for p in j.producers}
    rows = []
    for name, mod in model.named_modules():
        ids = g.producers.get(name, g.depthwise.get(name, g.grouped.get(name, (None, None))[1]))
        if ids is not None:
            rows.append({"layer": name, "bn": bn_of.get(name), "type": type(mod).__name__ + (
                         "(dw)" if name in g.depthwise else "(grouped)" if name in g.grouped else ""),
                         "before": before[name],
                         "after": int(plan.kept(ids).sum()), "junction": junction_of.get(name),
                         "fixed": bool(g.fixed[ids].all())})
    return rows


def prune_model(model: nn.Module, keep: Mapping[str, Any], importance: Mapping[str, Any] | None = None,
                rule: str = "union", round_to: int = 8, min_channels: int = 8,
                example_input: torch.Tensor | None = None, fold: bool = True,
                skip_unsupported: bool = False, graph: ChannelGraph | None = None) -> PruneResult:
    """Prune `model` in place (new, smaller weight tensors) and return it with its recombination map,
    per-layer table and stats. `keep` maps gate keys (owner-BN paths; a BN-less producer's own path) to
    bool masks or kept-index lists; gates left out keep every channel. `example_input` defaults to a
    1x3x64x64 image; `graph` is `build_graph(model, example_input, skip_unsupported)` when the caller
    already has it (it must describe `model` as it is now)."""
    x = example_input if example_input is not None else torch.zeros(1, 3, 64, 64)
    if graph is None:
        graph = build_graph(model, x, skip_unsupported=skip_unsupported)
    branches = {bn: block for bn, block in removable_branches(model).items() if bn in graph.gates}
    plan = decide(graph, keep, importance, rule=rule, round_to=round_to, min_channels=min_channels,
                  removable=set(branches))
    widths_before = {p: len(ids) for p, ids in {**graph.producers, **graph.depthwise,
                                                   **{p: o for p, (_, o) in graph.grouped.items()}}.items()}
    cost_before = (_fold(model, plan, x) if fold else None) or complexity(model, x)
    removed = _branch_shifts(plan, branches)
    _slice(plan)
    mods = dict(model.named_modules())
    for block, shift in removed.items():
        mods[block].remove_branch(shift)
    try:
        cost_after = complexity(model, x)
    except RuntimeError as exc:
        raise PruneError(f"the pruned model no longer runs ({str(exc).splitlines()[0]}); the channel graph "
                         "missed a dependency: please report the model") from None
    table = _table(model, plan, widths_before)
    rmap = recombination_map(plan, gone=[f"{b}." for b in removed])
    j_before = sum(j["channels_before"] for j in rmap["junctions"])
    j_kept = sum(len(j["kept"]) for j in rmap["junctions"])
    stats = {
        "rule": rule, "round_to": round_to, "min_channels": min_channels, "fold": fold,
        "params_before": cost_before["params"], "params_after": cost_after["params"],
        "flops_before": cost_before["flops"], "flops_after": cost_after["flops"],
        "channels_before": sum(r["before"] for r in table), "channels_after": sum(r["after"] for r in table),
        "junctions": len(rmap["junctions"]), "junction_channels_before": j_before,
        "junction_channels_removed": j_before - j_kept,
        "frozen": [{k: v for k, v in f.items()} for f in graph.frozen],
        "blocks_removed": sorted(removed),
    }
    return PruneResult(model=model, recombination_map=rmap, table=table, stats=stats, plan=plan)


def prune_from_ratios(model: nn.Module, ratios: str | Path | dict[str, Any], cfg: Any = None,
                      imgsz: int = ModelConfig.imgsz) -> PruneResult:
    """ratios.json (or its dict) + PruneConfig -> PruneResult with `spec` set, in memory (the latency-target
    benchmark and tests; the compress stage and `edgeprune prune` go through prune.run.prune_checkpoint)."""
    source = "ratios" if isinstance(ratios, dict) else str(ratios)
    keep = keep_from_ratios(ratios if isinstance(ratios, dict) else read_ratios(ratios), model, source)
    dense_spec = {**model.spec, "widths": {}}
    result = prune_model(model, keep, rule=getattr(cfg, "rule", "union"), round_to=getattr(cfg, "round_to", 8),
                         min_channels=getattr(cfg, "min_channels", 8), example_input=torch.zeros(1, 3, imgsz, imgsz),
                         fold=getattr(cfg, "fold", True), skip_unsupported=getattr(cfg, "skip_unsupported", False))
    result.spec = spec_from_pruned(result.model, dense_spec)
    return result
