"""Which BatchNorm layers the sparsity penalty acts on, and which of them are tied by residual adds."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import SparsityError
from .graph import unwrap


def prunable_bns(model: nn.Module, graph: Any = None) -> dict[str, nn.BatchNorm2d]:
    """The BatchNorm2d layers that gate channels the pruner can remove, by module path in model order: the
    channel graph's BN gates (a conv -> BN with nothing between) holding at least one class that is not fixed.
    A BN after a depthwise conv, a concat or an add only follows its producers' decisions, and one whose
    channels are all fixed (an attention's head layout, frozen by prune.skip_unsupported) loses none: penalising
    or scoring them would ask for removals the pruner refuses. `graph`: the model's ChannelGraph
    (sparsity.graph.trace_channels, which is called when it is not given)."""
    from .graph import trace_channels

    net = unwrap(model)
    if graph is None:
        graph = trace_channels(net)
    gates = {k for k, gate in graph.gates.items() if gate.kind == "bn" and not graph.fixed[gate.ids].all()}
    bns = {name: m for name, m in net.named_modules() if isinstance(m, nn.BatchNorm2d) and name in gates}
    if not bns:
        raise SparsityError(f"{type(net).__name__} has no BatchNorm2d right after a prunable conv: L1RR penalises "
                            "BN scales (gamma), so it needs a model with conv -> BN blocks")
    return bns


def residual_groups(model: nn.Module, example: torch.Tensor | None = None,
                    skip_unsupported: bool = False) -> dict[str, list[str]]:
    """BNs whose outputs meet in a residual add, by junction id (the common path of its producers), from
    the pruner's channel graph: each junction's producers' own BNs, in path order. In a C3 with shortcut
    bottlenecks, cv1's output and every bottleneck's cv2 output are summed into one running tensor, so
    their channels correspond one to one (the junction that residual reconstruction keeps consistent)."""
    from .graph import trace_channels

    return junction_bns(trace_channels(model, example, skip_unsupported))


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


def slimming_excluded(model: nn.Module, graph: Any = None) -> set[str]:
    """BNs plain slimming leaves alone (midasklr/yolov5prune's rule, which goes by the C3/Bottleneck
    names): C3.cv1.bn and each shortcut Bottleneck's cv1.bn and cv2.bn. `graph` as in prunable_bns."""
    out: set[str] = set()
    groups = residual_groups(model) if graph is None else junction_bns(graph)
    for gid, members in groups.items():
        out.update(members)
        out.update(p.replace(".cv2.bn", ".cv1.bn") for p in members[1:])
    return out
