"""The anchor-free family through export: ONNX + graph verification + parity, the manifest's output layout,
the device runtime's numpy post-processing against the host's torch model, and EfficientNMS for it."""
import json

import numpy as np
import pytest
import torch
import torchvision

from edgeprune.models.io import save_checkpoint
from edgeprune.models.spec import new_spec
from edgeprune.models.yolo import build_model
from edgeprune.prune.apply import random_bn_stats
from jetson.postprocess import postprocess, scale_boxes
from jetson.preprocess import preprocess
from tests.export.export_helpers import BN_SPREAD

NAMES = ["plane", "ship", "car"]
IMGSZ = 64


@pytest.fixture(scope="module")
def v8_bundle(tmp_path_factory):
    from edgeprune.config import ExportConfig
    from edgeprune.export.bundler import export_bundle

    torch.manual_seed(0)
    model = build_model(new_spec(len(NAMES), NAMES, size="n", family="yolov8"))
    model = random_bn_stats(model, 1, spread=BN_SPREAD).eval()
    with torch.no_grad():   # confident class logits so detections exist at conf 0.25
        for conv in model.detect.cv3:
            conv[-1].bias.fill_(0.5)
    root = tmp_path_factory.mktemp("v8")
    save_checkpoint(root / "m.pt", model)
    result = export_bundle(root / "m.pt", root / "bundle", ExportConfig(parity_images=2), imgsz=IMGSZ)
    return model.eval(), root / "bundle", result


def test_export_verifies_and_records_layout(v8_bundle):
    _, bundle, result = v8_bundle
    assert result["verify"]["status"] == "passed" and result["verify"]["conv"] > 60
    assert result["parity"]["max_abs_diff"] < 1e-3 and result["parity"]["detection_match"] == 1.0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"]["output_layout"] == "anchor_free_decoded"
    assert manifest["anchors"] == []


def test_device_detect_equals_host_torch(v8_bundle):
    from jetson.runtime import load_detector

    model, bundle, _ = v8_bundle
    rng = np.random.default_rng(0)
    img = (rng.random((48, 80, 3)) * 255).astype(np.uint8)
    x, meta = preprocess(img, IMGSZ)
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).numpy()
    boxes, scores, classes = postprocess(pred, 0.25, 0.45, layout="anchor_free_decoded")[0]
    boxes = scale_boxes(boxes, meta)
    det = load_detector(str(bundle), backend="onnxruntime")
    try:
        found = det.detect(img)
    finally:
        det.close()
    assert len(found) == len(scores) > 0
    for d, b, s, c in zip(found, boxes, scores, classes):
        assert d["class_id"] == int(c) and d["class_name"] == NAMES[int(c)]
        assert abs(d["score"] - float(s)) < 1e-3 and np.abs(np.asarray(d["box"]) - b).max() < 0.05


def test_numpy_postprocess_matches_torch_reference():
    """Fixture: decoded [1, N, 4+nc] rows -> numpy post-processing == torchvision's batched NMS on
    score = best class probability (no objectness column in this layout)."""
    rng = np.random.default_rng(1)
    n, nc = 200, 3
    xy = rng.random((n, 2)) * 64
    wh = rng.random((n, 2)) * 20 + 2
    cls = rng.random((n, nc)) ** 3
    pred = np.concatenate([xy, wh, cls], 1).astype(np.float32)[None]
    boxes, scores, classes = postprocess(pred, 0.2, 0.5, layout="anchor_free_decoded")[0]
    t = torch.from_numpy(pred[0])
    best, ids = t[:, 4:].max(1)
    ok = best > 0.2
    xyxy = torchvision.ops.box_convert(t[ok, :4], "cxcywh", "xyxy")
    keep = torchvision.ops.batched_nms(xyxy, best[ok], ids[ok], 0.5)
    assert np.allclose(boxes, xyxy[keep].numpy(), atol=1e-4)
    assert np.allclose(scores, best[ok][keep].numpy()) and (classes == ids[ok][keep].numpy()).all()
    # the anchor-based reading of the same rows differs (column 4 taken as objectness)
    assert len(postprocess(pred, 0.2, 0.5)[0][1]) != len(scores)
    with pytest.raises(ValueError, match="unknown output layout"):
        postprocess(pred, layout="yolox")


def test_efficient_nms_anchor_free(v8_bundle):
    import onnx

    from edgeprune.export.nms_plugin import append_efficient_nms

    _, bundle, _ = v8_bundle
    g = append_efficient_nms(onnx.load(str(bundle / "model.onnx")), len(NAMES), anchor_free=True)
    ops = [n.op_type for n in g.graph.node]
    assert "EfficientNMS_TRT" in ops
    assert not any(n.name == "nms_scores" for n in g.graph.node)   # no objectness multiply
    from edgeprune.errors import ExportError
    with pytest.raises(ExportError, match="expected 5\\+3"):
        append_efficient_nms(onnx.load(str(bundle / "model.onnx")), len(NAMES))


@pytest.mark.parametrize("family", ["yolov8", "yolo11"])
def test_pruned_v8_export_verifies_junctions(tmp_path, family):
    """C2f/C3k2 junctions reach their consumers through a chunk (Split) and several Concat segments;
    the verifier checks each against the recombination map and catches a wrong one."""
    import copy

    from edgeprune.errors import ExportError
    from edgeprune.export.onnx_export import export_onnx
    from edgeprune.export.verify import verify_graph
    from edgeprune.prune.apply import prune_model
    from edgeprune.prune.graph import build_graph
    from tests.prune.conftest import random_keep

    x = torch.zeros(1, 3, IMGSZ, IMGSZ)
    model = build_model(new_spec(len(NAMES), NAMES, size="n", family=family))
    model = random_bn_stats(model, 3, spread=BN_SPREAD).eval()
    skip = family == "yolo11"
    keep = random_keep(build_graph(model, x, skip_unsupported=skip), 3, p=0.5)
    res = prune_model(model, keep, round_to=1, min_channels=1, example_input=x, skip_unsupported=skip)
    spec = {**res.model.spec, "widths": res.model.conv_widths()}
    exp = export_onnx(res.model, IMGSZ)
    rec = res.recombination_map
    assert any(j["id"].startswith("layers.2") for j in rec["junctions"])
    report = verify_graph(exp.model, spec, exp.conv_nodes, rec)
    assert report["checked"]["junctions"] == len(rec["junctions"]) > 0
    bad = copy.deepcopy(rec)
    j = next(j for j in bad["junctions"] if j["id"].startswith("layers.2"))
    j["kept"] = j["kept"][:-1]
    with pytest.raises(ExportError, match="layers.2"):
        verify_graph(exp.model, spec, exp.conv_nodes, bad)


def test_int8_qdq_keeps_the_head_float(v8_bundle, tmp_path):
    """INT8 (QDQ) of the anchor-free graph: every head conv stays float, the output keeps its layout and
    decodes with the device post-processing."""
    import onnx
    import onnxruntime as ort

    from edgeprune.export.quantize import head_nodes, quantize_int8

    _, bundle, _ = v8_bundle
    rng = np.random.default_rng(0)
    for i in range(2):
        np.save(tmp_path / f"batch_{i:05d}.npy", rng.random((1, 3, IMGSZ, IMGSZ), dtype=np.float32))
    conv_nodes = json.loads((bundle / "onnx_map.json").read_text())["conv_nodes"]
    fp32 = onnx.load(str(bundle / "model.onnx"))
    int8, info = quantize_int8(fp32, tmp_path, float_nodes=head_nodes(conv_nodes))
    assert len(info["float_nodes"]) == 3 * (3 + 3)        # box + class branch convs on 3 levels
    x = rng.random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    out = ort.InferenceSession(int8.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    assert out.shape == (1, 84, 4 + len(NAMES))
    assert ((out[..., 4:] >= 0) & (out[..., 4:] <= 1)).all()
    postprocess(out, 0.001, 0.6, layout="anchor_free_decoded")
