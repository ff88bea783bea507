import numpy as np
import onnx_graphsurgeon as gs
import pytest

from edgeprune.errors import DataError, ExportError
from edgeprune.export.parity import load_images, match_detections, run_parity
from tests.export.export_helpers import IMGSZ, scenes


@pytest.mark.parametrize("which", ["dense", "pruned"])
def test_ort_matches_torch_on_images(which, request):
    model = request.getfixturevalue(f"{which}_model")
    exp = request.getfixturevalue(f"{which}_export")
    images, truth = scenes(6)
    rep = run_parity(model, exp.model, images, IMGSZ, truth=truth)
    assert rep["ok"] and rep["max_abs_diff"] <= 1e-3
    assert rep["detections_torch"] > 0 and rep["detection_match"] >= 0.99
    assert abs(rep["map_torch"]["map"] - rep["map_ort"]["map"]) <= 0.001


def test_parity_catches_a_changed_weight(dense_model, dense_export):
    g = gs.import_onnx(dense_export.model)
    node = next(n for n in g.nodes if n.name == "/detect/m.0/Conv")
    node.inputs[2] = gs.Constant("bias_shifted", node.inputs[2].values + np.float32(0.5))
    images, _ = scenes(2)
    with pytest.raises(ExportError, match="parity failed"):
        run_parity(dense_model, gs.export_onnx(g.cleanup()), images, IMGSZ)
    rep = run_parity(dense_model, gs.export_onnx(g.cleanup()), images, IMGSZ, raise_on_fail=False)
    assert rep["ok"] is False and rep["max_abs_diff"] > 1e-3


def test_match_detections_counts_both_directions():
    b = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    s = np.array([0.9, 0.8], np.float32)
    c = np.array([0, 1])
    assert match_detections([(b, s, c)], [(b, s, c)]) == 1.0
    assert match_detections([(b, s, c)], [(b[:1], s[:1], c[:1])]) == 0.5
    assert match_detections([(b, s, c)], [(b, s, np.array([1, 1]))]) == 0.5


def test_load_images(tmp_path):
    from PIL import Image

    images, _ = scenes(2)
    for i, img in enumerate(images):
        Image.fromarray(img).save(tmp_path / f"{i}.png")
    loaded = load_images(tmp_path, 5)
    assert len(loaded) == 2 and np.array_equal(loaded[0], images[0])
    (tmp_path / "z.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="z.jpg"):
        load_images(tmp_path, 5)
    with pytest.raises(DataError, match="not found"):
        load_images(tmp_path / "missing", 5)


def test_map_parity_is_non_trivial_with_pseudo_truth(dense_model, dense_export):
    """Truth = torch's 5 best detections per image, so torch's mAP is ~1 and ORT has to reproduce it."""
    import torch

    from jetson.postprocess import postprocess, scale_boxes
    from jetson.preprocess import preprocess

    images, _ = scenes(4, seed=3)
    truth = []
    for img in images:
        x, meta = preprocess(img, IMGSZ)
        with torch.no_grad():
            boxes, _, classes = postprocess(dense_model(torch.from_numpy(x)).numpy(), 0.001, 0.6)[0]
        truth.append((scale_boxes(boxes[:5], meta), classes[:5]))
    rep = run_parity(dense_model, dense_export.model, images, IMGSZ, truth=truth)
    assert rep["map_torch"]["map50"] > 0.9
    assert abs(rep["map_torch"]["map50"] - rep["map_ort"]["map50"]) <= 0.001
