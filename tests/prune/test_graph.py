"""Channel graph: concat offsets (also cat([x, x])), chunk/split, adds in every spelling, depthwise and
grouped convs, flatten -> linear, unsupported ops (error and skip mode)."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.errors import PruneError
from edgeprune.models.spec import new_spec
from edgeprune.models.yolo import build_model
from edgeprune.prune.apply import masked_model, prune_model
from edgeprune.prune.graph import build_graph

X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))


def cbr(i, o, k=1, g=1):
    return nn.Sequential(nn.Conv2d(i, o, k, padding=k // 2, groups=g, bias=False), nn.BatchNorm2d(o), nn.ReLU())


def prune_and_compare(helpers, model, keep=None, seed=0, **kw):
    helpers.randomize_bn(model, seed)
    graph = build_graph(model, X, skip_unsupported=kw.get("skip_unsupported", False))
    keep = helpers.random_keep(graph, seed) if keep is None else keep
    dense = copy.deepcopy(model)
    res = prune_model(model, keep, round_to=1, min_channels=1, example_input=X, fold=False, **kw)
    with torch.no_grad():
        err = helpers.rel_err(masked_model(dense, res.plan).eval()(X), model.eval()(X))
    assert err <= 1e-4, err
    return res, graph


class CatTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = cbr(3, 8), cbr(16, 8)

    def forward(self, x):
        y = self.a(x)
        return self.b(torch.cat([y, y], 1))


def test_cat_of_the_same_tensor_twice(helpers):
    keep = {"a.1": np.array([1, 0, 1, 1, 0, 0, 1, 0], bool)}
    res, graph = prune_and_compare(helpers, CatTwice(), keep)
    assert res.model.a[0].out_channels == 4
    assert res.model.b[0].in_channels == 8  # both copies lose the same 4 channels
    # the consumer's layout repeats the producer's ids at both offsets
    ids = graph.consumers["b.0"]
    assert np.array_equal(ids[:8], ids[8:]) and np.array_equal(ids[:8], graph.producers["a.0"])


class Chunky(nn.Module):
    """C2f-style: chunk(2), one half through a conv, concat of all pieces."""

    def __init__(self):
        super().__init__()
        self.a, self.m, self.out = cbr(3, 16), cbr(8, 8, 3), cbr(24, 8)

    def forward(self, x):
        p, q = self.a(x).chunk(2, 1)
        return self.out(torch.cat([p, q, self.m(q)], 1))


def test_chunk_couples_the_pieces_position_by_position(helpers):
    keep = {"a.1": np.array([1, 0, 0, 0, 1, 1, 0, 0] + [0, 0, 1, 0, 1, 0, 0, 0], bool)}
    res, graph = prune_and_compare(helpers, Chunky(), keep)
    ids = graph.producers["a.0"]
    assert np.array_equal(graph.root[ids[:8]], graph.root[ids[8:]])
    assert res.model.a[0].out_channels == 2 * 4  # union of the halves' positions {0, 2, 4, 5}, in both halves
    assert res.model.m[0].in_channels == 4
    for seed in range(3):
        prune_and_compare(helpers, Chunky(), seed=seed)


class Splitty(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.m, self.out = cbr(3, 12), cbr(4, 4), cbr(12, 8)

    def forward(self, x):
        p, q = torch.split(self.a(x), [8, 4], dim=1)
        return self.out(torch.cat([p, self.m(q)], 1))


def test_split_with_literal_sizes_is_kept_whole_and_listed(helpers):
    res, graph = prune_and_compare(helpers, Splitty(), seed=1)
    assert res.model.a[0].out_channels == 12
    assert res.model.m[0].out_channels < 4 or res.model.out[0].out_channels < 8
    frozen = {f["node"]: f for f in res.stats["frozen"]}
    assert any("split" in f["reason"] and f["layers"] == ["a.0"] for f in frozen.values())


class Adds(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.d = cbr(3, 8), cbr(8, 8), cbr(8, 8), cbr(8, 8)
        self.dw = cbr(8, 8, 3, g=8)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        a = self.a(x)
        s = a + self.b(a)
        s = torch.add(s, self.c(s))
        t = self.d(s)
        t += s
        t = t.add(self.dw(t))
        return self.head(t)


def test_every_add_spelling_and_depthwise_join_one_junction(helpers):
    for seed in range(3):
        res, graph = prune_and_compare(helpers, Adds(), seed=seed, rule="intersection")
        assert len(graph.junctions) == 1
        j = res.recombination_map["junctions"][0]
        assert j["producers"] == ["a.0", "b.0", "c.0", "d.0"]
        assert "dw.0" in j["consumers"] and "head" in j["consumers"]
        assert res.model.dw[0].groups == res.model.dw[0].out_channels == len(j["kept"]) < 8


def test_keep_on_a_bn_behind_a_depthwise_conv_is_refused():
    from edgeprune.prune.recombine import decide
    with pytest.raises(PruneError, match=r"keep\['dw.1'\].*does not directly follow a prunable conv"):
        decide(build_graph(Adds(), X), {"dw.1": [0]})


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.g, self.b = cbr(3, 8), cbr(8, 8, 3, g=2), cbr(8, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(self.b(self.g(self.a(x))))


def test_grouped_conv_is_pruned_in_whole_groups(helpers):
    half = np.arange(8) < 4
    res, graph = prune_and_compare(helpers, Grouped(), {"a.1": half, "g.1": half, "b.1": half})
    g = res.model.g[0]
    assert (res.model.a[0].out_channels, g.in_channels, g.out_channels, g.groups) == (4, 4, 4, 1)
    ins, outs = graph.grouped["g.0"]
    assert len(set(graph.root[np.concatenate([ins[:4], outs[:4]])].tolist())) == 1  # one group, one class
    for seed in range(3):  # random votes: still exact, groups stay whole
        res, _ = prune_and_compare(helpers, Grouped(), seed=seed)
        assert res.model.g[0].in_channels == 4 * res.model.g[0].groups == res.model.a[0].out_channels


class FlatLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = cbr(3, 8, 3)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc1 = nn.Linear(32, 16, bias=False)
        self.bn1 = nn.BatchNorm1d(16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        y = torch.flatten(self.pool(self.a(x)), 1)
        return self.fc2(torch.relu(self.bn1(self.fc1(y))))


def test_flatten_linear_gathers_every_spatial_column(helpers):
    keep = {"a.1": np.array([1, 1, 0, 0, 1, 0, 1, 0], bool), "bn1": np.arange(16) % 3 == 0}
    res, graph = prune_and_compare(helpers, FlatLinear(), keep)
    assert res.model.fc1.in_features == 4 * 4 and res.model.fc1.out_features == 6
    assert res.model.fc2.out_features == 3  # graph output: fixed


class Permuted(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = cbr(3, 8), cbr(8, 8), cbr(8, 8)

    def forward(self, x):
        y = self.b(self.a(x))
        return self.c(torch.roll(y, 1, dims=3))


def test_unsupported_op_names_the_node_and_skip_mode_freezes_around_it(helpers):
    model = Permuted()
    with pytest.raises(PruneError, match=r"module <top-level forward>: op roll \(fx node 'roll'\).*--skip-unsupported"):
        prune_model(model, {}, example_input=X)
    res, _ = prune_and_compare(helpers, Permuted(), seed=0, skip_unsupported=True)
    assert res.model.b[0].out_channels == 8 and res.model.c[0].in_channels == 8
    assert res.model.a[0].out_channels < 8  # the rest is still pruned
    assert res.stats["frozen"][0]["node"] == "roll" and res.stats["frozen"][0]["layers"] == ["b.0"]


def test_detector_graph_structure():
    model = build_model(new_spec(3, size="n"))
    graph = build_graph(model, torch.zeros(1, 3, 64, 64))
    assert [j.id for j in graph.junctions] == ["layers.2", "layers.4", "layers.6", "layers.8"]
    j4 = graph.junctions[1]
    assert j4.producers == ["layers.4.cv1.conv", "layers.4.m.0.cv2.conv", "layers.4.m.1.cv2.conv"]
    assert j4.consumers == ["layers.4.cv3.conv", "layers.4.m.0.cv1.conv", "layers.4.m.1.cv1.conv"]
    assert len(graph.owner_bn) == sum(1 for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d))
    for i in range(3):  # head outputs are never pruned
        assert graph.fixed[graph.producers[f"detect.m.{i}"]].all()
    assert not graph.frozen
