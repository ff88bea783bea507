"""Helpers for the device tests (unique module name: tests/ folders share one sys.path).

`make_bundle` exports a tiny real detector to a bundle per docs/CONTRACTS.md (needs torch; the Python 3.6
runs get the bundle path from EDGEPRUNE_TEST_BUNDLE instead); `scene` makes a deterministic test image.
"""
import hashlib
import json
import os
import warnings

CLASSES = ["plane", "ship", "vehicle"]


def scene(h=120, w=160, seed=0):
    """A deterministic RGB test image: noise plus a few bright rectangles (numpy only)."""
    import numpy as np
    rng = np.random.RandomState(seed)
    img = rng.randint(0, 60, size=(h, w, 3)).astype(np.uint8)
    for _ in range(4):
        y, x = rng.randint(0, h - 20), rng.randint(0, w - 20)
        img[y:y + rng.randint(8, 20), x:x + rng.randint(8, 20)] = rng.randint(150, 255, size=3)
    return img


def make_bundle(root, imgsz=96, seed=0, size="n", widths=None, confident=True):
    """Export `build_model(new_spec(3 classes))` (eval mode, decoded output) + manifest.json into `root`."""
    import torch

    from edgeprune.models.spec import new_spec
    from edgeprune.models.yolo import build_model

    torch.manual_seed(seed)
    spec = new_spec(len(CLASSES), CLASSES, size=size)
    if widths:
        spec["widths"].update(widths)
    model = build_model(spec).eval()
    if confident:
        # Random weights give near-zero objectness; raise the anchor-0 objectness and class-0 priors of
        # the P3 head so that real detections survive the 0.25 threshold (boxes come from the real graph).
        with torch.no_grad():
            b = model.detect.m[0].bias.view(model.detect.na, -1)
            b[0, 4] += 6.0
            b[0, 5] += 6.0
    os.makedirs(root, exist_ok=True)
    onnx_path = os.path.join(root, "model.onnx")
    x = torch.rand(1, 3, imgsz, imgsz)
    with warnings.catch_warnings():  # the legacy exporter warns it is legacy; opset 13 is what TRT 8.0 parses
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (x,), onnx_path, input_names=["images"], output_names=["output"], opset_version=13,
                          dynamo=False)
    with open(onnx_path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    manifest = {
        "schema_version": 1,
        "producer": {"name": "edgeprune", "version": "0.1.0"},
        "model": {"file": "model.onnx", "sha256": sha, "opset": 13, "input_name": "images",
                  "input_shape": [1, 3, imgsz, imgsz], "dynamic_batch": False, "output_names": ["output"],
                  "output_layout": "yolov5_decoded", "nms": "none"},
        "classes": list(CLASSES),
        "preprocess": {"size": [imgsz, imgsz], "pad_value": 114, "color": "RGB", "scale": 1.0 / 255.0,
                       "mean": [0, 0, 0], "std": [1, 1, 1], "layout": "NCHW"},
        "postprocess": {"conf_threshold": 0.25, "iou_threshold": 0.45, "max_detections": 300,
                        "class_agnostic": False},
        "strides": [8, 16, 32], "anchors": spec["anchors"],
        "metrics": {"map50": 0.0, "map": 0.0, "params": int(sum(p.numel() for p in model.parameters())), "flops": 0},
        "recombination": {"rule": "union", "junctions": 0, "channels_removed": 0},
        "extra_files": {},
    }
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    return root, model


if __name__ == "__main__":  # used by scripts/py36_check.sh: python tests/device/device_helpers.py OUT_DIR
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    print(make_bundle(sys.argv[1])[0])
