"""Checkpoint -> pruned folder, the body of `edgeprune prune` (and of the compress pipeline's prune stage)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig
from ..errors import UsageError
from ..fsio import atomic_write_json, atomic_write_text
from ..models.io import load_checkpoint, model_from_checkpoint
from . import anymodel
from .apply import prune_model
from .graph import ChannelGraph, build_graph
from .io import format_table, keep_from_ratios, keep_from_threshold, read_ratios, save_pruned, spec_from_pruned
from .recombine import keep_from_global_ratio


def _keep(graph: ChannelGraph, model: torch.nn.Module, threshold: float | None,
          global_ratio: float | None) -> dict[str, Any]:
    """--threshold: slimming's |gamma| > T on every BN gate (BN-less producers keep all: a weight norm has
    no such scale); --global-ratio: one ranking over every gate of the channel model (recombine)."""
    if threshold is not None:
        return keep_from_threshold(model, sorted(k for k, g in graph.gates.items() if g.kind == "bn"), threshold)
    return keep_from_global_ratio(graph, global_ratio)


def prune_checkpoint(checkpoint: str | Path, out_dir: str | Path, ratios: str | Path | None = None,
                     threshold: float | None = None, global_ratio: float | None = None, rule: str = "union",
                     round_to: int = 8, min_channels: int = 8, fold: bool = True, imgsz: int | None = None,
                     skip_unsupported: bool = False) -> dict[str, Any]:
    if sum(x is not None for x in (ratios, threshold, global_ratio)) != 1:
        raise UsageError("give exactly one of ratios, threshold, global_ratio")
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt)
    dense_spec = {**model.spec, "widths": {}}
    size = imgsz or (ckpt.get("imgsz") if isinstance(ckpt.get("imgsz"), int) else ModelConfig.imgsz)
    x = torch.zeros(1, 3, size, size)
    graph = build_graph(model, x, skip_unsupported=skip_unsupported)
    keep = keep_from_ratios(read_ratios(ratios), model, str(ratios)) if ratios is not None \
        else _keep(graph, model, threshold, global_ratio)
    result = prune_model(model, keep, rule=rule, round_to=round_to, min_channels=min_channels, example_input=x,
                         fold=fold, skip_unsupported=skip_unsupported, graph=graph)
    spec = spec_from_pruned(result.model, dense_spec)
    save_pruned(out_dir, result.model, spec, result.recombination_map, result.table, result.stats, imgsz=size)
    return {"stats": result.stats, "text": format_table(result.table, result.stats), "spec": spec}


def prune_factory(factory: str, weights: str | Path | None, out_dir: str | Path, threshold: float | None = None,
                  global_ratio: float | None = None, rule: str = "union", round_to: int = 8, min_channels: int = 8,
                  fold: bool = True, imgsz: int | None = None, skip_unsupported: bool = False) -> dict[str, Any]:
    """`edgeprune prune --model pkg.mod:fn [--weights sd.pt]`: any nn.Module -> a pruned folder of
    model.json + weights.pt (edgeprune.prune.anymodel) + recombination.json + prune_table.json/.txt."""
    if (threshold is None) == (global_ratio is None):
        raise UsageError("give exactly one of threshold, global_ratio")
    model = anymodel.build_with_weights(factory, weights).eval()
    x = torch.zeros(1, 3, imgsz or ModelConfig.imgsz, imgsz or ModelConfig.imgsz)
    graph = build_graph(model, x, skip_unsupported=skip_unsupported)
    result = prune_model(model, _keep(graph, model, threshold, global_ratio), rule=rule, round_to=round_to,
                         min_channels=min_channels, example_input=x, fold=fold, skip_unsupported=skip_unsupported,
                         graph=graph)
    out = anymodel.save(out_dir, result.model, factory, {"imgsz": int(x.shape[-1])})
    atomic_write_json(out / "recombination.json", result.recombination_map)
    atomic_write_json(out / "prune_table.json", {"layers": result.table, "stats": result.stats})
    text = format_table(result.table, result.stats)
    atomic_write_text(out / "prune_table.txt", text + "\n")
    return {"stats": result.stats, "text": text}
