import json

import pytest

from edgeprune.errors import BundleError
from edgeprune.export.bundle import read_bundle, recombination_summary, write_bundle
from edgeprune.export.nms_plugin import append_efficient_nms
from edgeprune.export.bundler import verify_bundle
from edgeprune.fsio import sha256_file
from tests.export.export_helpers import IMGSZ, NAMES, RECOMBINATION


@pytest.fixture()
def bundle(tmp_path, pruned_model, pruned_export):
    out = tmp_path / "bundle"
    write_bundle(out, pruned_model.spec, pruned_export, pruned_export.model, metrics={"map50": 0.5, "params": 7},
                 recombination=RECOMBINATION, reports={"verify": {"ok": True}})
    return out


def test_manifest_fields_and_sha(bundle):
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["schema_version"] == 1 and m["producer"]["name"] == "edgeprune"
    assert m["model"] == {"file": "model.onnx", "sha256": sha256_file(bundle / "model.onnx"), "opset": 13,
                          "input_name": "images", "input_shape": [1, 3, IMGSZ, IMGSZ], "dynamic_batch": False,
                          "output_names": ["output"], "output_layout": "yolov5_decoded", "nms": "none"}
    assert m["classes"] == NAMES
    assert m["preprocess"] == {"size": [IMGSZ, IMGSZ], "pad_value": 114, "color": "RGB", "scale": 1 / 255.0,
                               "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "layout": "NCHW"}
    assert m["postprocess"]["iou_threshold"] == 0.45 and m["postprocess"]["max_detections"] == 300
    assert m["strides"] == [8, 16, 32] and len(m["anchors"]) == 3
    assert m["metrics"] == {"map50": 0.5, "map": None, "params": 7, "flops": 0}
    assert m["recombination"] == {"rule": "union", "junctions": 2, "channels_removed": (16 - 5) + (32 - 12)}
    for rel in m["extra_files"].values():
        assert (bundle / rel).is_file()
    assert json.loads((bundle / "recombination.json").read_text()) == RECOMBINATION
    assert (bundle / "labels.txt").read_text().split() == NAMES
    pbtxt = (bundle / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in pbtxt and "dims: [ 1, 252, 8 ]" in pbtxt and "tensorrt_plan" in pbtxt
    ds = (bundle / "deepstream_nvinfer.txt").read_text()
    assert "network-mode=2" in ds and "cluster-mode=2" in ds and "num-detected-classes=3" in ds
    assert "net-scale-factor=0.0039215686" in ds
    assert read_bundle(bundle)["_root"] == str(bundle)


def test_verify_bundle_runs_all_checks(bundle):
    res = verify_bundle(bundle)
    assert res["sha256"] == "ok" and res["verify"]["junctions"] == 2 and res["verify"]["layers"] == 60
    assert res["smoke"]["output_shape"] == [1, 252, 8]


def test_tampered_model_is_refused(bundle):
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (bundle / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.onnx: sha256 does not match"):
        read_bundle(bundle)


def test_manifest_errors(bundle, tmp_path):
    with pytest.raises(BundleError, match="no manifest"):
        read_bundle(tmp_path / "nothing")
    mpath = bundle / "manifest.json"
    m = json.loads(mpath.read_text())
    mpath.write_text(json.dumps({**m, "schema_version": 99}))
    with pytest.raises(BundleError, match="schema_version 99"):
        read_bundle(bundle)
    mpath.write_text(json.dumps({**m, "extra_files": {"labels": "../../etc/passwd"}}))
    with pytest.raises(BundleError, match="outside the bundle"):
        read_bundle(bundle)
    mpath.write_text(json.dumps({**m, "extra_files": {"labels": "gone.txt"}}))
    with pytest.raises(BundleError, match="gone.txt"):
        read_bundle(bundle)
    mpath.write_text("{broken")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_bundle(bundle)


def test_nms_bundle(tmp_path, dense_model, dense_export):
    g = append_efficient_nms(dense_export.model, 3, 0.25, 0.45, 100)
    m = write_bundle(tmp_path / "b", dense_model.spec, dense_export, g, nms="efficient_nms", max_det=100)
    assert m["model"]["output_layout"] == "efficient_nms"
    assert m["model"]["output_names"] == ["num_detections", "detection_boxes", "detection_scores", "detection_classes"]
    pbtxt = (tmp_path / "b" / "config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in pbtxt and "TYPE_INT32" in pbtxt
    res = verify_bundle(tmp_path / "b")
    assert "TensorRT only" in res["smoke"]["skipped"]


def test_recombination_summary_of_dense_model():
    assert recombination_summary(None) == {"rule": None, "junctions": 0, "channels_removed": 0}


def test_dynamic_batch_bundle_marks_batch_minus_one(tmp_path, dense_model):
    from edgeprune.export.onnx_export import export_onnx

    exp = export_onnx(dense_model, IMGSZ, dynamic_batch=True)
    m = write_bundle(tmp_path / "b", dense_model.spec, exp, exp.model)
    assert m["model"]["input_shape"] == [-1, 3, IMGSZ, IMGSZ] and m["model"]["dynamic_batch"] is True
    pbtxt = (tmp_path / "b" / "config.pbtxt").read_text()
    assert "max_batch_size: 8" in pbtxt and "dims: [ 3, 64, 64 ]" in pbtxt and "dynamic_batching" in pbtxt
    assert verify_bundle(tmp_path / "b")["smoke"]["output_shape"] == [1, 252, 8]
