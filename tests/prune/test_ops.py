"""Op coverage by what an op does to the channel axis, on small hand-written nets and on torchvision
models (64 px, seeded): pruned == masked dense model, with a real FLOPs cut at ratio 0.5."""
import copy

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from edgeprune.prune.apply import masked_model, prune_model
from edgeprune.prune.graph import build_graph
from edgeprune.prune.recombine import keep_per_gate

X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
X64 = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def cbr(i, o, k=1):
    return nn.Sequential(nn.Conv2d(i, o, k, padding=k // 2, bias=False), nn.BatchNorm2d(o), nn.ReLU())


def exact(helpers, model, x=X, ratio=0.5, train=False, **kw):
    """Prune at `ratio` per gate; assert pruned == masked; return the result."""
    helpers.randomize_bn(model, 0)
    model.train(train)
    dense = copy.deepcopy(model)
    keep = keep_per_gate(build_graph(model, x), ratio)
    res = prune_model(model, keep, example_input=x, fold=False, **kw)
    with torch.no_grad():
        err = helpers.rel_err(masked_model(dense, res.plan).eval()(x), model.eval()(x))
    assert err <= 1e-4, err
    return res


class ShapeUser(nn.Module):
    """x.shape / x.ndim / .size() in arithmetic, a channel slice with a dynamic bound, list(chunk),
    and a forward(self, x, *args, **kwargs) signature."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = cbr(3, 32), cbr(16, 16, 3), cbr(32, 16)

    def forward(self, x, *args, **kwargs):
        y = self.a(x)
        n, c = y.shape[0], y.shape[1]
        assert y.ndim == 4
        parts = list(y.chunk(2, 1))
        parts[1] = self.b(parts[1])
        z = torch.cat(parts, 1).view(n, c, -1).view(n, c, y.size(2), y.size(3))
        return self.c(z)[:, : self.c[0].out_channels // 2]


def test_shapes_chunk_list_and_varargs(helpers):
    res = exact(helpers, ShapeUser())
    assert res.model.a[0].out_channels < 32 and res.model.b[0].out_channels < 16
    assert res.model.c[0].out_channels == 16  # sliced with a bound taken from the layer: kept whole


class Sliced(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = cbr(3, 32), cbr(32, 16), cbr(8, 4)

    def forward(self, x):
        return self.c(self.b(self.a(x))[:, :8])


def test_a_literal_channel_slice_keeps_its_input_whole(helpers):
    res = exact(helpers, Sliced())
    assert res.model.b[0].out_channels == 16 and res.model.a[0].out_channels < 32
    assert any("slices a channel dim" in f["reason"] and f["layers"] == ["b.0"] for f in res.stats["frozen"])


class NoBN(nn.Module):
    """No BatchNorm anywhere: producers are gated (and scored) by their own weight rows; a channel-wise
    gate (SE) multiplies the features; a grouped conv is pruned in whole groups."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.g = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.se1, self.se2 = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        y = torch.relu(self.g(torch.relu(self.a(x))))
        s = torch.sigmoid(self.se2(torch.relu(self.se1(y.mean((2, 3), keepdim=True)))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y * s, 1), 1))


def test_models_without_bn_are_pruned_by_weight_magnitude(helpers):
    res = exact(helpers, NoBN(), round_to=1, min_channels=1)
    m = res.model
    assert m.a.out_channels == m.g.out_channels == m.se2.out_channels == m.fc.in_features < 16
    assert m.g.groups == m.g.out_channels // 4 and m.se1.out_channels < 4


class ChannelsLast(nn.Module):
    """ConvNeXt-style: permute, LayerNorm over channels, Linear MLP, layer scale, permute back."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.norm = nn.LayerNorm(8)
        self.fc1, self.fc2 = nn.Linear(8, 32), nn.Linear(32, 8)
        self.scale = nn.Parameter(torch.rand(8, 1, 1) + 0.5)

    def forward(self, x):
        x = self.stem(x)
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        y = self.fc2(nn.functional.gelu(self.fc1(y))).permute(0, 3, 1, 2)
        return x + self.scale * y


def test_channels_last_mlp_is_pruned_and_the_normalised_stream_kept(helpers):
    res = exact(helpers, ChannelsLast())
    assert res.model.fc1.out_features == 16 and res.model.fc2.in_features == 16
    assert res.model.stem.out_channels == 8 and res.model.scale.shape[0] == 8
    assert any("normalises across channels" in f["reason"] for f in res.stats["frozen"])


class L2Normed(nn.Module):
    """SSD300-style: an L2 normalisation over channels with a learned per-channel scale feeds a head."""

    def __init__(self):
        super().__init__()
        self.a, self.b = cbr(3, 16), cbr(16, 32)
        self.scale = nn.Parameter(torch.rand(32) + 0.5)
        self.head = nn.Conv2d(32, 4, 1)

    def forward(self, x):
        y = self.b(self.a(x))
        return self.head(self.scale.view(1, -1, 1, 1) * nn.functional.normalize(y))


def test_an_l2_normalisation_over_channels_keeps_its_input_whole(helpers):
    res = exact(helpers, L2Normed())
    assert res.model.b[0].out_channels == 32 and res.model.a[0].out_channels < 16
    assert any("L2 normalisation" in f["reason"] and f["layers"] == ["b.0"] for f in res.stats["frozen"])


TORCHVISION = {
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(num_classes=10), False),
    "efficientnet_b0_train": (lambda: torchvision.models.efficientnet_b0(num_classes=10), True),
    "regnet_y_400mf": (lambda: torchvision.models.regnet_y_400mf(num_classes=10), False),
    "shufflenet_v2_x0_5": (lambda: torchvision.models.shufflenet_v2_x0_5(num_classes=10), False),
    "convnext_tiny": (lambda: torchvision.models.convnext_tiny(num_classes=10), False),
}


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_models_exact_with_a_flops_cut(helpers, name):
    build, train = TORCHVISION[name]
    torch.manual_seed(0)
    res = exact(helpers, build(), X64, train=train)
    assert 1 - res.stats["flops_after"] / res.stats["flops_before"] >= 0.3


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.c(x) if x.sum() > 0 else self.c(-x)


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.blk = nn.Sequential(cbr(3, 3), Branchy())

    def forward(self, x):
        return self.blk(x)


def test_errors_name_the_module_path():
    from edgeprune.errors import PruneError
    with pytest.raises(PruneError, match=r"cannot trace module blk\.1 \(Branchy\): TraceError"):
        build_graph(Outer(), X)
    model = nn.Sequential(cbr(3, 8), nn.Sequential(nn.Identity(), nn.PixelShuffle(2)), nn.Conv2d(2, 2, 1))
    with pytest.raises(PruneError, match=r"module 1\.1: op PixelShuffle .*--skip-unsupported"):
        build_graph(model, X)
