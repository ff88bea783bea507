"""FLOPs of a network for any kept channel sets, counted on the pruner's channel graph (prune/graph.py):
the ratio solver and the pruner see the same channels, classes (residual adds, concats, chunks, grouped
convs) and convs."""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from ..errors import PruneError, SparsityError
from ..prune.graph import ChannelGraph, build_graph


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model behind DDP/DataParallel wrappers."""
    return getattr(model, "module", model)


def trace_channels(model: nn.Module, example: torch.Tensor | None = None,
                   skip_unsupported: bool = False) -> ChannelGraph:
    """The channel graph of `model` (never changed) at the example input's size (default 64 x 64: enough
    for the channel classes; FLOPs need the real size). skip_unsupported: freeze ops the graph cannot
    follow (prune.skip_unsupported; a YOLO11's attention heads) instead of failing."""
    net = unwrap(model)
    if example is None:
        example = torch.zeros(1, 3, 64, 64, device=next(net.parameters()).device)
    try:
        return build_graph(net, example, skip_unsupported=skip_unsupported)
    except PruneError as exc:
        hint = "" if skip_unsupported else " (in compress: --set prune.skip_unsupported=true freezes such ops)"
        raise SparsityError(f"the sparse stage needs the channel graph of {type(net).__name__}: {exc}{hint}") \
            from None


def alive_classes(graph: ChannelGraph, kept: Mapping[str, set[int]] | None = None) -> np.ndarray:
    """Per channel class: does it survive when each BN gate keeps only `kept[bn]` (missing = all channels)? As
    the pruner decides (prune.recombine.decide, union rule): a class lives while any BN gate channel in it is
    kept; a class no BN gate covers (the input, a head output, a BN-less producer's) always lives, and so does
    a fixed one. BNs that are not gates (after a depthwise conv or a concat) have no vote: their channels
    follow their producers'."""
    kept = kept or {}
    n = len(graph.root)
    alive, covered = np.zeros(n, bool), np.zeros(n, bool)
    for bn, gate in graph.gates.items():
        if gate.kind != "bn":
            continue
        cls = graph.root[gate.ids]
        covered[cls] = True
        mask = np.ones(len(cls), bool)
        if bn in kept:
            mask[:] = False
            mask[np.fromiter(kept[bn], np.int64, len(kept[bn]))] = True
        alive[cls[mask]] = True
    alive[graph.root[graph.fixed]] = True
    return alive | ~covered


def conv_channels(graph: ChannelGraph, kept: Mapping[str, set[int]] | None = None,
                  paths: Iterable[str] | None = None, alive: np.ndarray | None = None) -> dict[str, tuple[int, int, int]]:
    """(in channels, out channels, in channels per group) of each Conv2d (or of `paths`) when each BN keeps only
    `kept[bn]` (or when the classes `alive` live)."""
    alive = alive_classes(graph, kept) if alive is None else alive

    def live(ids: np.ndarray) -> int:
        return int(alive[graph.root[ids]].sum())

    out = {}
    for path in graph.out_shapes if paths is None else paths:
        mod = graph.modules[path]
        if not isinstance(mod, nn.Conv2d):
            continue
        if path in graph.depthwise:
            c = live(graph.depthwise[path])
            out[path] = (c, c, 1)
        elif path in graph.grouped:
            c_in = live(graph.grouped[path][0])
            out[path] = (c_in, live(graph.grouped[path][1]), mod.in_channels // mod.groups)
        else:
            c_in = live(graph.consumers[path])
            out[path] = (c_in, live(graph.producers[path]), c_in)
    return out


def conv_flops(graph: ChannelGraph, kept: Mapping[str, set[int]] | None = None) -> dict[str, float]:
    """FLOPs (2 x MACs) per Conv2d at the traced input size when each BN keeps only `kept[bn]`."""
    out = {}
    for path, (_, c_out, per_group_in) in conv_channels(graph, kept).items():
        mod, shape = graph.modules[path], graph.out_shapes[path]
        out[path] = 2.0 * c_out * per_group_in * mod.kernel_size[0] * mod.kernel_size[1] * shape[2] * shape[3]
    return out
