"""Session-scoped tiny models and exports for the export tests (about 1 s per export)."""
import pytest
import torch

from edgeprune.models.spec import new_spec, with_widths
from edgeprune.models.yolo import build_model
from tests.export.export_helpers import IMGSZ, NAMES, PRUNED_WIDTHS, randomize_bn


@pytest.fixture(scope="session")
def dense_model():
    torch.manual_seed(0)
    return randomize_bn(build_model(new_spec(len(NAMES), NAMES, size="n")), 1)


@pytest.fixture(scope="session")
def pruned_model():
    torch.manual_seed(1)
    return randomize_bn(build_model(with_widths(new_spec(len(NAMES), NAMES, size="n"), PRUNED_WIDTHS)), 2)


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
