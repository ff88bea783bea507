"""Write a calibration set into a bundle: `calib/batch_NNNNN.npy` (float32 NCHW, preprocessed exactly like
the bundle) + `calib/manifest.json`, and record it as the bundle manifest's `extra_files.calib`.
Python 3.6, numpy only. Format: docs/CONTRACTS.md ("Calibration set").
"""
import hashlib
import io
import json
import os

import numpy as np

from edgeprune.errors import UsageError
from edgeprune.fsio import atomic_write_bytes, atomic_write_json

from jetson.bundle import MANIFEST, load_bundle
from jetson.calibset import CALIB_VERSION, preprocess_signature, sig_sha
from jetson.imageio import decode_image
from jetson.preprocess import preprocess_from_manifest

from .select import scan_dataset, select_images

CALIB_DIR = "calib"


def _progress(it, total, desc):
    try:
        from tqdm import tqdm
        return tqdm(it, total=total, desc=desc, unit="batch", leave=False)
    except ImportError:
        return it


def build_calib(data, bundle, n=500, strategy="stratified", batch_size=8, seed=0, split="train", log=None):
    """Select `n` images of `data`, preprocess them like `bundle` and write the calib set. Returns its manifest."""
    if batch_size < 1:
        raise UsageError("--batch-size must be >= 1, got {}".format(batch_size))
    m = load_bundle(bundle)
    cands = scan_dataset(data, split)
    chosen, report = select_images(cands, n, strategy, seed)
    if log and report["strata_missing"]:
        log("calib: {} of {} (class/size) strata not represented with n={}: {}".format(
            len(report["strata_missing"]), report["strata_total"], n, ", ".join(report["strata_missing"][:10])))
    out_dir = os.path.join(m["_root"], CALIB_DIR)
    sig = preprocess_signature(m)
    h, w = sig["size"]
    # TensorRT calibrators feed fixed-size batches: pad the last one by cycling the selection from the start.
    padded = (-len(chosen)) % batch_size
    feed = chosen + [chosen[i % len(chosen)] for i in range(padded)]
    images, batches = [], []
    img_sha = {}
    nb = len(feed) // batch_size
    for b in _progress(range(nb), nb, "calib batches"):
        xs = []
        for c in feed[b * batch_size:(b + 1) * batch_size]:
            with open(c["path"], "rb") as f:
                raw = f.read()
            if c["rel"] not in img_sha:
                img_sha[c["rel"]] = hashlib.sha256(raw).hexdigest()
            x, _ = preprocess_from_manifest(decode_image(raw, name=c["path"]), m)
            xs.append(x)
        arr = np.concatenate(xs).astype(np.float32)
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        name = "batch_{:05d}.npy".format(b)
        atomic_write_bytes(os.path.join(out_dir, name), buf.getvalue())
        batches.append({"file": name, "sha256": hashlib.sha256(buf.getvalue()).hexdigest()})
    for c in chosen:
        images.append({"file": c["rel"], "sha256": img_sha[c["rel"]], "classes": c["classes"]})
    calib = {"version": CALIB_VERSION, "model_sha256": m["model"]["sha256"], "input_name": m["model"]["input_name"],
             "batch_size": batch_size, "shape": [batch_size, 3, h, w], "dtype": "float32", "layout": "NCHW",
             "num_images": len(chosen), "padded": padded, "num_batches": nb, "preprocess": sig,
             "preprocess_sha256": sig_sha(sig), "data": os.path.abspath(str(data)), "selection": report,
             "images": images, "batches": batches}
    atomic_write_json(os.path.join(out_dir, "manifest.json"), calib)
    _register_in_bundle(m, CALIB_DIR + "/manifest.json")
    return calib


def _register_in_bundle(m, rel):
    """Add extra_files.calib to the bundle's manifest.json (the model and its sha256 are untouched)."""
    path = os.path.join(m["_root"], MANIFEST)
    with open(path) as f:
        raw = json.load(f)
    raw.setdefault("extra_files", {})["calib"] = rel
    atomic_write_json(path, raw)
