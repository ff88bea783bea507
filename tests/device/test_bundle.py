import json
import os

import pytest

from edgeprune.errors import BundleError
from jetson.bundle import SCHEMA_VERSION, extra_file, load_bundle, public_manifest, read_manifest

pytestmark = pytest.mark.py36


def _edit(bundle, fn):
    path = os.path.join(bundle, "manifest.json")
    with open(path) as f:
        m = json.load(f)
    fn(m)
    with open(path, "w") as f:
        json.dump(m, f)


def test_valid_bundle_loads_with_root(tiny_bundle):
    m = load_bundle(tiny_bundle)
    assert m["_root"] == os.path.abspath(tiny_bundle)
    assert m["model"]["input_shape"][1] == 3
    assert "_root" not in public_manifest(m)
    assert load_bundle(os.path.join(tiny_bundle, "manifest.json"))["model"]["sha256"] == m["model"]["sha256"]


def test_missing_bundle_and_manifest(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(str(tmp_path / "nope"))
    with pytest.raises(BundleError, match="manifest.json: missing"):
        load_bundle(str(tmp_path))


def test_corrupt_json_names_file_and_line(bundle_copy):
    with open(os.path.join(bundle_copy, "manifest.json"), "w") as f:
        f.write('{"schema_version": 1,\n "model": {oops}\n}')
    with pytest.raises(BundleError, match=r"manifest.json:2: invalid JSON"):
        load_bundle(bundle_copy)


def test_newer_schema_says_upgrade(bundle_copy):
    _edit(bundle_copy, lambda m: m.update(schema_version=SCHEMA_VERSION + 1))
    with pytest.raises(BundleError, match="upgrade edgeprune"):
        load_bundle(bundle_copy)


def test_bad_schema_value(bundle_copy):
    _edit(bundle_copy, lambda m: m.update(schema_version="1"))
    with pytest.raises(BundleError, match="schema_version"):
        load_bundle(bundle_copy)


def test_sha_mismatch_detects_tampering(bundle_copy):
    with open(os.path.join(bundle_copy, "model.onnx"), "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="does not match the manifest's model.sha256"):
        load_bundle(bundle_copy)
    assert load_bundle(bundle_copy, check_sha=False)


def test_missing_model_file(bundle_copy):
    os.remove(os.path.join(bundle_copy, "model.onnx"))
    with pytest.raises(BundleError, match="model file model.onnx .* is missing"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("rel", ["../model.onnx", "/etc/passwd", "sub/../../x.onnx"])
def test_path_escape_is_refused(bundle_copy, rel):
    _edit(bundle_copy, lambda m: m["model"].update(file=rel))
    with pytest.raises(BundleError, match="model.file"):
        load_bundle(bundle_copy)


def test_symlink_escape_is_refused(bundle_copy, tmp_path):
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(b"x")
    os.symlink(str(outside), os.path.join(bundle_copy, "link.onnx"))
    _edit(bundle_copy, lambda m: m["extra_files"].update(int8_model="link.onnx"))
    with pytest.raises(BundleError, match="extra_files.int8_model.*outside the bundle"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("edit,key", [
    (lambda m: m.pop("classes"), "classes"),
    (lambda m: m["model"].update(input_shape=[1, 3, 96]), "model.input_shape"),
    (lambda m: m["model"].update(dynamic_batch="no"), "model.dynamic_batch"),
    (lambda m: m["model"].update(output_layout="yolov8"), "model.output_layout"),
    (lambda m: m["preprocess"].update(size=[64, 64]), "preprocess.size"),
    (lambda m: m["preprocess"].update(std=[1, 0, 1]), "preprocess.std"),
    (lambda m: m["postprocess"].update(conf_threshold=2), "postprocess.conf_threshold"),
    (lambda m: m["postprocess"].update(max_detections=True), "postprocess.max_detections"),
    (lambda m: m.update(preprocess=[]), "preprocess"),
    (lambda m: m["model"].update(sha256="ABC"), "model.sha256"),
])
def test_required_keys_and_types_named(bundle_copy, edit, key):
    _edit(bundle_copy, edit)
    with pytest.raises(BundleError) as exc:
        load_bundle(bundle_copy)
    assert "'{}'".format(key) in str(exc.value)
    assert "manifest.json" in str(exc.value)


def test_extra_file_lookup(bundle_copy):
    m = read_manifest(bundle_copy)
    assert extra_file(m, "int8_model", required=False) is None
    with pytest.raises(BundleError, match="edgeprune export --int8"):
        extra_file(m, "int8_model", hint="make one with edgeprune export --int8")
