"""Fuzz the manifest loader: whatever JSON a manifest holds, the loader raises BundleError or succeeds;
generated valid manifests are accepted unchanged, and specific invalid ones are rejected naming the key."""
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


# mostly objects with the manifest's own top-level keys, so checks past "is it an object" are reached
json_objects = st.dictionaries(st.sampled_from(sorted(VALID) + ["x"]), json_values, max_size=9)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=json_objects | json_values)
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


OPTIONAL = [("preprocess", "pad_value"), ("preprocess", "color"), ("preprocess", "scale"), ("preprocess", "mean"),
            ("preprocess", "std"), ("preprocess", "layout"), ("postprocess", "class_agnostic"), ("strides",),
            ("anchors",), ("extra_files",)]
unit = st.floats(0.0, 1.0)


@st.composite
def valid_manifests(draw):
    m = copy.deepcopy(VALID)
    h, w = draw(st.integers(1, 2048)), draw(st.integers(1, 2048))
    dyn = draw(st.booleans())
    m["model"].update(input_shape=[-1 if dyn else draw(st.integers(1, 64)), 3, h, w], dynamic_batch=dyn,
                      opset=draw(st.integers(7, 30)), sha256=draw(st.from_regex(r"[0-9a-f]{64}", fullmatch=True)))
    if draw(st.booleans()):
        m["model"].update(output_layout="efficient_nms", nms="efficient_nms",
                          output_names=["num_dets", "det_boxes", "det_scores", "det_classes"])
    m["classes"] = draw(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=5))
    m["preprocess"].update(size=[h, w], pad_value=draw(st.integers(0, 255)), color=draw(st.sampled_from(["RGB", "BGR"])),
                           std=draw(st.lists(st.floats(0.01, 300), min_size=3, max_size=3)))
    m["postprocess"].update(conf_threshold=draw(unit), iou_threshold=draw(unit),
                            max_detections=draw(st.integers(1, 10 ** 6)), class_agnostic=draw(st.booleans()))
    for path in draw(st.lists(st.sampled_from(OPTIONAL), unique=True)):
        del (m if len(path) == 1 else m[path[0]])[path[-1]]
    return m


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=valid_manifests())
def test_valid_manifests_are_accepted_unchanged(m, tmp_path):
    root = str(tmp_path)
    out = validate_manifest(json.loads(json.dumps(m)), root)
    assert out == dict(m, _root=os.path.abspath(root), _manifest_path=os.path.join(os.path.abspath(root), "manifest.json"))


def _with(path, value):
    m = copy.deepcopy(VALID)
    node = m
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return m


_DELETE = object()


@pytest.mark.parametrize("path, value, named", [
    (("schema_version",), 0, "key 'schema_version' must be a positive integer"),
    (("schema_version",), 99, "schema_version 99 is newer than this runtime"),
    (("model", "opset"), 6, "key 'model.opset' must be an integer ONNX opset"),
    (("model", "sha256"), "A" * 64, "key 'model.sha256' must be 64 lowercase hex digits"),
    (("model", "input_name"), _DELETE, "key 'model.input_name' is missing"),
    (("model", "dynamic_batch"), True, "key 'model.dynamic_batch' disagrees with model.input_shape"),
    (("model", "output_layout"), "efficient_nms", "key 'model.output_names' must name the 4 EfficientNMS_TRT"),
    (("model", "file"), "../model.onnx", "key 'model.file' = '../model.onnx' points outside the bundle"),
    (("model", "file"), "/etc/model.onnx", "is an absolute path"),
    (("classes",), [], "key 'classes' must be a non-empty list of class names"),
    (("preprocess", "size"), [32, 32], "key 'preprocess.size' [32, 32] disagrees with model.input_shape"),
    (("preprocess", "std"), [1, 0, 1], "key 'preprocess.std' must be 3 non-zero numbers"),
    (("postprocess", "conf_threshold"), 1.5, "key 'postprocess.conf_threshold' must be a number in [0, 1]"),
    (("postprocess", "max_detections"), 0, "key 'postprocess.max_detections' must be a positive integer"),
    (("extra_files",), {"calib": "../../x"}, "key 'extra_files.calib'"),
    (("recombination",), [], "key 'recombination' must be an object"),
])
def test_specific_invalid_manifests_are_rejected_naming_the_key(path, value, named, tmp_path):
    with pytest.raises(BundleError) as info:
        validate_manifest(_with(path, value), str(tmp_path))
    assert named in str(info.value)
