"""Map an ultralytics detection model (YOLOv5u / YOLOv8 / YOLO11: its yaml dict + state_dict) onto the
edgeprune YOLOv8-style family (models/yolov8.py). Pure data mapping: nothing from ultralytics is imported
or executed; the caller (the importer) reads the checkpoint safely and hands over plain dicts/tensors.

The yaml's rows are resolved with the published scaling rules (spec.resolve_layers); module paths map
one to one (`model.<i>.` -> `layers.<i>.`, the Detect row -> `detect.`), since the blocks keep the
same child names; the DFL's fixed 0..reg_max-1 projection is checked and dropped (a buffer here).
"""
from __future__ import annotations

import math
import re
from typing import Any

import torch

from ..errors import ModelError
from .spec import REG_MAX, STRIDES, resolve_layers, validate_spec

_OTHER_TASKS = {"Segment": "segmentation", "Segment26": "segmentation", "Pose": "pose", "Pose26": "pose",
                "OBB": "oriented boxes", "OBB26": "oriented boxes", "Classify": "classification",
                "v10Detect": "YOLOv10 (NMS-free) detection", "RTDETRDecoder": "RT-DETR detection",
                "WorldDetect": "YOLO-World detection", "YOLOEDetect": "YOLOE detection"}


def _scales(yaml: dict[str, Any]) -> tuple[float, float, float, str | None]:
    scales = yaml.get("scales")
    if scales:
        # a yaml without `scale` (hand-written, or an old checkpoint): the size letter of its file name
        # (yolov8s.yaml -> s), as ultralytics itself guesses it, else its first scale
        guess = re.search(r"yolo(?:v)?\d+([nslmx])", str(yaml.get("yaml_file", "")))
        scale = yaml.get("scale") or (guess.group(1) if guess else next(iter(scales)))
        if scale not in scales:
            raise ModelError(f"model yaml: scale {scale!r} is not one of its scales {sorted(scales)}")
        depth, width, max_ch = scales[scale]
        return float(depth), float(width), float(max_ch), str(scale)
    return float(yaml.get("depth_multiple", 1.0)), float(yaml.get("width_multiple", 1.0)), math.inf, None


def convert(yaml: dict[str, Any], state_dict: dict[str, torch.Tensor],
            names: list[str]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """-> (spec of family "edgeprune-yolov8", state_dict for models.yolo.build_model(spec)), float32.
    Raises ModelError naming the layer for other tasks, unknown blocks and weights that do not fit."""
    from .yolo import build_model

    if not isinstance(yaml, dict) or not isinstance(yaml.get("backbone"), list) or not isinstance(yaml.get("head"), list):
        raise ModelError("model yaml: expected a dict with 'backbone' and 'head' lists")
    rows = list(yaml["backbone"]) + list(yaml["head"])
    last = rows[-1]
    kind = str(last[2]).split(".")[-1] if isinstance(last, (list, tuple)) and len(last) == 4 else None
    if kind in _OTHER_TASKS:
        raise ModelError(f"model yaml: layer {len(rows) - 1} is a {kind} head: a {_OTHER_TASKS[kind]} model, "
                         "not a detection model edgeprune can import")
    if kind != "Detect":
        raise ModelError(f"model yaml: the last layer ({len(rows) - 1}) must be Detect, got {last!r}")
    if yaml.get("end2end"):
        raise ModelError("model yaml: end2end (one-to-one, NMS-free) Detect heads are not supported")
    head_from = list(last[0]) if isinstance(last[0], (list, tuple)) else [last[0]]
    if len(head_from) != 3:
        raise ModelError(f"model yaml: Detect reads {len(head_from)} levels; edgeprune supports P3/P4/P5 (3)")
    depth, width, max_ch, scale = _scales(yaml)
    layers = resolve_layers(rows[:-1], depth, width, max_ch, scale, source="model yaml")
    types = {la["type"] for la in layers}
    arch = "yolo11" if "C2PSA" in types or "C3k2" in types else "yolov8" if "C2f" in types else \
        "yolov5u" if "C3" in types else "custom"
    reg_max = int(yaml.get("reg_max", REG_MAX))
    names = [str(n) for n in names]
    nc = yaml.get("nc")
    if isinstance(nc, int) and nc != len(names):
        raise ModelError(f"model yaml: nc is {nc} but {len(names)} class names were given")
    spec = validate_spec({
        "family": "edgeprune-yolov8", "version": 1, "arch": arch, "size": scale or "custom",
        "depth_multiple": depth, "width_multiple": width,
        "num_classes": len(names), "names": names, "strides": list(STRIDES), "reg_max": reg_max,
        "layers": layers,
        "head": {"from": [int(j) for j in head_from], "dw_cls": "C3k2" in types},
        "widths": {},
    }, "imported model")
    model = build_model(spec)
    target = model.state_dict()
    det = len(rows) - 1
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] != "model" or len(parts) < 3 or not parts[1].isdigit():
            raise ModelError(f"state_dict key {key!r}: expected 'model.<layer>.<...>'")
        i, rest = int(parts[1]), ".".join(parts[2:])
        if i == det and rest == "dfl.conv.weight":
            if value.numel() != reg_max or not torch.equal(value.float().flatten(), torch.arange(reg_max).float()):
                raise ModelError(f"state_dict key {key!r}: the DFL projection must be 0..{reg_max - 1}")
            continue
        name = f"detect.{rest}" if i == det else f"layers.{i}.{rest}"
        if name not in target:
            raise ModelError(f"state_dict key {key!r} (layer {i}, {rows[i][2] if i < len(rows) else '?'}) has no "
                             f"counterpart {name!r} in the edgeprune model")
        if tuple(value.shape) != tuple(target[name].shape):
            raise ModelError(f"state_dict key {key!r}: shape {tuple(value.shape)} does not fit the yaml's "
                             f"{tuple(target[name].shape)} (weights of another model size?)")
        out[name] = value.detach().to(target[name].dtype).clone()
    missing = sorted(set(target) - set(out) - {"detect.stride"})
    if missing:
        raise ModelError(f"state_dict lacks {len(missing)} tensors the yaml needs, e.g. {missing[0]!r}")
    out["detect.stride"] = target["detect.stride"]
    return spec, out
