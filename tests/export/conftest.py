"""Session-scoped tiny models and exports for the export tests (about 1 s per export)."""
import pytest
import torch

from edgeprune.models.spec import new_spec, with_widths
from edgeprune.models.yolo import build_model
from edgeprune.prune.apply import random_bn_stats
from tests.export.export_helpers import BN_SPREAD, IMGSZ, NAMES, PRUNED_WIDTHS


@pytest.fixture(scope="session")
def dense_model():
    torch.manual_seed(0)
    return random_bn_stats(build_model(new_spec(len(NAMES), NAMES, size="n")), 1, spread=BN_SPREAD).eval()


@pytest.fixture(scope="session")
def pruned_model():
    torch.manual_seed(1)
    model = build_model(with_widths(new_spec(len(NAMES), NAMES, size="n"), PRUNED_WIDTHS))
    return random_bn_stats(model, 2, spread=BN_SPREAD).eval()


@pytest.fixture(scope="session")
def dense_export(dense_model):
    from edgeprune.export.onnx_export import export_onnx

    torch.set_num_threads(1)
    return export_onnx(dense_model, IMGSZ)


@pytest.fixture(scope="session")
def pruned_export(pruned_model):
    from edgeprune.export.onnx_export import export_onnx

    torch.set_num_threads(1)
    return export_onnx(pruned_model, IMGSZ)
