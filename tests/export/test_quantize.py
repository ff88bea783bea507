import json

import numpy as np
import pytest

from edgeprune.errors import DataError
from edgeprune.export import ort_run
from edgeprune.export.bundle import read_bundle, write_bundle
from edgeprune.fsio import sha256_file
from edgeprune.export.quantize import NpyCalibrationReader, calib_files, head_nodes, quantize_int8
from tests.export.export_helpers import IMGSZ, scenes


def _calib_dir(path, n_batches=2, batch=3, with_manifest=True):
    from jetson.preprocess import preprocess

    path.mkdir()
    images, _ = scenes(n_batches * batch, seed=5)
    xs = np.concatenate([preprocess(img, IMGSZ)[0] for img in images])
    batches = []
    for i in range(n_batches):
        name = f"batch_{i:05d}.npy"
        np.save(path / name, xs[i * batch:(i + 1) * batch])
        batches.append({"file": name, "sha256": sha256_file(path / name)})
    if with_manifest:  # the fields calib/build.py writes that the host reader uses
        (path / "manifest.json").write_text(json.dumps({"version": 1, "batch_size": batch, "dtype": "float32",
                                                         "shape": [batch, 3, IMGSZ, IMGSZ], "batches": batches}))
    return path


def test_qdq_model_runs_in_ort_and_lands_in_the_bundle(tmp_path, dense_model, dense_export):
    calib = _calib_dir(tmp_path / "calib")
    q, info = quantize_int8(dense_export.model, calib, float_nodes=head_nodes(dense_export.conv_nodes))
    ops = {n.op_type for n in q.graph.node}
    producers = {o: n.op_type for n in q.graph.node for o in n.output}
    convs = {n.name: n for n in q.graph.node if n.op_type == "Conv"}
    assert producers[convs["/layers.1/conv/Conv"].input[1]] == "DequantizeLinear"
    assert info["float_nodes"] == ["/detect/m.0/Conv", "/detect/m.1/Conv", "/detect/m.2/Conv"]
    for name in info["float_nodes"]:  # the head keeps float weights (P3/P4 inputs stay Q/DQ: shared with the neck)
        assert convs[name].input[1] not in producers
    assert producers[convs["/detect/m.2/Conv"].input[0]] == "Mul"  # P5 feeds only the head: stays float
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert info["calib_images"] == 6 and info["per_channel"] and info["format"] == "QDQ"
    # per-channel weights: a weight DequantizeLinear carries one scale per output channel
    inits = {i.name: i for i in q.graph.initializer}
    per_channel = [n for n in q.graph.node if n.op_type == "DequantizeLinear" and len(inits[n.input[1]].dims) == 1
                   and inits[n.input[1]].dims[0] > 1]
    assert per_channel
    x = np.random.default_rng(0).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    out8 = ort_run.run(ort_run.session(q), x)
    out32 = ort_run.run(ort_run.session(dense_export.model), x)
    assert out8.shape == out32.shape and np.isfinite(out8).all()
    # Measured on this model and input: probabilities (0.001-0.245 in FP32) move by at most 3.0e-4 and box
    # coordinates by at most 0.39 px at 8 bits; the bounds leave ~6x / ~2.5x room, a wrong scale breaks them.
    assert np.abs(out8[..., 4:] - out32[..., 4:]).max() < 2e-3
    assert np.abs(out8[..., :4] - out32[..., :4]).max() < 1.0
    m = write_bundle(tmp_path / "b", dense_model.spec, dense_export, dense_export.model, int8_graph=q, calib_dir=calib)
    assert m["extra_files"]["int8_model"] == "model.int8.onnx" and m["extra_files"]["calib"] == "calib/manifest.json"
    assert "model.int8.onnx" in m["extra_sha256"]
    assert "network-mode=1" in (tmp_path / "b" / "deepstream_nvinfer.txt").read_text()
    read_bundle(tmp_path / "b")
    (tmp_path / "b" / "model.int8.onnx").write_bytes(b"tampered")
    from edgeprune.errors import BundleError

    with pytest.raises(BundleError, match="model.int8.onnx"):
        read_bundle(tmp_path / "b")


def test_reader_without_manifest_splits_batches_for_a_batch1_model(tmp_path):
    calib = _calib_dir(tmp_path / "c", n_batches=2, batch=3, with_manifest=False)
    reader = NpyCalibrationReader(calib, "images", [1, 3, IMGSZ, IMGSZ])
    batches = iter(reader.get_next, None)
    shapes = [b["images"].shape for b in batches]
    assert shapes == [(1, 3, IMGSZ, IMGSZ)] * 6
    reader = NpyCalibrationReader(calib, "images", ["batch", 3, IMGSZ, IMGSZ], max_images=3)
    assert [b["images"].shape[0] for b in iter(reader.get_next, None)] == [3]


def test_calibration_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        calib_files(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .npy"):
        calib_files(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    np.save(bad / "b0.npy", np.zeros((2, 3, 32, 32), np.float32))
    reader = NpyCalibrationReader(bad, "images", [1, 3, IMGSZ, IMGSZ])
    with pytest.raises(DataError, match=r"b0\.npy: calibration batch is float32 \[2, 3, 32, 32\]"):
        reader.get_next()
    (bad / "manifest.json").write_text(json.dumps({"batches": [{"file": "b0.npy"}, {"file": "b1.npy"}]}))
    with pytest.raises(DataError, match="b1.npy, which is missing"):
        calib_files(bad)
    (bad / "manifest.json").write_text(json.dumps({"batches": [{"file": "b0.npy", "sha256": "0" * 64}]}))
    with pytest.raises(DataError, match="b0.npy: sha256 does not match"):
        calib_files(bad)
    (bad / "manifest.json").write_text(json.dumps({"batches": [{"file": "../b0.npy"}]}))
    with pytest.raises(DataError, match="inside"):
        calib_files(bad)
    (bad / "manifest.json").write_text(json.dumps({"files": ["b0.npy"]}))
    with pytest.raises(DataError, match="'batches' list"):
        calib_files(bad)
