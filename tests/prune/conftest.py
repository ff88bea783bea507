"""Helpers for the pruning tests: random BN statistics, random keep masks, output comparison."""
import numpy as np
import pytest
import torch
from torch import nn


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random gamma/beta/running stats so a dropped channel would show up in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model


def random_keep(graph, seed: int, p: float = 0.5) -> dict:
    rng = np.random.default_rng(seed)
    return {bn: rng.random(len(graph.bn_layouts[bn])) < p for bn in sorted(graph.owner_bn)}


def flat(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out.flatten()
    return torch.cat([t.flatten() for t in out])


def rel_err(a, b) -> float:
    a, b = flat(a), flat(b)
    assert a.shape == b.shape
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-12))


@pytest.fixture
def helpers():
    class H:
        pass
    h = H()
    h.randomize_bn, h.random_keep, h.rel_err, h.flat = randomize_bn, random_keep, rel_err, flat
    return h
