"""`edgeprune import`: a trained detector from another tool -> an edgeprune checkpoint (JSON spec + state_dict).

Formats (detected from the file, never by its name):
- the yolov5 repository's checkpoints (and its pip package's), v6.0+ layout with anchors: `ckpt['ema'] or
  ckpt['model']` is a `DetectionModel`. It maps onto edgeprune's YOLOv5-style family by renaming
  (`model.N.` -> `layers.N.`, `model.24.` -> `detect.`) and rescaling the anchors from grid units to pixels;
  depth/width multiples are copied from its yaml and any other width becomes a per-layer width.
- ultralytics checkpoints of detection models (YOLOv5u, YOLOv8, YOLO11): handed to
  `edgeprune.models.ultralytics_map.convert(yaml, state_dict, names)`.
- a plain state_dict plus the model's YAML (`--yaml`), for either of the above.
The file is read by `safe_pickle.read_pickled`: nothing in it is executed, and neither producer package needs
to be installed (both are AGPL: edgeprune never imports them).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ModelError
from ..fsio import read_yaml, sha256_file
from . import safe_pickle as sp
from .spec import SIZES, STRIDES, new_spec

# The yolov5 v6.0+ layout (models/yolov5*.yaml): (from, repeats, block, args after the channel count).
# Channel counts come from the weights (per-layer widths); everything else must match.
V5_LAYOUT = [
    (-1, 1, "Conv", [6, 2, 2]), (-1, 1, "Conv", [3, 2]), (-1, 3, "C3", []), (-1, 1, "Conv", [3, 2]),
    (-1, 6, "C3", []), (-1, 1, "Conv", [3, 2]), (-1, 9, "C3", []), (-1, 1, "Conv", [3, 2]), (-1, 3, "C3", []),
    (-1, 1, "SPPF", [5]),
    (-1, 1, "Conv", [1, 1]), (-1, 1, "Upsample", [2, "nearest"]), ([-1, 6], 1, "Concat", [1]), (-1, 3, "C3", [False]),
    (-1, 1, "Conv", [1, 1]), (-1, 1, "Upsample", [2, "nearest"]), ([-1, 4], 1, "Concat", [1]), (-1, 3, "C3", [False]),
    (-1, 1, "Conv", [3, 2]), ([-1, 14], 1, "Concat", [1]), (-1, 3, "C3", [False]),
    (-1, 1, "Conv", [3, 2]), ([-1, 10], 1, "Concat", [1]), (-1, 3, "C3", [False]),
    ([17, 20, 23], 1, "Detect", []),
]
_DEFAULT_ARGS = {"Conv": [1, 1, None], "C3": [True], "SPPF": [5]}   # yolov5's defaults for omitted args
_OTHER_TASKS = {"SegmentationModel": "a segmentation model", "PoseModel": "a pose model",
                "ClassificationModel": "a classification model", "OBBModel": "an oriented-box (OBB) model",
                "WorldModel": "a YOLO-World model", "RTDETRDetectionModel": "an RT-DETR model",
                "Segment": "a segmentation head", "Pose": "a pose head", "OBB": "an oriented-box (OBB) head",
                "Classify": "a classification head"}


def _fail(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{path}: {what}")


def _names(names: Any, nc: int, path: Path) -> list[str]:
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if names is None:
        names = [f"class{i}" for i in range(nc)]
    if not isinstance(names, (list, tuple)) or len(names) != nc:
        raise _fail(path, f"class names {names!r:.120} do not match the head's {nc} classes")
    return [str(n) for n in names]


def _float32(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.float() if v.is_floating_point() else v).clone() for k, v in state.items()}


# --- reading the file ------------------------------------------------------------------------------

def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                      for k, v in obj.items())


def read_source(path: str | Path, yaml_path: str | Path | None = None) -> dict[str, Any]:
    """What the file holds: {"format": "yolov5" | "ultralytics" | "edgeprune", "yaml", "state", "names",
    "stride", "model" (the stand-in, or None)}. Raises CheckpointError naming the file and what it found."""
    path = Path(path)
    obj = sp.read_pickled(path)
    if isinstance(obj, dict) and "spec" in obj and isinstance(obj.get("model"), dict):
        return {"format": "edgeprune", "ckpt": obj}
    model = obj
    if isinstance(obj, dict):
        model = obj.get("ema") or obj.get("model")
        if model is None and _is_state_dict(obj.get("state_dict")):
            model = obj["state_dict"]
        if model is None and _is_state_dict(obj):
            model = obj
    if isinstance(model, sp.StandIn):
        return _from_module(path, model, yaml_path)
    if _is_state_dict(model):
        return _from_state_dict(path, model, yaml_path)
    found = (f"a dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict) else
             f"a {sp.class_name(obj)}")
    raise _fail(path, f"holds {found}, not a YOLO detector (expected a yolov5/ultralytics checkpoint, "
                      "an edgeprune checkpoint or a state_dict)")


def _from_module(path: Path, model: sp.StandIn, yaml_path: Any) -> dict[str, Any]:
    cls = sp.class_name(model)
    name = model._ep_name
    if name in _OTHER_TASKS:
        raise _fail(path, f"holds {_OTHER_TASKS[name]} ({cls}); edgeprune imports detection models only")
    if model._ep_module.startswith("ultralytics."):
        fmt = "ultralytics"
    elif model._ep_module.split(".")[-2:] == ["models", "yolo"] and name in ("DetectionModel", "Model"):
        fmt = "yolov5"
    else:
        raise _fail(path, f"holds a {cls}; edgeprune imports yolov5-repository and ultralytics detection models")
    if fmt == "ultralytics" and name != "DetectionModel":
        raise _fail(path, f"holds a {cls}; edgeprune imports ultralytics DetectionModel checkpoints only")
    blocks = list(sp.children(sp.children(model).get("model")).values())
    head = blocks[-1] if blocks else None
    if getattr(head, "_ep_name", None) in _OTHER_TASKS:
        raise _fail(path, f"holds {_OTHER_TASKS[head._ep_name]} ({sp.class_name(head)}, block {len(blocks) - 1}); "
                          "edgeprune imports detection models only")
    yaml = model.__dict__.get("yaml")
    if yaml_path is not None:
        yaml = _read_yaml(yaml_path)
    if not isinstance(yaml, dict):
        raise _fail(path, f"the {cls} carries no yaml architecture dict; pass the model's YAML with --yaml")
    stride = model.__dict__.get("stride")
    if stride is None:
        stride = (model.__dict__.get("_buffers") or {}).get("stride")
    return {"format": fmt, "yaml": yaml, "state": _float32(sp.state_dict(model)), "model": model,
            "names": model.__dict__.get("names"),
            "stride": [float(s) for s in stride] if isinstance(stride, torch.Tensor) else None}


def _read_yaml(yaml_path: str | Path) -> dict[str, Any]:
    p = Path(yaml_path)
    d = read_yaml(p, CheckpointError, "model YAML not found")
    if not isinstance(d, dict) or not isinstance(d.get("backbone"), list) or not isinstance(d.get("head"), list):
        raise CheckpointError(f"{p}: not a YOLO model YAML (needs 'backbone' and 'head' lists)")
    return d


def _from_state_dict(path: Path, state: dict[str, torch.Tensor], yaml_path: Any) -> dict[str, Any]:
    if yaml_path is None:
        raise _fail(path, f"a plain state_dict ({len(state)} tensors, e.g. {next(iter(state))!r}); pass the "
                          "model's YAML with --yaml")
    yaml = _read_yaml(yaml_path)
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    fmt = "yolov5" if "anchors" in yaml else "ultralytics"
    return {"format": fmt, "yaml": yaml, "state": _float32(state), "model": None, "names": yaml.get("names"),
            "stride": None}


# --- yolov5 repository -> edgeprune's YOLOv5-style family -----------------------------------------

def _block_name(module: Any) -> str:
    return str(module).split(".")[-1]


def _check_v5_layout(path: Path, yaml: dict[str, Any]) -> None:
    blocks = list(yaml.get("backbone") or []) + list(yaml.get("head") or [])
    act = yaml.get("activation")
    if act is not None and "SiLU" not in str(act):
        raise _fail(path, f"uses activation {act!r}; edgeprune's YOLOv5 family uses SiLU")
    for i, entry in enumerate(blocks):
        if not (isinstance(entry, (list, tuple)) and len(entry) == 4):
            raise _fail(path, f"yaml block {i} is {entry!r:.80}, not [from, repeats, module, args]")
        frm, n, module, args = entry
        name = _block_name(module)
        if not isinstance(args, list) or not all(isinstance(a, (int, float, str, bool, list)) or a is None for a in args):
            raise _fail(path, f"yaml block {i} ({name}) has arguments {args!r:.80}, not a list of plain values")
        if i >= len(V5_LAYOUT):
            raise _fail(path, f"block {i} ({name}) is beyond the YOLOv5 v6.0+ P3-P5 layout of {len(V5_LAYOUT)} "
                              "blocks (a P6 model such as yolov5s6?); edgeprune imports the P5 layout")
        efrm, en, ename, eargs = V5_LAYOUT[i]
        if name != ename:
            hint = " (the pre-v6.0 layout; re-train or convert with yolov5 v6.0+)" if name in ("Focus", "SPP") else ""
            raise _fail(path, f"unknown block {name!r} at index {i} where the YOLOv5 v6.0+ layout has {ename!r}{hint}")
        if frm != efrm or (i < len(V5_LAYOUT) - 1 and n != en):
            raise _fail(path, f"block {i} ({name}) is wired from {frm!r} with {n} repeats; the YOLOv5 v6.0+ layout "
                              f"has {efrm!r} and {en}")
        if name in _DEFAULT_ARGS:
            got = list(args[1:]) + _DEFAULT_ARGS[name][max(len(args) - 1, 0):]
            want = eargs + _DEFAULT_ARGS[name][len(eargs):]
            if name == "Conv" and got[2] is None and isinstance(got[0], int):
                got[2] = got[0] // 2                     # autopad
            if name == "Conv" and want[2] is None:
                want[2] = want[0] // 2
            if got != want:
                raise _fail(path, f"block {i} ({name}) has arguments {list(args)!r}; the YOLOv5 v6.0+ layout has "
                                  f"{want!r} after the channel count")
        elif name == "Upsample" and list(args[1:]) != eargs:
            raise _fail(path, f"block {i} (Upsample) has arguments {list(args)!r}; expected [None, 2, 'nearest']")
    if len(blocks) < len(V5_LAYOUT):
        raise _fail(path, f"has {len(blocks)} blocks; the YOLOv5 v6.0+ layout has {len(V5_LAYOUT)}")


def _v5_key(key: str) -> str | None:
    """yolov5's `model.N.rest` -> edgeprune's `layers.N.rest` (`detect.rest` for the head); None elsewhere."""
    parts = key.split(".", 2)
    if len(parts) < 2 or parts[0] != "model" or not parts[1].isdigit():
        return None
    base = "detect" if int(parts[1]) == len(V5_LAYOUT) - 1 else f"layers.{parts[1]}"
    return f"{base}.{parts[2]}" if len(parts) == 3 else base


def _check_v5_modules(path: Path, source: sp.StandIn, model: torch.nn.Module) -> None:
    """Compare what shapes cannot show (strides, padding, activations, BN eps, residual adds) module by module."""
    theirs = {_v5_key(name): (name, m) for name, m in sp.named_modules(source)
              if _v5_key(name) and isinstance(m, sp.StandIn)}
    for name, ours in model.named_modules():
        if name not in theirs:
            continue
        where, m = theirs[name]
        d, where = m.__dict__, f"module {where} ({m._ep_name})"
        if isinstance(ours, torch.nn.Conv2d):
            for attr in ("kernel_size", "stride", "padding", "dilation", "groups"):
                want = getattr(ours, attr)
                got = tuple(d[attr]) if isinstance(d.get(attr), (list, tuple)) else d.get(attr)
                if got != want:
                    raise _fail(path, f"{where}: {attr} {got!r}, edgeprune's layout has {want!r}")
        elif isinstance(ours, torch.nn.BatchNorm2d):
            if abs(float(d.get("eps", 0)) - ours.eps) > 1e-9:
                raise _fail(path, f"{where}: BatchNorm eps {d.get('eps')!r}, edgeprune's layout has {ours.eps}")
        elif isinstance(ours, torch.nn.SiLU) and m._ep_name != "SiLU":
            raise _fail(path, f"{where}: activation {sp.class_name(m)}, edgeprune's YOLOv5 family uses SiLU")
        elif isinstance(ours, torch.nn.MaxPool2d):
            if (d.get("kernel_size"), d.get("stride"), d.get("padding")) != (ours.kernel_size, ours.stride, ours.padding):
                raise _fail(path, f"{where}: max-pool {d.get('kernel_size')}/{d.get('stride')}/{d.get('padding')}, "
                                  f"edgeprune's SPPF has {ours.kernel_size}/{ours.stride}/{ours.padding}")
        elif hasattr(ours, "add") and isinstance(ours.add, bool) and d.get("add") != ours.add:
            raise _fail(path, f"{where}: residual add {d.get('add')!r}, edgeprune's layout has {ours.add}")


def _v5_spec(path: Path, src: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from .yolo import build_model

    yaml, state = src["yaml"], src["state"]
    _check_v5_layout(path, yaml)
    head = len(V5_LAYOUT) - 1
    out = state.get(f"model.{head}.m.0.weight")
    if out is None or out.shape[0] % 3 or out.shape[0] // 3 <= 5:
        raise _fail(path, f"has no YOLOv5 detect head weights (model.{head}.m.0.weight)")
    nc = out.shape[0] // 3 - 5         # the yaml's nc may be the template's: yolov5 trains with the data's
    names = src["names"]
    if src["model"] is None and isinstance(names, (list, dict)) and len(names) != nc:
        names = None
    stride = src["stride"] or [float(s) for s in STRIDES]
    if [int(s) for s in stride] != STRIDES:
        raise _fail(path, f"head strides {stride}; edgeprune's YOLOv5 family has {STRIDES}")
    grid_anchors = state.pop(f"model.{head}.anchors", None)
    state.pop(f"model.{head}.anchor_grid", None)          # a buffer before v6.0, recomputed from anchors
    if grid_anchors is not None:
        if tuple(grid_anchors.shape) != (3, 3, 2):
            raise _fail(path, f"head anchors have shape {tuple(grid_anchors.shape)}, expected (3, 3, 2)")
        anchors = (grid_anchors * torch.tensor(STRIDES, dtype=torch.float32).view(3, 1, 1)).view(3, 6).tolist()
    else:
        anchors = yaml.get("anchors")
        if not (isinstance(anchors, list) and len(anchors) == 3 and all(isinstance(a, list) and len(a) == 6 for a in anchors)):
            raise _fail(path, f"no anchors in the weights and yaml 'anchors' is {anchors!r:.80} (3 levels x 3 pairs expected)")
    dm, wm = yaml.get("depth_multiple"), yaml.get("width_multiple")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in (dm, wm)):
        raise _fail(path, f"yaml depth_multiple/width_multiple are {dm!r}/{wm!r}, not positive numbers")
    size = next((k for k, v in SIZES.items() if v == (dm, wm)), "custom")
    spec = new_spec(nc, _names(names, nc, path), "n", anchors)
    spec.update(size=size, depth_multiple=float(dm), width_multiple=float(wm))

    mapped: dict[str, torch.Tensor] = {}
    for key, t in state.items():
        ours = _v5_key(key)
        if ours is None:
            raise _fail(path, f"weight {key!r} is not part of the YOLOv5 layout")
        mapped[ours] = t
    try:
        dense = build_model(spec)
    except ModelError as exc:
        raise _fail(path, f"does not map onto edgeprune's YOLOv5 family: {exc}") from None
    widths = {}
    for name, default in dense.conv_widths().items():
        w = mapped.get(f"{name}.conv.weight")
        if w is not None and w.shape[0] != default:
            widths[name] = int(w.shape[0])
    if widths:
        spec["widths"] = widths
        try:
            model = build_model(spec)
        except ModelError as exc:
            raise _fail(path, f"its per-layer widths do not fit edgeprune's YOLOv5 family: {exc}") from None
    else:
        model = dense
    if src["model"] is not None:
        _check_v5_modules(path, src["model"], model)
    ours = model.state_dict()
    mapped["detect.anchors"] = ours["detect.anchors"]   # the spec's anchors, in pixels
    mapped["detect.stride"] = ours["detect.stride"]
    _check_keys(path, ours, mapped, lambda k: k.replace("layers.", "model.").replace("detect.", f"model.{head}."))
    return spec, mapped


def _check_keys(path: Path, ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], show: Any) -> None:
    missing = [k for k in ours if k not in theirs]
    extra = [k for k in theirs if k not in ours]
    if missing or extra:
        blk = lambda k: ".".join(show(k).split(".")[:2])     # noqa: E731
        first = missing[0] if missing else extra[0]
        what = (f"lacks {show(first)!r} ({len(missing)} weights missing)" if missing
                else f"has {show(first)!r}, which edgeprune's layout does not ({len(extra)} extra weights)")
        raise _fail(path, f"block {blk(first)} {what}: its depth or blocks differ from the YOLOv5 v6.0+ layout")
    for k, t in ours.items():
        if tuple(theirs[k].shape) != tuple(t.shape):
            raise _fail(path, f"weight {show(k)!r} has shape {tuple(theirs[k].shape)}, the mapped layout expects "
                              f"{tuple(t.shape)}")


# --- ultralytics ----------------------------------------------------------------------------------

def _ultralytics_spec(path: Path, src: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    try:
        from .ultralytics_map import convert
    except ModuleNotFoundError as exc:
        if exc.name != __package__ + ".ultralytics_map":
            raise
        raise _fail(path, "an ultralytics checkpoint, but ultralytics family support not installed in this "
                          "edgeprune") from None
    yaml = src["yaml"]
    nc = yaml.get("nc")
    if not isinstance(nc, int) or nc < 1:
        raise _fail(path, f"yaml 'nc' is {nc!r}, not a class count")
    try:
        return convert(yaml, src["state"], _names(src["names"], nc, path))
    except ModelError as exc:
        raise _fail(path, str(exc)) from None


# --- the command ----------------------------------------------------------------------------------

def load_foreign(path: str | Path, yaml_path: str | Path | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The edgeprune model a foreign checkpoint maps to, with {"format", "source", "sha256"}."""
    from .io import model_from_checkpoint
    from .yolo import build_model

    path = Path(path)
    src = read_source(path, yaml_path)
    info = {"format": src["format"], "source": str(path), "sha256": sha256_file(path)}
    if src["format"] == "edgeprune":
        return model_from_checkpoint(path), info
    spec, state = (_v5_spec if src["format"] == "yolov5" else _ultralytics_spec)(path, src)
    try:
        model = build_model(spec)
        model.load_state_dict(state)
    except (ModelError, RuntimeError) as exc:
        raise _fail(path, f"the mapped model does not load: {str(exc).splitlines()[0]}") from None
    return model.eval(), info


def import_checkpoint(path: str | Path, out: str | Path, yaml_path: str | Path | None = None) -> dict[str, Any]:
    """Write the edgeprune checkpoint of a foreign one to `out`; returns a JSON-able summary."""
    from .io import save_checkpoint

    model, info = load_foreign(path, yaml_path)
    spec = model.spec
    save_checkpoint(out, model, imported_from=info)
    return {**info, "out": str(out), "family": spec["family"], "size": spec.get("size"),
            "num_classes": spec["num_classes"], "names": spec["names"],
            "params": sum(p.numel() for p in model.parameters()), "custom_widths": len(spec.get("widths", {}))}


__all__ = ["import_checkpoint", "load_foreign", "read_source"]
