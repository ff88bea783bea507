"""Load and validate a deploy bundle (`manifest.json` + `model.onnx` + optional extras). Python 3.6, no torch.

The manifest format is fixed in docs/CONTRACTS.md ("Deploy bundle"). Everything that can be wrong with a
bundle becomes a BundleError naming the file and the key: missing folder/manifest, malformed JSON (with
line), a schema newer than this runtime (upgrade edgeprune), a missing key or wrong type, a path that
escapes the bundle, a model whose sha256 differs from the manifest (tampered or truncated copy).
"""
import json
import math
import os
import re

from edgeprune.errors import BundleError
from edgeprune.fsio import sha256_file

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
# yolov5_decoded: [B, N, 5+nc] with objectness; anchor_free_decoded: [B, N, 4+nc] (jetson/postprocess.py)
OUTPUT_LAYOUTS = ("yolov5_decoded", "anchor_free_decoded", "efficient_nms")
NMS_KINDS = ("none", "efficient_nms")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v):
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


class _Checker(object):
    """Collects the first error with the manifest path and the dotted key in the message."""

    def __init__(self, manifest_path):
        self.where = manifest_path

    def fail(self, key, what):
        raise BundleError("{}: key '{}' {}".format(self.where, key, what))

    def section(self, obj, key):
        value = obj.get(key)
        if not isinstance(value, dict):
            self.fail(key, "is missing or not an object")
        return value

    def get(self, obj, prefix, key, check, what, optional=False, default=None):
        name = prefix + key
        if key not in obj:
            if optional:
                return default
            self.fail(name, "is missing ({} expected)".format(what))
        value = obj[key]
        try:
            ok = check(value)
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            self.fail(name, "must be {}, got {!r}".format(what, value))
        return value


def _str_list(v, min_len=1):
    return isinstance(v, list) and len(v) >= min_len and all(isinstance(s, str) and s for s in v)


def _num_list(v, n):
    return isinstance(v, list) and len(v) == n and all(_is_num(x) for x in v)


def _shape(v):
    # Batch may be -1 (dynamic) or a positive int; channels 3; H, W positive.
    return (isinstance(v, list) and len(v) == 4 and all(_is_int(x) for x in v)
            and (v[0] == -1 or v[0] >= 1) and v[1] == 3 and v[2] >= 1 and v[3] >= 1)


def inside(root, rel, where, key):
    """Resolve `rel` against the bundle root; BundleError if it is absolute or escapes the bundle."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise BundleError("{}: key '{}' must be a non-empty relative path, got {!r}".format(where, key, rel))
    if os.path.isabs(rel) or rel.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel):
        raise BundleError("{}: key '{}' = {!r} is an absolute path; bundle paths must be relative to the bundle"
                          .format(where, key, rel))
    real_root = os.path.realpath(root)
    full = os.path.realpath(os.path.join(real_root, rel))
    if full != real_root and not full.startswith(real_root + os.sep):
        raise BundleError("{}: key '{}' = {!r} points outside the bundle ({}); refusing to read it"
                          .format(where, key, rel, real_root))
    return full


def validate_manifest(m, root, where=MANIFEST):
    """Check `m` (parsed JSON) against the contract; return a normalised copy with `_root`."""
    c = _Checker(where)
    if not isinstance(m, dict):
        raise BundleError("{}: the manifest must be a JSON object, got {}".format(where, type(m).__name__))
    version = m.get("schema_version")
    if not _is_int(version) or version < 1:
        c.fail("schema_version", "must be a positive integer, got {!r}".format(version))
    if version > SCHEMA_VERSION:
        raise BundleError("{}: bundle schema_version {} is newer than this runtime understands ({}); upgrade edgeprune "
                          "on the device (pip install -U 'edgeprune[device]') or re-export with a matching version"
                          .format(where, version, SCHEMA_VERSION))

    model = c.section(m, "model")
    c.get(model, "model.", "file", lambda v: isinstance(v, str) and bool(v), "a relative path string")
    c.get(model, "model.", "sha256", lambda v: isinstance(v, str) and bool(_SHA_RE.match(v)), "64 lowercase hex digits")
    c.get(model, "model.", "opset", lambda v: _is_int(v) and 7 <= v <= 30, "an integer ONNX opset")
    c.get(model, "model.", "input_name", lambda v: isinstance(v, str) and bool(v), "a non-empty string")
    shape = c.get(model, "model.", "input_shape", _shape, "[batch (or -1), 3, H, W] integers")
    dyn = c.get(model, "model.", "dynamic_batch", lambda v: isinstance(v, bool), "true or false")
    outs = c.get(model, "model.", "output_names", _str_list, "a non-empty list of strings")
    layout = c.get(model, "model.", "output_layout", lambda v: v in OUTPUT_LAYOUTS, "one of " + str(OUTPUT_LAYOUTS))
    c.get(model, "model.", "nms", lambda v: v in NMS_KINDS, "one of " + str(NMS_KINDS))
    if (shape[0] == -1) != dyn:
        c.fail("model.dynamic_batch", "disagrees with model.input_shape {} (batch -1 means dynamic)".format(shape))
    if layout == "efficient_nms" and len(outs) != 4:
        c.fail("model.output_names", "must name the 4 EfficientNMS_TRT outputs for output_layout efficient_nms")
    if layout != "efficient_nms" and len(outs) != 1:
        c.fail("model.output_names", "must name exactly one output for output_layout " + str(layout))

    c.get(m, "", "classes", _str_list, "a non-empty list of class names")

    pre = c.section(m, "preprocess")
    size = c.get(pre, "preprocess.", "size", lambda v: isinstance(v, list) and len(v) == 2
                 and all(_is_int(x) and x >= 1 for x in v), "[H, W] positive integers")
    if list(size) != list(shape[2:]):
        c.fail("preprocess.size", "{} disagrees with model.input_shape {}".format(size, shape))
    c.get(pre, "preprocess.", "pad_value", lambda v: _is_int(v) and 0 <= v <= 255, "an integer 0..255", True, 114)
    c.get(pre, "preprocess.", "color", lambda v: v in ("RGB", "BGR"), "RGB or BGR", True, "RGB")
    c.get(pre, "preprocess.", "scale", lambda v: _is_num(v) and v > 0, "a positive number", True, 1.0 / 255.0)
    c.get(pre, "preprocess.", "mean", lambda v: _num_list(v, 3), "3 numbers", True, [0, 0, 0])
    c.get(pre, "preprocess.", "std", lambda v: _num_list(v, 3) and all(x != 0 for x in v), "3 non-zero numbers",
          True, [1, 1, 1])
    c.get(pre, "preprocess.", "layout", lambda v: v == "NCHW", "NCHW (the only layout the runtime feeds)", True, "NCHW")

    post = c.section(m, "postprocess")
    unit = lambda v: _is_num(v) and 0.0 <= v <= 1.0  # noqa: E731
    c.get(post, "postprocess.", "conf_threshold", unit, "a number in [0, 1]")
    c.get(post, "postprocess.", "iou_threshold", unit, "a number in [0, 1]")
    c.get(post, "postprocess.", "max_detections", lambda v: _is_int(v) and v >= 1, "a positive integer")
    c.get(post, "postprocess.", "class_agnostic", lambda v: isinstance(v, bool), "true or false", True, False)

    c.get(m, "", "strides", lambda v: isinstance(v, list) and all(_is_int(x) and x > 0 for x in v),
          "a list of positive integers", True)
    c.get(m, "", "anchors", lambda v: isinstance(v, list) and all(isinstance(a, list) and all(_is_num(x) for x in a)
                                                                  for a in v), "a list of number lists", True)
    for key in ("producer", "metrics", "recombination"):
        if key in m and not isinstance(m[key], dict):
            c.fail(key, "must be an object")
    extra = c.get(m, "", "extra_files", lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
                  "an object of name -> relative path", True, {})

    root = os.path.abspath(root)
    inside(root, model["file"], where, "model.file")
    for name, rel in sorted(extra.items()):
        inside(root, rel, where, "extra_files." + name)

    out = dict(m)
    out["_root"] = root
    out["_manifest_path"] = os.path.join(root, MANIFEST)
    return out


def read_manifest(path):
    """Parse `path` (a bundle folder or its manifest.json) without checking the model file."""
    path = str(path)
    if os.path.isdir(path):
        root, mpath = path, os.path.join(path, MANIFEST)
    elif os.path.basename(path) == MANIFEST:
        root, mpath = os.path.dirname(os.path.abspath(path)), path
    elif not os.path.exists(path):
        raise BundleError("bundle {} does not exist; pass the folder written by `edgeprune export --out`".format(path))
    else:
        raise BundleError("{} is not a bundle folder (expected a folder with {})".format(path, MANIFEST))
    if not os.path.isfile(mpath):
        raise BundleError("{}: missing; a bundle folder holds {} next to the model (re-run edgeprune export)"
                          .format(mpath, MANIFEST))
    try:
        with open(mpath, "rb") as f:
            raw = f.read()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError("{}: not UTF-8 text (byte {}); the manifest is corrupt".format(mpath, exc.start))
    except OSError as exc:
        raise BundleError("{}: cannot read: {}".format(mpath, exc.strerror or exc))
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        line = getattr(exc, "lineno", None)
        raise BundleError("{}{}: invalid JSON ({}); the manifest is corrupt, re-export the bundle"
                          .format(mpath, ":{}".format(line) if line else "", getattr(exc, "msg", exc)))
    except RecursionError:
        raise BundleError("{}: JSON nested too deeply; the manifest is corrupt".format(mpath))
    return validate_manifest(obj, root, mpath)


def _reject_constant(name):
    raise ValueError("{} is not valid JSON".format(name))


def load_bundle(path, check_sha=True):
    """Validated manifest dict with `_root` (absolute bundle folder); the model's sha256 is checked."""
    m = read_manifest(path)
    model_path = model_file(m)
    if not os.path.isfile(model_path):
        raise BundleError("{}: model file {} (key 'model.file') is missing from the bundle"
                          .format(m["_manifest_path"], m["model"]["file"]))
    if check_sha:
        try:
            digest = sha256_file(model_path)
        except OSError as exc:
            raise BundleError("{}: cannot read the model: {}".format(model_path, exc.strerror or exc))
        if digest != m["model"]["sha256"]:
            raise BundleError("{}: sha256 {} does not match the manifest's model.sha256 {}; the model was modified or "
                              "truncated in transfer: copy the bundle again".format(model_path, digest[:16] + "...",
                                                                                    m["model"]["sha256"][:16] + "..."))
    return m


def model_file(manifest):
    return inside(manifest["_root"], manifest["model"]["file"], manifest.get("_manifest_path", MANIFEST), "model.file")


def extra_file(manifest, name, required=True, hint=""):
    """Absolute path of `extra_files[name]` (checked to stay inside the bundle); None if absent and not required."""
    rel = manifest.get("extra_files", {}).get(name)
    where = manifest.get("_manifest_path", MANIFEST)
    if rel is None:
        if required:
            raise BundleError("{}: no extra_files.{} in this bundle{}".format(where, name, "; " + hint if hint else ""))
        return None
    path = inside(manifest["_root"], rel, where, "extra_files." + name)
    if not os.path.exists(path):
        if required:
            raise BundleError("{}: extra_files.{} = {} does not exist{}".format(where, name, rel,
                                                                                "; " + hint if hint else ""))
        return None
    return path


def public_manifest(manifest):
    """The manifest without the runtime's internal `_` keys (for /v1/model and JSON output)."""
    return dict((k, v) for k, v in manifest.items() if not k.startswith("_"))
