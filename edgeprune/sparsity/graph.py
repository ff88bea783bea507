"""Channel provenance of a BN network, traced with torch.fx: for every Conv2d, which BN channels feed each
of its input channels (through activations, up-sampling, pooling, concatenation and residual adds), and
its output spatial size. This gives exact per-layer FLOPs for any set of kept channels."""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from ..errors import SparsityError
from .bnscan import unwrap

Label = frozenset          # the (bn_path, channel) pairs a tensor channel is made of; empty = always alive


@dataclass
class ConvInfo:
    path: str
    bn: str | None              # the BN right after it (None: e.g. a detect head conv, never pruned)
    in_labels: list[Label]
    c_out: int
    groups: int
    k: int                      # kernel height * width
    hw_out: int                 # output height * width


class _Provenance(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.labels: dict[fx.Node, Any] = {}
        self.convs: dict[str, ConvInfo] = {}

    def _lab(self, a: Any, channels: int | None = None) -> list[Label]:
        if isinstance(a, fx.Node) and isinstance(self.labels.get(a), list):
            return self.labels[a]
        return [Label()] * (channels or 0)

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if isinstance(out, torch.Tensor) and out.dim() >= 2:
            self.labels[n] = self._propagate(n, out)
        return out

    def _propagate(self, n: fx.Node, out: torch.Tensor) -> list[Label]:
        c = out.shape[1]
        first = n.args[0] if n.args else None
        if n.op == "call_module":
            mod = self.module.get_submodule(n.target)
            if isinstance(mod, nn.Conv2d):
                self.convs[n.target] = ConvInfo(n.target, None, self._lab(first, mod.in_channels), c, mod.groups,
                                                mod.kernel_size[0] * mod.kernel_size[1], out.shape[2] * out.shape[3])
                return [Label()] * c
            if isinstance(mod, nn.BatchNorm2d):
                if isinstance(first, fx.Node) and first.op == "call_module" and first.target in self.convs:
                    self.convs[first.target].bn = n.target
                return [Label({(n.target, i)}) for i in range(c)]
        if isinstance(first, (list, tuple)) and all(isinstance(a, fx.Node) for a in first):
            parts = [self._lab(a) for a in first]         # a concatenation (torch.cat or a Concat module)
            if sum(len(p) for p in parts) == c:
                return [lab for p in parts for lab in p]
        if n.op == "call_function" and n.target in (operator.add, torch.add):
            a, b = (self._lab(x) for x in n.args[:2])
            if len(a) == len(b) == c:
                return [x | y for x, y in zip(a, b)]
        lab = self._lab(first)
        return lab if len(lab) == c else [Label()] * c


def trace_channels(model: nn.Module, example: torch.Tensor) -> dict[str, ConvInfo]:
    """ConvInfo by conv path, from one forward of `example` through the traced train-mode graph."""
    model = unwrap(model)
    was_training = model.training
    model.train()           # trace the train-mode branch (raw head maps: convs only, no decoding)
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types on dynamic control flow
        raise SparsityError(f"{type(model).__name__}: torch.fx cannot trace it ({type(exc).__name__}: {exc}); "
                            "the ratio solver needs a traceable model") from None
    finally:
        model.train(was_training)
    gm.eval()               # run with BN running stats: works for batch 1 and leaves the stats untouched
    interp = _Provenance(gm)
    with torch.no_grad():
        interp.run(example)
    return interp.convs


def conv_flops(convs: dict[str, ConvInfo], kept: dict[str, set[int]] | None = None) -> dict[str, float]:
    """FLOPs (2 x MACs) per conv when each BN keeps only `kept[bn]` (missing = all channels)."""
    kept = kept or {}

    def alive(lab: Label) -> bool:
        return not lab or any(bn not in kept or i in kept[bn] for bn, i in lab)

    out = {}
    for path, ci in convs.items():
        c_in = sum(1 for lab in ci.in_labels if alive(lab))
        c_out = len(kept[ci.bn]) if ci.bn in kept else ci.c_out
        depthwise = ci.groups > 1 and ci.groups == len(ci.in_labels)
        per_group_in = 1.0 if depthwise else c_in / ci.groups
        out[path] = 2.0 * c_out * per_group_in * ci.k * ci.hw_out
    return out
