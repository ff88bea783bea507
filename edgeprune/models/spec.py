"""The architecture spec: a plain JSON-serialisable description of a detector.

Two families: "edgeprune-yolov5" (anchor-based, models/yolo.py) and "edgeprune-yolov8" (anchor-free DFL
head, C2f/C3k2 blocks: models/yolov8.py, whose spec lists its resolved layers). A dense model and its
pruned children are the same family: the spec fixes the topology (size preset, number of classes,
anchors or layers) and `widths` overrides the output channels of any Conv by its module path
(e.g. "layers.2.m.0.cv1"). Pruned models are saved as this spec (JSON) + a state_dict, never pickled.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..fsio import atomic_write_json

SPEC_VERSION = 1

# (depth_multiple, width_multiple), as in the YOLOv5 family.
SIZES = {"n": (0.33, 0.25), "s": (0.33, 0.50), "m": (0.67, 0.75)}

# YOLOv5's COCO anchors (pixels at strides 8/16/32); replaced by k-means anchors per dataset.
DEFAULT_ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
STRIDES = [8, 16, 32]


def make_divisible(x: float, divisor: int = 8) -> int:
    return int(math.ceil(x / divisor) * divisor)


# model.family -> spec family; "yolov8" and "yolo11" are two architectures of the YOLOv8-style family
FAMILIES = {"yolov5": "edgeprune-yolov5", "yolov8": "edgeprune-yolov8", "yolo11": "edgeprune-yolov8"}


def new_spec(num_classes: int, names: list[str] | None = None, size: str = "n",
             anchors: list[list[float]] | None = None, family: str = "yolov5") -> dict[str, Any]:
    """A dense spec; `anchors` only apply to the anchor-based yolov5 family."""
    if family not in FAMILIES:
        raise ModelError(f"model.family: unknown family {family!r}; choose one of {sorted(FAMILIES)}")
    if family != "yolov5":
        from .yolov8 import new_spec_v8
        return new_spec_v8(num_classes, names, size, family)
    if size not in SIZES:
        raise ModelError(f"model.size: unknown size {size!r}; choose one of {sorted(SIZES)}")
    depth, width = SIZES[size]
    spec = {
        "family": "edgeprune-yolov5",
        "version": SPEC_VERSION,
        "size": size,
        "depth_multiple": depth,
        "width_multiple": width,
        "num_classes": int(num_classes),
        "names": list(names) if names else [f"class{i}" for i in range(num_classes)],
        "anchors": [list(map(float, a)) for a in (anchors or DEFAULT_ANCHORS)],
        "strides": list(STRIDES),
        "widths": {},
    }
    return validate_spec(spec)


def validate_spec(spec: Any, source: str = "spec") -> dict[str, Any]:
    """Check types and ranges; the error names the offending key."""
    if not isinstance(spec, dict):
        raise ModelError(f"{source}: an architecture spec must be a JSON object, got {type(spec).__name__}")
    family = spec.get("family")
    if family not in set(FAMILIES.values()):
        raise ModelError(f"{source}: family must be one of {sorted(set(FAMILIES.values()))}, got {family!r}")
    if spec.get("version") != SPEC_VERSION:
        raise ModelError(f"{source}: spec version {spec.get('version')!r} is not supported (this edgeprune reads {SPEC_VERSION})")
    keys = (("num_classes", int), ("names", list), ("strides", list), ("widths", dict))
    if family == "edgeprune-yolov5":
        keys += (("depth_multiple", (int, float)), ("width_multiple", (int, float)), ("anchors", list))
    for key, typ in keys:
        if not isinstance(spec.get(key), typ) or isinstance(spec.get(key), bool):
            raise ModelError(f"{source}: key {key!r} is missing or has the wrong type")
    if spec["num_classes"] < 1 or len(spec["names"]) != spec["num_classes"]:
        raise ModelError(f"{source}: names has {len(spec['names'])} entries but num_classes is {spec['num_classes']}")
    if family == "edgeprune-yolov8":
        from .yolov8 import validate_v8
        validate_v8(spec, source)
    elif len(spec["anchors"]) != 3 or any(len(a) != 6 for a in spec["anchors"]) or spec["strides"] != STRIDES:
        raise ModelError(f"{source}: anchors must be 3 levels x 3 (w,h) pairs and strides {STRIDES}")
    for name, w in spec["widths"].items():
        if not isinstance(w, int) or isinstance(w, bool) or w < 0:
            raise ModelError(f"{source}: widths[{name!r}] must be a positive integer (0: a residual block's "
                             f"removed branch), got {w!r}")
    return spec


def output_layout(spec: dict[str, Any]) -> str:
    """The manifest's `model.output_layout` of the family's eval-mode output (jetson/postprocess.py)."""
    return "anchor_free_decoded" if spec["family"] == "edgeprune-yolov8" else "yolov5_decoded"


def spec_sha(spec: dict[str, Any]) -> str:
    """sha256 of the dense architecture (the spec without `widths`): ties ratios.json to its model family."""
    core = {k: v for k, v in spec.items() if k != "widths"}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()


def save_spec(spec: dict[str, Any], path: str | Path) -> None:
    atomic_write_json(path, validate_spec(spec))


def load_spec(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path}: architecture spec not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not a valid JSON architecture spec ({exc})") from None
    return validate_spec(spec, str(path))


def with_widths(spec: dict[str, Any], widths: dict[str, int]) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    out["widths"] = {k: int(v) for k, v in widths.items()}
    return validate_spec(out)
