"""Exponential moving average of a model's weights and buffers (the EMA model is what we evaluate and save).

decay(u) = d * (1 - exp(-u / tau)) ramps up over the first ~tau updates, so early, random weights are
forgotten quickly (YOLOv5's schedule, d = 0.9999, tau = 2000).

The update runs as two fused `torch._foreach_*` ops over all floating-point tensors (one kernel launch per
dtype/device group instead of two per tensor); the tensor lists are built once per source model.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0):
        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates
        self._pairs: tuple[int, list, list, list] | None = None

    def current_decay(self) -> float:
        return self.decay * (1.0 - math.exp(-self.updates / self.tau))

    def _tensor_lists(self, model: nn.Module) -> tuple[list, list, list]:
        """(EMA floats, source floats, [(EMA int, source int)]) aliasing both models' tensors in place."""
        if self._pairs is None or self._pairs[0] != id(model):
            src = model.state_dict()
            mine, theirs, ints = [], [], []
            for name, v in self.ema.state_dict().items():
                if v.dtype.is_floating_point:
                    mine.append(v)
                    theirs.append(src[name].detach())
                else:            # BatchNorm's num_batches_tracked
                    ints.append((v, src[name]))
            self._pairs = (id(model), mine, theirs, ints)
        return self._pairs[1], self._pairs[2], self._pairs[3]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        mine, theirs, ints = self._tensor_lists(model)
        if any(t.dtype != v.dtype for t, v in zip(theirs, mine)):
            theirs = [t.to(v.dtype) for t, v in zip(theirs, mine)]
        torch._foreach_mul_(mine, d)
        torch._foreach_add_(mine, theirs, alpha=1.0 - d)
        for v, s in ints:
            v.copy_(s)
