"""The architecture spec: a plain JSON-serialisable description of a detector.

Two families: "edgeprune-yolov5" (anchor-based, models/yolo.py) and "edgeprune-yolov8" (anchor-free DFL
head, C2f/C3k2 blocks: models/yolov8.py, whose spec lists its resolved layers). Both families' specs (presets,
published architectures, validation) live here; the model modules build from them. A dense model and its
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
from ..fsio import atomic_write_json, read_json

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
        validate_v8(spec, source)
    elif len(spec["anchors"]) != 3 or any(len(a) != 6 for a in spec["anchors"]) or spec["strides"] != STRIDES:
        raise ModelError(f"{source}: anchors must be 3 levels x 3 (w,h) pairs and strides {STRIDES}")
    for name, w in spec["widths"].items():
        if not isinstance(w, int) or isinstance(w, bool) or w < 0:
            raise ModelError(f"{source}: widths[{name!r}] must be a positive integer (0: a residual block's "
                             f"removed branch), got {w!r}")
    return spec


# -- the YOLOv8/YOLO11-style family (models/yolov8.py builds it) ----------------------------------------
# Published architectures, as (from, repeats, type, args) at width 1.0: args[0] is the output width.
# C2f args: [c, shortcut]; C3k2: [c, c3k, e]; C3: [c, shortcut]; SPPF: [c, k]; Conv: [c, k, s(, p)].
_YOLOV8 = [
    (-1, 1, "Conv", [64, 3, 2]), (-1, 1, "Conv", [128, 3, 2]), (-1, 3, "C2f", [128, True]),
    (-1, 1, "Conv", [256, 3, 2]), (-1, 6, "C2f", [256, True]), (-1, 1, "Conv", [512, 3, 2]),
    (-1, 6, "C2f", [512, True]), (-1, 1, "Conv", [1024, 3, 2]), (-1, 3, "C2f", [1024, True]),
    (-1, 1, "SPPF", [1024, 5]),                                                       # 9
    (-1, 1, "Upsample", [None, 2, "nearest"]), ([-1, 6], 1, "Concat", [1]), (-1, 3, "C2f", [512]),
    (-1, 1, "Upsample", [None, 2, "nearest"]), ([-1, 4], 1, "Concat", [1]), (-1, 3, "C2f", [256]),  # 15 P3
    (-1, 1, "Conv", [256, 3, 2]), ([-1, 12], 1, "Concat", [1]), (-1, 3, "C2f", [512]),  # 18 P4
    (-1, 1, "Conv", [512, 3, 2]), ([-1, 9], 1, "Concat", [1]), (-1, 3, "C2f", [1024]),  # 21 P5
]
_YOLO11 = [
    (-1, 1, "Conv", [64, 3, 2]), (-1, 1, "Conv", [128, 3, 2]), (-1, 2, "C3k2", [256, False, 0.25]),
    (-1, 1, "Conv", [256, 3, 2]), (-1, 2, "C3k2", [512, False, 0.25]), (-1, 1, "Conv", [512, 3, 2]),
    (-1, 2, "C3k2", [512, True]), (-1, 1, "Conv", [1024, 3, 2]), (-1, 2, "C3k2", [1024, True]),
    (-1, 1, "SPPF", [1024, 5]), (-1, 2, "C2PSA", [1024]),                            # 10
    (-1, 1, "Upsample", [None, 2, "nearest"]), ([-1, 6], 1, "Concat", [1]), (-1, 2, "C3k2", [512, False]),
    (-1, 1, "Upsample", [None, 2, "nearest"]), ([-1, 4], 1, "Concat", [1]), (-1, 2, "C3k2", [256, False]),  # 16
    (-1, 1, "Conv", [256, 3, 2]), ([-1, 13], 1, "Concat", [1]), (-1, 2, "C3k2", [512, False]),  # 19
    (-1, 1, "Conv", [512, 3, 2]), ([-1, 10], 1, "Concat", [1]), (-1, 2, "C3k2", [1024, True]),  # 22
]
# arch -> (layers, head inputs, {size: (depth, width, max_channels)})
ARCHS = {
    "yolov8": (_YOLOV8, [15, 18, 21], {"n": (0.33, 0.25, 1024), "s": (0.33, 0.50, 1024), "m": (0.67, 0.75, 768)}),
    "yolo11": (_YOLO11, [16, 19, 22], {"n": (0.50, 0.25, 1024), "s": (0.50, 0.50, 1024), "m": (0.50, 1.00, 512)}),
}
LAYER_TYPES = ("Conv", "C2f", "C3k2", "C3", "SPPF", "C2PSA", "Upsample", "Concat")
REG_MAX = 16


def resolve_layers(rows: list[Any], depth: float, width: float, max_channels: float,
                   scale: str | None = None, source: str = "architecture") -> list[dict[str, Any]]:
    """(from, repeats, type, args) rows at width 1.0 -> the spec's resolved layer dicts. The scaling rules
    are the published ones: width = ceil8(min(c, max_channels) * width); repeats = max(round(n*depth), 1)
    when n > 1; C3k2 uses C3k inner blocks from size m up; a bare SPPF row has an activated cv1."""
    out: list[dict[str, Any]] = []
    ch: list[int] = []
    for i, row in enumerate(rows):
        if not isinstance(row, (list, tuple)) or len(row) != 4:
            raise ModelError(f"{source}: layer {i} must be [from, repeats, module, args], got {row!r}")
        f, n, kind, args = row
        kind = str(kind).removeprefix("nn.")
        args = list(args or [])
        if kind not in LAYER_TYPES:
            raise ModelError(f"{source}: layer {i} is a {kind!r} block, which edgeprune does not know "
                             f"(known: {', '.join(LAYER_TYPES)})")
        n = max(round(n * depth), 1) if n > 1 else int(n)
        layer: dict[str, Any] = {"type": kind, "from": f}
        if kind == "Concat":
            c2 = sum(ch[j] for j in f)
        elif kind == "Upsample":
            if args[1:2] != [2] or (len(args) > 2 and args[2] != "nearest"):
                raise ModelError(f"{source}: layer {i}: only nearest 2x upsampling is supported, got {args}")
            c2 = ch[f]
        else:
            c2 = make_divisible(min(args[0], max_channels) * width, 8)
            layer["c"] = c2
            if kind == "Conv":
                layer.update(k=int(args[1]) if len(args) > 1 else 1, s=int(args[2]) if len(args) > 2 else 1)
                if len(args) > 3:
                    layer["p"] = int(args[3])
            elif kind == "SPPF":
                if len(args) > 2:
                    raise ModelError(f"{source}: layer {i}: SPPF with pooling count/shortcut arguments "
                                     f"(YOLO26 style) is not supported: {args}")
                layer["k"] = int(args[1]) if len(args) > 1 else 5
            elif kind == "C2f":
                layer.update(n=n, shortcut=bool(args[1]) if len(args) > 1 else False,
                             e=float(args[2]) if len(args) > 2 else 0.5)
            elif kind == "C3":
                layer.update(n=n, shortcut=bool(args[1]) if len(args) > 1 else True,
                             e=float(args[2]) if len(args) > 2 else 0.5)
            elif kind == "C3k2":
                c3k = bool(args[1]) if len(args) > 1 else False
                if len(args) > 3:
                    raise ModelError(f"{source}: layer {i}: C3k2 with attention/group arguments is not supported: {args}")
                layer.update(n=n, c3k=c3k or scale in ("m", "l", "x"), e=float(args[2]) if len(args) > 2 else 0.5)
            elif kind == "C2PSA":
                if c2 != ch[f]:
                    raise ModelError(f"{source}: layer {i}: C2PSA needs equal input and output widths")
                layer["n"] = n
        out.append(layer)
        ch.append(c2)
    return out


def new_spec_v8(num_classes: int, names: list[str] | None = None, size: str = "n",
                arch: str = "yolov8") -> dict[str, Any]:
    if arch not in ARCHS:
        raise ModelError(f"model.family: unknown architecture {arch!r}; choose one of {sorted(ARCHS)}")
    rows, head_from, sizes = ARCHS[arch]
    if size not in sizes:
        raise ModelError(f"model.size: unknown size {size!r}; choose one of {sorted(sizes)}")
    depth, width, max_ch = sizes[size]
    layers = resolve_layers(rows, depth, width, max_ch, size)
    spec = {
        "family": "edgeprune-yolov8", "version": 1, "arch": arch, "size": size,
        "depth_multiple": depth, "width_multiple": width,
        "num_classes": int(num_classes),
        "names": list(names) if names else [f"class{i}" for i in range(num_classes)],
        "strides": list(STRIDES), "reg_max": REG_MAX,
        "layers": layers,
        # YOLO11 (any C3k2) uses depthwise convs in the class branch; YOLOv8/v5u plain 3x3 convs
        "head": {"from": head_from, "dw_cls": any(la["type"] == "C3k2" for la in layers)},
        "widths": {},
    }
    return validate_spec(spec)


def validate_v8(spec: dict[str, Any], source: str) -> None:
    """Family-specific checks (the common keys are checked by spec.validate_spec)."""
    reg_max = spec.get("reg_max")
    if not isinstance(reg_max, int) or isinstance(reg_max, bool) or reg_max < 2:
        raise ModelError(f"{source}: reg_max must be an integer > 1, got {spec.get('reg_max')!r}")
    layers = spec.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ModelError(f"{source}: key 'layers' must be a non-empty list")
    for i, la in enumerate(layers):
        if not isinstance(la, dict) or la.get("type") not in LAYER_TYPES:
            raise ModelError(f"{source}: layers[{i}] must be an object with type one of {list(LAYER_TYPES)}")
        refs = la.get("from")
        refs = refs if isinstance(refs, list) else [refs]
        if not refs or not all(isinstance(r, int) and not isinstance(r, bool) and (-1 <= r < 0 or 0 <= r < i)
                               and (i > 0 or r == -1) for r in refs):
            raise ModelError(f"{source}: layers[{i}].from must name earlier layers, got {la.get('from')!r}")
        for key in ("c", "n", "k", "s", "p"):
            if key in la and (not isinstance(la[key], int) or isinstance(la[key], bool) or la[key] < 0):
                raise ModelError(f"{source}: layers[{i}].{key} must be a non-negative integer")
    head = spec.get("head")
    if (not isinstance(head, dict) or not isinstance(head.get("from"), list) or len(head["from"]) != 3
            or not all(isinstance(j, int) and 0 <= j < len(layers) for j in head["from"])):
        raise ModelError(f"{source}: head.from must list 3 layer indices (P3, P4, P5)")
    if spec["strides"] != STRIDES:
        raise ModelError(f"{source}: strides must be {STRIDES}")


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
    spec = read_json(path, ModelError, "architecture spec not found", "not a valid JSON architecture spec")
    return validate_spec(spec, str(path))


def with_widths(spec: dict[str, Any], widths: dict[str, int]) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    out["widths"] = {k: int(v) for k, v in widths.items()}
    return validate_spec(out)
