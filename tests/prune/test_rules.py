"""Residual-junction rules (union / intersection / topk), round_to / min_channels, keep validation."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from edgeprune.errors import PruneError
from edgeprune.models.spec import new_spec
from edgeprune.models.yolo import build_model
from edgeprune.prune.apply import prune_model
from edgeprune.prune.graph import build_graph
from edgeprune.prune.io import keep_from_ratios, spec_sha
from edgeprune.prune.recombine import decide, recombination_map, round_count

X = torch.zeros(1, 3, 8, 8)
N = 16


def cbr(i, o):
    return nn.Sequential(nn.Conv2d(i, o, 1, bias=False), nn.BatchNorm2d(o), nn.SiLU())


class Junction(nn.Module):
    """Two producers feed one add; two consumers read it."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = cbr(3, N), cbr(N, N), cbr(N, 8)
        self.head = nn.Conv2d(8 + N, 2, 1)

    def forward(self, x):
        a = self.a(x)
        s = a + self.b(a)
        return self.head(torch.cat([self.c(s), s], 1))


GRAPH = build_graph(Junction(), X)


def kept(keep, rule, importance=None, round_to=1, min_channels=1):
    plan = decide(GRAPH, keep, importance, rule=rule, round_to=round_to, min_channels=min_channels)
    (j,) = recombination_map(plan)["junctions"]
    return set(j["kept"])


masks = st.lists(st.booleans(), min_size=N, max_size=N).map(lambda v: np.array(v, bool))


@settings(max_examples=60, deadline=None)
@given(ma=masks, mb=masks, imp_a=st.lists(st.floats(0, 1), min_size=N, max_size=N),
       imp_b=st.lists(st.floats(0, 1), min_size=N, max_size=N))
def test_rule_set_semantics(ma, mb, imp_a, imp_b):
    keep = {"a.1": ma, "b.1": mb}
    imp = {"a.1": imp_a, "b.1": imp_b}
    union, inter = kept(keep, "union"), kept(keep, "intersection")
    sa, sb = set(np.flatnonzero(ma)), set(np.flatnonzero(mb))
    assert union == (sa | sb) or (not sa | sb and len(union) == 1)  # at least one channel survives
    assert inter == (sa & sb) or (not sa & sb and len(inter) == 1)
    top = kept(keep, "topk", imp)
    k = max(int(round((len(sa) + len(sb)) / 2)), 1)
    assert len(top) == k
    score = np.add(imp_a, imp_b)
    # every kept channel scores at least as high as every dropped one
    if len(top) < N:
        assert min(score[list(top)]) >= max(np.delete(score, list(top)))


def test_union_intersection_topk_on_a_known_case():
    ma = np.zeros(N, bool); ma[[0, 1, 2, 3]] = True
    mb = np.zeros(N, bool); mb[[2, 3, 4, 5]] = True
    imp = {"a.1": np.linspace(0, 1, N), "b.1": np.zeros(N)}
    keep = {"a.1": ma, "b.1": mb}
    assert kept(keep, "union") == {0, 1, 2, 3, 4, 5}
    assert kept(keep, "intersection") == {2, 3}
    assert kept(keep, "topk", imp) == {12, 13, 14, 15}  # k = mean(4, 4), by summed importance


def test_round_to_and_min_channels_add_back_the_most_important():
    ma = np.zeros(N, bool); ma[[0]] = True
    imp = {"a.1": np.arange(N, dtype=float), "b.1": np.zeros(N)}
    got = kept({"a.1": ma, "b.1": ma}, "union", imp, round_to=1, min_channels=3)
    assert got == {0, 15, 14}
    got = kept({"a.1": ma, "b.1": ma}, "union", imp, round_to=4, min_channels=1)
    assert got == {0, 15, 14, 13}
    assert round_count(9, 64, 8, 8) == 16 and round_count(3, 64, 8, 8) == 8
    assert round_count(0, 5, 8, 8) == 5 and round_count(0, 64, 1, 0) == 1


def test_round_to_gives_multiples_on_the_detector():
    model = build_model(new_spec(2, size="n"))
    graph = build_graph(model, torch.zeros(1, 3, 64, 64))
    rng = np.random.default_rng(0)
    keep = {bn: rng.random(len(graph.bn_layouts[bn])) < 0.3 for bn in graph.owner_bn}
    res = prune_model(model, keep, rule="topk", round_to=8, min_channels=8, example_input=torch.zeros(1, 3, 64, 64))
    for row in res.table:
        if not row["fixed"]:
            assert row["after"] % 8 == 0 or row["after"] == row["before"], row
            assert row["after"] >= min(8, row["before"])
    assert res.stats["channels_after"] < res.stats["channels_before"]


def test_keep_validation_names_the_problem():
    model = build_model(new_spec(2, size="n"))
    graph = build_graph(model, torch.zeros(1, 3, 64, 64))
    with pytest.raises(PruneError, match=r"layers.99.bn.*another architecture"):
        decide(graph, {"layers.99.bn": [0]})
    with pytest.raises(PruneError, match=r"layers.0.bn.*mask has 32 entries.*16 channels"):
        decide(graph, {"layers.0.bn": np.ones(32, bool)})
    with pytest.raises(PruneError, match=r"layers.0.bn.*index 16 is out of range"):
        decide(graph, {"layers.0.bn": [0, 16]})
    with pytest.raises(PruneError, match="rule 'max'"):
        decide(graph, {}, rule="max")


def test_ratios_for_another_architecture_are_refused():
    n = build_model(new_spec(2, size="n"))
    s = build_model(new_spec(2, size="s"))
    doc = {"version": 1, "spec_sha": spec_sha(s.spec), "layers": {
        "layers.0.bn": {"channels": 32, "keep": 2, "keep_idx": [0, 5]}}}
    assert keep_from_ratios(doc, s) == {"layers.0.bn": [0, 5]}
    with pytest.raises(PruneError, match="spec_sha.*another architecture"):
        keep_from_ratios(doc, n)
    doc.pop("spec_sha")
    with pytest.raises(PruneError, match="says 32 channels, the model has 16"):
        keep_from_ratios(doc, n)
    with pytest.raises(PruneError, match="keep=3 but keep_idx has 2"):
        keep_from_ratios({"version": 1, "layers": {"layers.0.bn": {"channels": 32, "keep": 3, "keep_idx": [0, 5]}}}, s)
    with pytest.raises(PruneError, match="not a BatchNorm of this model"):
        keep_from_ratios({"version": 1, "layers": {"layers.0.conv": {"keep_idx": [0]}}}, s)


def test_threshold_and_global_ratio_masks():
    from edgeprune.prune.io import keep_from_threshold
    from edgeprune.prune.recombine import keep_from_global_ratio
    model = build_model(new_spec(2, size="n"))  # untrained: every gamma is 1 (ties)
    graph = build_graph(model, torch.zeros(1, 3, 64, 64))
    bns = sorted(graph.owner_bn)
    total = sum(len(m) for m in keep_from_threshold(model, bns, 0.5).values())
    masks = keep_from_global_ratio(graph, 0.25)
    # the detector's BN-less producers are its head convs, whose outputs are locked: they keep every channel
    assert all(masks[k].all() for k, g in graph.gates.items() if g.kind == "weight")
    assert sum(int(masks[b].sum()) for b in bns) == total - int(0.25 * total)
    assert all(m.all() for m in keep_from_threshold(model, bns, 0.5).values())
    assert not any(m.any() for m in keep_from_threshold(model, bns, 1.0).values())
    with pytest.raises(PruneError, match="global-ratio"):
        keep_from_global_ratio(graph, 1.0)


def test_global_ratio_ranks_bn_less_producers_by_weight_norm():
    """A producer without BN is ranked by its weight rows' norm (relative to its layer's mean), in one
    ranking with the other BN-less producers; the BN layers keep their own |gamma| ranking."""
    from edgeprune.prune.recombine import keep_from_global_ratio
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3),
                              torch.nn.BatchNorm2d(16), torch.nn.ReLU(), torch.nn.Conv2d(16, 4, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.arange(1, 9).float().view(8, 1, 1, 1).expand(8, 3, 3, 3))  # norms grow with index
        net[3].weight.copy_(torch.arange(16).float() + 1)
    graph = build_graph(net, torch.zeros(1, 3, 16, 16))
    keep = keep_from_global_ratio(graph, 0.5)
    assert sorted(keep) == ["0", "3", "5"] and keep["5"].all()   # conv 5 feeds the output: locked
    assert keep["0"].tolist() == [False] * 4 + [True] * 4 and keep["3"].tolist() == [False] * 8 + [True] * 8
    res = prune_model(net, keep, round_to=1, min_channels=1, example_input=torch.zeros(1, 3, 16, 16))
    assert net[0].out_channels == 4 and net[2].out_channels == 8 and res.stats["flops_after"] < res.stats["flops_before"]
