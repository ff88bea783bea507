import pytest
import torch

from edgeprune.config import make_config
from edgeprune.models.spec import new_spec
from edgeprune.models.yolo import build_model


@pytest.fixture
def cfg():
    cfg = make_config("quick")
    cfg.sparse.ratio_grid = 4      # fewer candidate ratios per layer: keeps the solver tests fast
    return cfg


@pytest.fixture
def tiny_model():
    """An n-size detector with varied BN scales, as after some sparse training."""
    torch.manual_seed(0)
    m = build_model(new_spec(2, size="n"))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for bn in m.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.weight.copy_(torch.rand(bn.num_features, generator=gen) ** 2)
    return m


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(2)
    imgs = torch.rand(2, 3, 32, 32, generator=gen)
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.3, 0.3], [1, 1, 0.25, 0.25, 0.1, 0.1]])
    return imgs, targets
