"""Read a calibration set (written by `edgeprune calib build`, calib/build.py) and check it belongs to the bundle
that uses it: the device runtime's INT8 build reads it through here (jetson/engine.py, jetson/calibrators.py).
Python 3.6, numpy only. Format: docs/CONTRACTS.md ("Calibration set").
"""
import hashlib
import json
import os

from edgeprune.errors import BundleError, DeviceError
from edgeprune.fsio import sha256_file

from .bundle import inside

CALIB_VERSION = 1


def preprocess_signature(manifest):
    """The bundle's preprocessing with defaults filled in: two sets match iff these dicts are equal."""
    p = manifest["preprocess"]
    return {"size": [int(s) for s in p["size"]], "pad_value": int(p.get("pad_value", 114)),
            "color": p.get("color", "RGB"), "scale": float(p.get("scale", 1.0 / 255.0)),
            "mean": [float(v) for v in p.get("mean", (0, 0, 0))], "std": [float(v) for v in p.get("std", (1, 1, 1))],
            "layout": p.get("layout", "NCHW"), "letterbox": "jetson.preprocess.letterbox/bilinear"}


def sig_sha(sig):
    """sha256 of the canonical JSON of a preprocess signature (the calib manifest's `preprocess_sha256`)."""
    return hashlib.sha256(json.dumps(sig, sort_keys=True).encode("utf-8")).hexdigest()


def load_calib_set(calib_manifest_path, bundle_manifest):
    """Read and check a calib set against the bundle that will use it; returns its manifest plus `_dir`,
    `sha256` (of the calib manifest) and `_batches` (absolute paths)."""
    where = str(calib_manifest_path)
    try:
        with open(where) as f:
            calib = json.load(f)
    except (OSError, ValueError) as exc:
        raise BundleError("{}: cannot read the calibration manifest ({}); rebuild it with edgeprune calib build"
                          .format(where, exc))
    if not isinstance(calib, dict) or calib.get("version") != CALIB_VERSION:
        raise BundleError("{}: not a version-{} calibration manifest; rebuild it with edgeprune calib build"
                          .format(where, CALIB_VERSION))
    want = preprocess_signature(bundle_manifest)
    got = calib.get("preprocess")
    if got != want:
        diff = sorted(k for k in set(want) | set(got or {}) if (got or {}).get(k) != want.get(k))
        raise DeviceError("{}: calibration set was preprocessed differently from the bundle ({}: calib {} vs bundle {}); "
                          "INT8 scales from it would be wrong: rebuild it with `edgeprune calib build --bundle {}`"
                          .format(where, ", ".join(diff), [(got or {}).get(k) for k in diff], [want.get(k) for k in diff],
                                  bundle_manifest["_root"]))
    folder = os.path.dirname(os.path.abspath(where))
    paths = []
    for i, b in enumerate(calib.get("batches", [])):
        paths.append(inside(folder, b.get("file", ""), where, "batches[{}].file".format(i)))
        sha = b.get("sha256")
        if not (isinstance(sha, str) and len(sha) == 64):
            raise BundleError("{}: batches[{}].sha256 is missing or not a sha256; rebuild with edgeprune calib build"
                              .format(where, i))
        if not os.path.isfile(paths[-1]):
            raise BundleError("{}: batch file {} is missing; rebuild with edgeprune calib build".format(where,
                                                                                                       b.get("file")))
    if not paths:
        raise BundleError("{}: no batches".format(where))
    out = dict(calib)
    out["_dir"] = folder
    out["_batches"] = paths
    out["sha256"] = sha256_file(where)
    return out
