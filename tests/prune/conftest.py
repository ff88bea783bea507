"""Helpers for the pruning tests: random BN statistics, random keep masks, output comparison."""
import numpy as np
import pytest
import torch

from edgeprune.prune.apply import random_bn_stats


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
    h.randomize_bn, h.random_keep, h.rel_err, h.flat = random_bn_stats, random_keep, rel_err, flat
    return h
