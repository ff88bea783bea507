"""Which BatchNorm layers the sparsity penalty acts on, and which of them are tied by residual adds."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import PruneError, SparsityError


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model behind DDP/DataParallel wrappers."""
    return getattr(model, "module", model)


def prunable_bns(model: nn.Module) -> dict[str, nn.BatchNorm2d]:
    """Every BatchNorm2d by module path (the detector's head convs carry no BN, so they never appear)."""
    bns = {name: m for name, m in unwrap(model).named_modules() if isinstance(m, nn.BatchNorm2d)}
    if not bns:
        raise SparsityError(f"{type(unwrap(model)).__name__} has no BatchNorm2d layers: L1RR penalises BN scales "
                            "(gamma), so it needs a model with conv -> BN blocks")
    return bns


def residual_groups(model: nn.Module, example: torch.Tensor | None = None) -> dict[str, list[str]]:
    """BNs whose outputs meet in a residual add, by junction id (the common path of its producers), from
    the pruner's channel graph: each junction's producers' own BNs, in path order. In a C3 with shortcut
    bottlenecks, cv1's output and every bottleneck's cv2 output are summed into one running tensor, so
    their channels correspond one to one (the junction that residual reconstruction keeps consistent)."""
    from ..prune.graph import build_graph

    net = unwrap(model)
    if example is None:
        example = torch.zeros(1, 3, 64, 64, device=next(net.parameters()).device)
    try:
        graph = build_graph(net, example)
    except PruneError as exc:
        raise SparsityError(f"residual groups of {type(net).__name__}: {exc}") from None
    return junction_bns(graph)


def junction_bns(graph: Any) -> dict[str, list[str]]:
    """residual_groups of an already built ChannelGraph: the BNs of producers whose channels are the junction's
    one to one. Others (a C2f's cv1, whose two chunk halves share the junction's classes; an attention's qkv conv,
    only part of which is the junction's) are solved on their own; the pruner ties them at the junction."""
    bn_of = graph.producer_bn()
    groups = {}
    for j in graph.junctions:
        members = [bn_of[p] for p in j.producers if p in bn_of and len(graph.producers[p]) == len(j.classes)]
        if len(members) > 1:
            groups[j.id] = members
    return groups


def slimming_excluded(model: nn.Module) -> set[str]:
    """BNs plain slimming leaves alone (midasklr/yolov5prune's rule, which goes by the C3/Bottleneck
    names): C3.cv1.bn and each shortcut Bottleneck's cv1.bn and cv2.bn."""
    out: set[str] = set()
    for gid, members in residual_groups(model).items():
        out.update(members)
        out.update(p.replace(".cv2.bn", ".cv1.bn") for p in members[1:])
    return out
