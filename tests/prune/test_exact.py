"""Physically pruned == masked dense model, on our detectors and torchvision models with residuals."""
import copy

import pytest
import torch
import torchvision
from torch import nn

from edgeprune.models.spec import new_spec
from edgeprune.models.yolo import build_model
from edgeprune.prune.apply import masked_model, prune_model
from edgeprune.prune.graph import build_graph

X = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))

MODELS = {
    "yolo_n": lambda: build_model(new_spec(3, size="n")),
    "yolo_s": lambda: build_model(new_spec(3, size="s")),
    "resnet18": lambda: torchvision.models.resnet18(weights=None, num_classes=10),
    "resnet50": lambda: torchvision.models.resnet50(weights=None, num_classes=10),
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(weights=None, num_classes=10),
}
SEEDS = {"yolo_n": (0, 1, 2), "yolo_s": (3,), "resnet18": (0, 1), "resnet50": (2,), "mobilenet_v2": (0, 1)}


def _check(helpers, name, seed, rule, fold):
    model = helpers.randomize_bn(MODELS[name](), seed)
    keep = helpers.random_keep(build_graph(model, X), seed, p=0.4 + 0.1 * (seed % 3))
    dense = copy.deepcopy(model)
    res = prune_model(model, keep, rule=rule, round_to=1 + 3 * (seed % 2), min_channels=1, example_input=X, fold=fold)
    ref = masked_model(dense, res.plan, zero_beta=not fold).eval()
    with torch.no_grad():
        err = helpers.rel_err(ref(X), model.eval()(X))
    return res, err


@pytest.mark.parametrize("name,seed", [(n, s) for n in MODELS for s in SEEDS[n]])
def test_pruned_equals_masked(helpers, name, seed):
    rule = ("union", "intersection", "topk")[seed % 3]
    res, err = _check(helpers, name, seed, rule, fold=False)
    assert err <= 1e-4, f"{name} seed {seed} rule {rule}: relative error {err}"
    assert res.stats["params_after"] < res.stats["params_before"]
    # residual adds are pruned, not skipped: some junction lost channels
    assert res.stats["junctions"] > 0
    assert res.stats["junction_channels_removed"] > 0
    for j in res.recombination_map["junctions"]:
        for p in j["producers"]:
            assert dict(model_modules(res.model))[p].weight.shape[0] == len(j["kept"])


def model_modules(model):
    return model.named_modules()


def test_masked_model_zeroes_exactly_the_removed_channels(helpers):
    model = helpers.randomize_bn(MODELS["yolo_n"](), 0)
    graph = build_graph(model, X)
    keep = helpers.random_keep(graph, 0)
    from edgeprune.prune.recombine import decide
    plan = decide(graph, keep, round_to=1, min_channels=1)
    masked = masked_model(model, plan, zero_beta=True).eval()
    seen = {}
    mods = dict(masked.named_modules())
    bn = "layers.4.cv1.bn"  # a junction producer
    mods[bn.replace(".bn", ".act")].register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    with torch.no_grad():
        out_masked = masked(X)
        out_dense = model.eval()(X)
    removed = torch.from_numpy(~plan.kept(graph.bn_layouts[bn]))
    assert removed.any() and (~removed).any()
    assert torch.all(seen["out"][0, removed] == 0)
    assert torch.any(seen["out"][0, ~removed] != 0)
    assert helpers.rel_err(out_dense, out_masked) > 1e-3  # masking really changes the model


class OneByOne(nn.Module):
    """Removed channels reach only 1x1 convs (through add, concat, pooling, upsample): folding is exact."""

    def __init__(self):
        super().__init__()
        def block(i, o, k=1):
            return nn.Sequential(nn.Conv2d(i, o, k, padding=k // 2, bias=False), nn.BatchNorm2d(o), nn.SiLU())
        self.a, self.b, self.c = block(3, 16, 3), block(16, 16), block(16, 16)
        self.d = block(32, 24)
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2.0)
        self.head = nn.Conv2d(24, 5, 1)

    def forward(self, x):
        a = self.a(x)
        s = a + self.b(a)
        s = s + self.c(s)
        y = self.d(torch.cat([self.up(self.pool(s)), a], 1))
        return self.head(y)


class ThreeByThree(OneByOne):
    def __init__(self):
        super().__init__()
        self.c = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.SiLU())


def test_fold_is_exact_for_1x1_consumers(helpers):
    for seed in range(3):
        res, err = _check_custom(helpers, OneByOne(), seed)
        assert err <= 1e-4, f"seed {seed}: {err}"
        assert res.stats["junction_channels_removed"] > 0


def test_fold_is_exact_in_the_interior_for_kxk_consumers(helpers):
    model = helpers.randomize_bn(ThreeByThree(), 0)
    res, _ = _check_custom(helpers, model, 0)
    ref, got = res.ref_out, res.got_out
    interior = (slice(None), slice(None), slice(4, -4), slice(4, -4))
    assert helpers.rel_err(ref[interior], got[interior]) <= 1e-4
    assert helpers.rel_err(ref, got) > 1e-4  # the border differs: documented, not hidden
    # without folding the same pruning is exact against the gamma+beta masked model
    model = helpers.randomize_bn(ThreeByThree(), 0)
    graph = build_graph(model, X)
    dense = copy.deepcopy(model)
    res = prune_model(model, helpers.random_keep(graph, 0), round_to=1, min_channels=1, example_input=X, fold=False)
    with torch.no_grad():
        assert helpers.rel_err(masked_model(dense, res.plan, zero_beta=True).eval()(X), model.eval()(X)) <= 1e-4


def _check_custom(helpers, model, seed):
    helpers.randomize_bn(model, seed)
    graph = build_graph(model, X)
    dense = copy.deepcopy(model)
    res = prune_model(model, helpers.random_keep(graph, seed), round_to=1, min_channels=1, example_input=X, fold=True)
    ref = masked_model(dense, res.plan, zero_beta=False).eval()
    with torch.no_grad():
        res.ref_out, res.got_out = ref(X), model.eval()(X)
    return res, helpers.rel_err(res.ref_out, res.got_out)
