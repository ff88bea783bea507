"""Tracing never changes the model: state_dict and train flags are bit-identical after a dry run (graph +
plan), after a PruneError and after a skip-mode prune that removes nothing. Fused BN+act modules that
call F.batch_norm themselves are prunable BNs."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import PruneError
from edgeprune.prune.apply import masked_model, prune_model
from edgeprune.prune.graph import build_graph
from edgeprune.prune.recombine import decide

X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


class BNAct(nn.BatchNorm2d):
    """A fused BN + ReLU as found outside torchvision: not a torch.nn leaf, so fx traces into it and
    bakes `self.training` into the F.batch_norm call."""

    def forward(self, x):
        return F.relu(F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                   self.training, 0.1, self.eps))


class NormAct(nn.Module):
    """The same with its own tensor names (not a BatchNorm subclass)."""

    def __init__(self, n):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(n))
        self.beta = nn.Parameter(torch.zeros(n))
        self.register_buffer("mu", torch.zeros(n))
        self.register_buffer("var", torch.ones(n))

    def forward(self, x):
        return F.silu(F.batch_norm(x, self.mu, self.var, self.gamma, self.beta, self.training, 0.1, 1e-5))


class Fused(nn.Module):
    def __init__(self, tail=None):
        super().__init__()
        self.c1, self.n1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), BNAct(8)
        self.c2, self.n2 = nn.Conv2d(8, 8, 1, bias=False), NormAct(8)
        self.head = nn.Conv2d(8, 4, 1)
        self.tail = tail

    def forward(self, x):
        a = self.n1(self.c1(x))
        y = a + self.n2(self.c2(a))
        if self.tail is not None:
            y = self.tail(y)
        return self.head(y)


class Roll(nn.Module):
    def forward(self, x):
        return torch.roll(x, 1, dims=3)


def randomized(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point() and "head" not in name and "c1" not in name and "c2" not in name:
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
    return model


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {n: m.training for n, m in model.named_modules()})


def assert_unchanged(model, snap):
    sd, flags = snap
    now = model.state_dict()
    assert list(now) == list(sd)
    for k, v in sd.items():
        assert now[k].shape == v.shape and torch.equal(now[k], v), f"{k} changed"
    assert {n: m.training for n, m in model.named_modules()} == flags


def test_dry_run_changes_nothing_and_finds_fused_bns():
    model = randomized(Fused()).train()
    model.n2.eval()  # mixed flags must survive too
    snap = snapshot(model)
    graph = build_graph(model, X)
    decide(graph, {"n1": np.arange(8) % 2 == 0})
    assert_unchanged(model, snap)
    assert graph.owner_bn == {"n1": "c1", "n2": "c2"}
    assert graph.gates["n2"].scale == "n2.gamma" and graph.gates["n2"].shift == "n2.beta"


def test_a_prune_error_changes_nothing():
    model = randomized(Fused(tail=Roll())).train()
    snap = snapshot(model)
    with pytest.raises(PruneError, match=r"module tail \(Roll\): op roll.*--skip-unsupported"):
        prune_model(model, {"n1": np.arange(8) < 4}, example_input=X)
    assert_unchanged(model, snap)


def test_a_skip_that_prunes_nothing_changes_nothing():
    model = randomized(Fused(tail=Roll())).train()
    snap = snapshot(model)
    with torch.no_grad():
        before = copy.deepcopy(model).eval()(X)
    res = prune_model(model, {"n1": np.arange(8) < 4}, example_input=X, skip_unsupported=True)
    assert res.stats["frozen"] and res.stats["channels_after"] == res.stats["channels_before"]
    assert_unchanged(model, snap)
    with torch.no_grad():
        assert torch.equal(model.eval()(X), before)


def test_fused_bns_are_pruned_exactly(helpers):
    for seed in range(3):
        model = randomized(Fused(), seed).eval()
        dense = copy.deepcopy(model)
        keep = {"n1": np.random.default_rng(seed).random(8) < 0.5, "n2": np.arange(8) % 2 == 1}
        res = prune_model(model, keep, round_to=1, min_channels=1, example_input=X, fold=False)
        assert model.n2.gamma.shape[0] == model.n1.weight.shape[0] == model.c1.out_channels < 8
        assert model.n2.mu.shape == model.n2.gamma.shape and model.n1.running_var.shape == model.n1.weight.shape
        with torch.no_grad():
            assert helpers.rel_err(masked_model(dense, res.plan).eval()(X), model(X)) <= 1e-4
