"""Exponential moving average of a model's weights and buffers (the EMA model is what we evaluate and save).

decay(u) = d * (1 - exp(-u / tau)) ramps up over the first ~tau updates, so early, random weights are
forgotten quickly (YOLOv5's schedule, d = 0.9999, tau = 2000).
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

    def current_decay(self) -> float:
        return self.decay * (1.0 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        src = model.state_dict()
        for name, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(src[name].detach().to(v.dtype), alpha=1.0 - d)
            else:            # BatchNorm's num_batches_tracked
                v.copy_(src[name])
