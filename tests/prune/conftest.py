"""Helpers for the pruning tests: random BN statistics, random keep masks, output comparison."""
import numpy as np
import pytest

from edgeprune.prune.apply import output_rel_err, random_bn_stats


def random_keep(graph, seed: int, p: float = 0.5) -> dict:
    rng = np.random.default_rng(seed)
    return {bn: rng.random(len(graph.bn_layouts[bn])) < p for bn in sorted(graph.owner_bn)}


def rel_err(a, b) -> float:
    err = output_rel_err(a, b)
    assert err is not None, "the two outputs differ in shape"
    return err


@pytest.fixture
def helpers():
    class H:
        pass
    h = H()
    h.randomize_bn, h.random_keep, h.rel_err = random_bn_stats, random_keep, rel_err
    return h
