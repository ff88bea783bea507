"""Property test: random small networks built from residual adds, concats (also of a tensor with itself),
chunks, depthwise convs, pooling and upsampling; random masks and rules -> pruned == masked."""
import copy

import numpy as np
import torch
from hypothesis import HealthCheck, Phase, given, settings, strategies as st
from torch import nn

from edgeprune.prune.apply import masked_model, prune_model
from edgeprune.prune.graph import build_graph

OPS = ("res", "res2", "cat", "catself", "chunk", "dw", "pool", "up", "conv", "skip")
X = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(5))


def cbr(i, o, k=1, g=1):
    return nn.Sequential(nn.Conv2d(i, o, k, padding=k // 2, groups=g, bias=False), nn.BatchNorm2d(o), nn.SiLU())


class RandomNet(nn.Module):
    """Interprets a list of op names; every width is resolved here, so forward() is fx-traceable."""

    def __init__(self, ops, widths):
        super().__init__()
        self.ops = []                      # (op, index into `seen` for a skip add)
        self.mods = nn.ModuleList()
        c = widths[0]
        self.stem = cbr(3, c, 3)
        seen_widths = [c]                  # width of every tensor forward() appends to `seen`
        for op, w in zip(ops, widths[1:]):
            ref = None
            if op == "res":
                m = cbr(c, c, 3)
            elif op == "res2":
                m = nn.Sequential(cbr(c, w), cbr(w, c, 3))
            elif op == "cat":
                m, c = cbr(c, w), c + w
            elif op == "catself":
                m, c = nn.Identity(), 2 * c
            elif op == "chunk":
                if c % 2:
                    continue
                m = cbr(c // 2, c // 2, 3)
            elif op == "dw":
                m = cbr(c, c, 3, g=c)
            elif op == "conv":
                m, c = cbr(c, w, 3), w
            elif op == "skip":
                earlier = [i for i, wi in enumerate(seen_widths[:-1]) if wi == c]
                if not earlier:
                    continue
                m, ref = nn.Identity(), earlier[-1]
            else:
                m = nn.Identity()
            self.mods.append(m)
            self.ops.append((op, ref))
            seen_widths.append(c)
        self.head = nn.Conv2d(c, 3, 1)

    def forward(self, x):
        h = self.stem(x)
        seen = [h]
        for (op, ref), m in zip(self.ops, self.mods):
            if op == "res":
                h = h + m(h)
            elif op == "res2":
                h = m(h) + h
            elif op == "cat":
                h = torch.cat([h, m(h)], 1)
            elif op == "catself":
                h = torch.cat([h, h], 1)
            elif op == "chunk":
                a, b = h.chunk(2, 1)
                h = torch.cat([m(b), a], 1)
            elif op in ("dw", "conv"):
                h = m(h)
            elif op == "pool":
                h = nn.functional.max_pool2d(h, 3, 1, 1)
            elif op == "up":
                h = nn.functional.avg_pool2d(nn.functional.interpolate(h, scale_factor=2.0), 2)
            elif op == "skip":
                h = h + seen[ref]
            seen.append(h)
        return self.head(h)


@settings(max_examples=30, deadline=None, phases=[Phase.explicit, Phase.generate], suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.sampled_from(OPS), min_size=2, max_size=7),
       widths=st.lists(st.sampled_from([4, 6, 8]), min_size=8, max_size=8),
       seed=st.integers(0, 2 ** 16), rule=st.sampled_from(["union", "intersection", "topk"]),
       round_to=st.sampled_from([1, 2, 4]))
def test_random_nets_prune_exactly(helpers, ops, widths, seed, rule, round_to):
    torch.manual_seed(seed)
    model = helpers.randomize_bn(RandomNet(ops, widths), seed)
    graph = build_graph(model, X)
    keep = helpers.random_keep(graph, seed, p=0.5)
    dense = copy.deepcopy(model)
    res = prune_model(model, keep, rule=rule, round_to=round_to, min_channels=1, example_input=X, fold=False)
    with torch.no_grad():
        err = helpers.rel_err(masked_model(dense, res.plan).eval()(X), model.eval()(X))
    assert err <= 1e-4, (ops, widths, rule, err)
    for row in res.table:
        assert 1 <= row["after"] <= row["before"]
    mods = dict(model.named_modules())
    graph = res.plan.graph
    for j, junction in zip(res.recombination_map["junctions"], graph.junctions):
        # A producer holds the whole junction, one concat segment of it (an add over a concat), or - when the
        # add reads a chunk/split of its output - only some of its channels: those kept must fit the junction.
        for p in j["producers"]:
            cls = graph.root[graph.producers[p]]
            kept_here = int(np.sum(np.isin(cls, junction.classes) & res.plan.kept_class[cls]))
            assert 1 <= mods[p].out_channels and kept_here <= len(j["kept"]), (p, kept_here, len(j["kept"]))
