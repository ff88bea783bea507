"""Fuzz the manifest loader: whatever JSON a manifest holds, the loader raises BundleError or succeeds."""
import copy
import json
import os

import pytest

hyp = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edgeprune.errors import BundleError  # noqa: E402
from jetson.bundle import validate_manifest  # noqa: E402

VALID = {"schema_version": 1, "producer": {"name": "edgeprune", "version": "0.1.0"},
         "model": {"file": "model.onnx", "sha256": "0" * 64, "opset": 13, "input_name": "images",
                   "input_shape": [1, 3, 64, 64], "dynamic_batch": False, "output_names": ["output"],
                   "output_layout": "yolov5_decoded", "nms": "none"},
         "classes": ["a", "b"],
         "preprocess": {"size": [64, 64], "pad_value": 114, "color": "RGB", "scale": 0.0039, "mean": [0, 0, 0],
                        "std": [1, 1, 1], "layout": "NCHW"},
         "postprocess": {"conf_threshold": 0.25, "iou_threshold": 0.45, "max_detections": 300,
                         "class_agnostic": False},
         "strides": [8, 16, 32], "anchors": [[1, 2], [3, 4], [5, 6]], "extra_files": {"calib": "calib/manifest.json"}}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            for p in _paths(v, prefix + (k,)):
                yield p
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            for p in _paths(v, prefix + (i,)):
                yield p


ALL_PATHS = [p for p in _paths(VALID) if p]


def _check(m, root):
    try:
        validate_manifest(m, root)
    except BundleError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=json_values)
def test_arbitrary_json_only_bundle_error(m, tmp_path):
    _check(m, str(tmp_path))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(idx=st.integers(0, len(ALL_PATHS) - 1), value=json_values, delete=st.booleans())
def test_mutated_valid_manifest_only_bundle_error(idx, value, delete, tmp_path):
    m = copy.deepcopy(VALID)
    path = ALL_PATHS[idx]
    parent = m
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    _check(m, str(tmp_path))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_garbage_manifest_file_only_bundle_error(text, tmp_path):
    from jetson.bundle import load_bundle
    with open(os.path.join(str(tmp_path), "manifest.json"), "w", encoding="utf-8", errors="surrogatepass") as f:
        f.write(text)
    try:
        load_bundle(str(tmp_path))
    except BundleError:
        pass


def test_the_valid_manifest_is_valid(tmp_path):
    assert validate_manifest(json.loads(json.dumps(VALID)), str(tmp_path))["_root"] == str(tmp_path)
