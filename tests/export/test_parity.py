import numpy as np
import onnx_graphsurgeon as gs
import pytest

from edgeprune.errors import DataError, ExportError
from edgeprune.export.parity import load_images, match_detections, run_parity
from tests.export.export_helpers import IMGSZ, NAMES, scenes


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


def _dets(*rows):
    """rows of (x1, y1, x2, y2, score, class) -> one image's (boxes, scores, classes)."""
    a = np.array(rows, np.float32).reshape(-1, 6)
    return a[:, :4], a[:, 4], a[:, 5].astype(np.int64)


def test_near_ties_are_excused_and_real_differences_are_not():
    from edgeprune.export.parity import compare_detections

    conf, iou = 0.001, 0.6
    a, b = (0, 0, 10, 10), (2, 0, 12, 10)                          # IoU 0.67: one suppresses the other
    c = (4, 0, 14, 10)                                              # overlaps b (IoU 0.67), not a (IoU 0.43)
    far = (50, 50, 60, 60)
    # torch keeps a (0.5000) and so c; ORT scores b 0.0004 higher, keeps b, which suppresses c
    ref = [_dets((*a, 0.5, 0), (*c, 0.3, 0), (*far, 0.9, 1))]
    test = [_dets((*b, 0.5004, 0), (*far, 0.9, 1))]
    rep = compare_detections(ref, test, conf, iou)
    assert rep["agreement"] == 1.0 and rep["near_ties"] == 3 and rep["unexplained"] == []
    assert match_detections(ref, test) < 0.5                        # the strict count would fail it
    # at the score threshold: present on one side only
    rep = compare_detections([_dets((*far, 0.0013, 2))], [_dets()], conf, iou)
    assert rep["agreement"] == 1.0
    # a real difference: ORT sees an object torch does not, far from any tie
    rep = compare_detections([_dets((*far, 0.9, 1))], [_dets((*far, 0.9, 1), (*a, 0.7, 0))], conf, iou)
    assert rep["agreement"] == pytest.approx(2 / 3) and rep["near_ties"] == 0
    assert rep["unexplained"] == [{"image": 0, "only_in": "ORT", "class": 0, "score": 0.7,
                                   "box": [0.0, 0.0, 10.0, 10.0]}]
    # the same box with another score is no tie either
    rep = compare_detections([_dets((*a, 0.5, 0))], [_dets((*a, 0.6, 0))], conf, iou)
    assert rep["agreement"] == 0.0


def test_numerically_equal_export_passes_and_a_failure_says_where(dense_model, dense_export):
    """Scores nudged by <2e-4 (inside atol) reorder some near-ties after NMS: the strict count drops below
    99 %, the tie-aware agreement does not; a real change fails and says where."""
    g = gs.import_onnx(dense_export.model)
    for level in range(3):
        node = next(n for n in g.nodes if n.name == f"/detect/m.{level}/Conv")
        bias = node.inputs[2].values.copy()
        bias[np.arange(len(bias)) % (5 + len(NAMES)) >= 4] += np.float32(1e-3)    # objectness and class logits
        node.inputs[2] = gs.Constant(f"bias_nudged{level}", bias)
    images, _ = scenes(8)
    rep = run_parity(dense_model, gs.export_onnx(g.cleanup()), images, IMGSZ)
    assert rep["max_abs_diff"] < 1e-3 and rep["detection_match"] < 0.99 and rep["near_ties"] > 0
    assert rep["ok"] and rep["detection_agreement"] >= 0.99
    node.inputs[2] = gs.Constant("bias_shifted", node.inputs[2].values + np.float32(0.5))
    shifted = gs.export_onnx(g.cleanup())
    with pytest.raises(ExportError, match=r"before NMS \(at image \d+, output row \d+ of \d+, .*torch .* vs ORT .*"
                                          r"--parity-atol"):
        run_parity(dense_model, shifted, images[:2], IMGSZ)
    relaxed = run_parity(dense_model, shifted, images[:2], IMGSZ, atol=1e4, min_match=0.0)
    assert relaxed["ok"] and relaxed["max_abs_diff"] > 1e-3


def test_pairing_is_a_maximum_matching():
    """Equal-score detections leave NMS in either order; where boxes are clipped at the image edge two of them
    can both fit one partner. First-fit pairing then left pairs unmatched (the quick run's dense checkpoint
    failed export with "only 97.9 % of post-NMS detections agree" for this reason)."""
    t1, t2 = (0, 0, 100, 100), (0, 0, 100, 99)
    r1, r2 = (0, 0, 100, 99.5), (0, 0, 100, 100.5)    # r1 fits t1 and t2 (IoU 0.995), r2 only t1
    ref = [_dets((*r1, 0.002, 0), (*r2, 0.002, 0))]
    test = [_dets((*t1, 0.002, 0), (*t2, 0.002, 0))]
    assert match_detections(ref, test) == 1.0          # first-fit pairs r1-t1 and leaves r2 and t2 out
