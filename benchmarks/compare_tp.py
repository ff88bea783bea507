"""The Torch-Pruning peer arms of compare_pruners.py: BNScalePruner and GroupNormPruner.

Each arm gets a sparse phase with the pruner's own regulariser (`pruner.regularize(model)` after every
backward, as Torch-Pruning's examples do), then one-shot pruning whose ratio is bisected until the measured
FLOPs reduction matches the target. The head convs are ignored (their outputs are the detector's fixed
layout) and widths are rounded to 8. Torch-Pruning slices our Detector in place; the spec is rebuilt from
the new widths (edgeprune.prune.io.spec_from_pruned) and checked by rebuilding and loading the weights.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from edgeprune.errors import PruneError
from edgeprune.metrics.complexity import count
from edgeprune.models.yolo import build_model
from edgeprune.prune.io import spec_from_pruned
from edgeprune.sparsity.bnscan import residual_groups
from edgeprune.sparsity.graph import trace_channels

TP_ARMS = ("tp_bnscale", "tp_groupnorm")


def _tp():
    try:
        import torch_pruning as tp
    except ImportError:
        raise PruneError("the Torch-Pruning arms need `torch_pruning` (pip install torch-pruning==1.6.*), "
                         "or leave them out with --arms") from None
    return tp


def head_convs(model: nn.Module) -> list[str]:
    """The convs whose output channels are the detector's fixed layout (every family's head outputs: the
    yolov5 head's 1x1 convs, the yolov8 head's box and class logits), as the channel graph sees them: all
    their output channels reach a graph output."""
    graph = trace_channels(model)
    return sorted(p for p, ids in graph.producers.items() if graph.fixed[ids].all())


def make_pruner(arm: str, model: nn.Module, imgsz: int, ratio: float = 0.5, round_to: int = 8):
    """A Torch-Pruning pruner for `model` (global pruning, head convs ignored). Groups whose importance
    Torch-Pruning itself cannot compute have their root conv ignored too: in 1.6 that is the last bottleneck
    conv of every C2f (its output is concatenated after the chunk halves, and the group's index mapping runs past
    the tensor: IndexError), which its YOLOv8 example avoids by rewriting C2f without chunk. The yolov5 family
    has no such group."""
    tp = _tp()
    mods = dict(model.named_modules())
    ignored = [mods[p] for p in head_convs(model)]
    for _ in range(4):
        pruner = _pruner(tp, arm, model, imgsz, ratio, round_to, ignored)
        failing = []
        for group in pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                              root_module_types=pruner.root_module_types):
            try:
                pruner.estimate_importance(group)
            except IndexError:
                failing.append(group[0].dep.target.module)
        if not failing:
            return pruner
        ignored += failing
    raise PruneError(f"{arm}: Torch-Pruning cannot score this model's channel groups even with their roots ignored")


def _pruner(tp, arm: str, model: nn.Module, imgsz: int, ratio: float, round_to: int, ignored: list[nn.Module]):
    kw = dict(example_inputs=torch.zeros(1, 3, imgsz, imgsz), global_pruning=True, pruning_ratio=ratio,
              ignored_layers=ignored, round_to=round_to)
    if arm == "tp_bnscale":
        return tp.pruner.BNScalePruner(model, importance=tp.importance.BNScaleImportance(), **kw)
    if arm == "tp_groupnorm":
        return tp.pruner.GroupNormPruner(model, importance=tp.importance.GroupMagnitudeImportance(p=2), **kw)
    raise PruneError(f"unknown Torch-Pruning arm {arm!r}; known: {', '.join(TP_ARMS)}")


class TPRegularizerHook:
    """Trainer hook: Torch-Pruning's sparse regulariser on the gradients (after backward, before the step)."""

    def __init__(self, arm: str, imgsz: int):
        self.arm, self.imgsz = arm, imgsz
        self.pruner = None

    def on_train_start(self, trainer: Any) -> None:
        was = trainer.model.training
        trainer.model.eval()
        self.pruner = make_pruner(self.arm, trainer.model, self.imgsz)
        trainer.model.train(was)

    def after_backward(self, trainer: Any, step: int) -> None:
        self.pruner.regularize(trainer.model)


def _flops_reduction(model: nn.Module, imgsz: int, dense_flops: int) -> float:
    return 1.0 - count(model, imgsz)["flops"] / dense_flops


def _prune_copy(arm: str, model: nn.Module, imgsz: int, ratio: float) -> nn.Module:
    m = copy.deepcopy(model).eval()
    make_pruner(arm, m, imgsz, ratio).step()
    return m


def prune_to_flops(arm: str, model: nn.Module, imgsz: int, target: float, iters: int = 8,
                   tol: float = 0.01) -> tuple[nn.Module, list[dict[str, Any]], dict[str, Any]]:
    """Bisect Torch-Pruning's pruning_ratio until the FLOPs reduction is within `tol` of `target`
    (the closest one reached otherwise). Returns the pruned model (spec rebuilt), its prune table and stats
    (with the search log)."""
    dense_spec = {**model.spec, "widths": {}}
    dense_flops = count(model, imgsz)["flops"]
    lo, hi = 0.0, 0.95
    best: tuple[float, float, nn.Module] | None = None
    trail = []
    for _ in range(iters):
        mid = (lo + hi) / 2
        pruned = _prune_copy(arm, model, imgsz, mid)
        red = _flops_reduction(pruned, imgsz, dense_flops)
        trail.append({"ratio": round(mid, 5), "flops_reduction": round(red, 5)})
        if best is None or abs(red - target) < abs(best[1] - target):
            best = (mid, red, pruned)
        if abs(red - target) <= tol:
            break
        lo, hi = (mid, hi) if red < target else (lo, mid)
    ratio, red, pruned = best
    spec = spec_from_pruned(pruned, dense_spec)
    rebuilt = build_model(spec)
    try:
        rebuilt.load_state_dict(pruned.state_dict())
    except RuntimeError as exc:
        raise PruneError(f"{arm}: Torch-Pruning produced widths our spec cannot express "
                         f"({str(exc).splitlines()[0]})") from None
    table, stats = _table(model, rebuilt, imgsz)
    stats.update(pruner=arm, pruning_ratio=ratio, search=trail)
    return rebuilt, table, stats


def _table(dense: nn.Module, pruned: nn.Module, imgsz: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """prune_table.json rows/stats (edgeprune.prune.apply's format) for a model pruned by Torch-Pruning."""
    before = {n: m.out_channels for n, m in dense.named_modules() if isinstance(m, nn.Conv2d)}
    head = set(head_convs(dense))
    table = [{"layer": n, "bn": None, "type": "Conv2d", "before": before[n], "after": m.out_channels,
              "junction": None, "fixed": n in head}
             for n, m in pruned.named_modules() if isinstance(m, nn.Conv2d)]
    junction_before = junction_after = 0
    for members in residual_groups(dense).values():      # a C3's residual stream: cv1.bn's channels
        bn = members[0]
        junction_before += dict(dense.named_modules())[bn].num_features
        junction_after += dict(pruned.named_modules())[bn].num_features
    cb, ca = count(dense, imgsz), count(pruned, imgsz)
    stats = {"rule": "torch-pruning groups", "params_before": cb["params"], "params_after": ca["params"],
             "flops_before": cb["flops"], "flops_after": ca["flops"], "junction_channels_before": junction_before,
             "junction_channels_removed": junction_before - junction_after}
    return table, stats
