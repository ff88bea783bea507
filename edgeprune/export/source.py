"""Load what `edgeprune export` exports: a pruned model folder (arch.json + weights.pt [+ recombination.json,
metrics.json]), an edgeprune checkpoint (.pt with spec + state_dict), or any nn.Module built by a factory
(`--model pkg.mod:fn`): a pruned folder of model.json + weights.pt (edgeprune.prune.anymodel) or the dense
model with `--weights`. Errors become ExportError naming the file.

A factory-built model is exported when it is a detector the device can decode: its eval forward returns
one tensor in a manifest output layout (jetson/postprocess.py), [B, N, 4+nc] `anchor_free_decoded` or
[B, N, 5+nc] `yolov5_decoded`, boxes (cx, cy, w, h) in input pixels, then (objectness and) class
probabilities. `detection_head` reads how it is declared (flags > model.json keys > model attributes
`output_layout`, `names`, `strides`, as edgeprune's own detectors carry them), checks the output against it,
and says what is missing otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ExportError, ModelError, PruneError, UsageError
from ..fsio import read_json
from ..models.io import model_from_checkpoint

DECODED_LAYOUTS = {"anchor_free_decoded": 4, "yolov5_decoded": 5}   # layout -> columns before the classes
LAYOUT_HELP = ("a decoded detection output: one tensor [B, N, 4+nc] (anchor_free_decoded: cx, cy, w, h in input "
               "pixels, then class probabilities) or [B, N, 5+nc] (yolov5_decoded: the same with an objectness "
               "before the classes), sigmoid applied")


@dataclass
class ModelSource:
    path: Path
    model: nn.Module
    spec: dict[str, Any]       # the description the bundle carries: an arch spec, or a factory model's model.json
    recombination: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    imgsz: int | None = None

    @property
    def factory(self) -> str | None:
        """`pkg.mod:fn` of a factory-built model (None: an edgeprune detector)."""
        return self.spec.get("factory")


def validate_recombination(rec: Any, source: str) -> dict[str, Any]:
    """Check the recombination map's shape (docs/CONTRACTS.md); the error names the junction and key."""
    if not isinstance(rec, dict) or rec.get("version") != 1 or not isinstance(rec.get("junctions"), list):
        raise ExportError(f"{source}: expected {{'version': 1, 'rule': ..., 'junctions': [...]}}")
    for i, j in enumerate(rec["junctions"]):
        if not isinstance(j, dict):
            raise ExportError(f"{source}: junctions[{i}] must be an object")
        for key, typ in (("id", str), ("producers", list), ("consumers", list), ("kept", list)):
            if not isinstance(j.get(key), typ):
                raise ExportError(f"{source}: junctions[{i}] ({j.get('id', '?')}): key {key!r} missing or not a {typ.__name__}")
    return rec


def load_source(path: str | Path | None, factory: str | None = None, weights: str | Path | None = None) -> ModelSource:
    """`path` (a folder or checkpoint); or `factory` + optional `weights` (a dense factory-built model); with
    both a folder and `factory`, the folder's model.json is rebuilt by `factory` instead of the one it names."""
    if path is None:
        if factory is None:
            raise UsageError("give a model folder / checkpoint, or --model PKG.MOD:FN")
        return _load_factory(factory, weights)
    if weights is not None:
        raise UsageError("--weights goes with --model and no model folder (a folder holds its own weights.pt)")
    path = Path(path)
    if not path.exists():
        raise ExportError(f"{path}: model not found (pass a pruned model folder or a .pt checkpoint)")
    if factory is not None and not (path / "model.json").is_file():
        raise UsageError(f"--model goes with a folder written by `edgeprune prune --model` (model.json); {path} "
                         "is not one")
    try:
        if path.is_dir():
            return _load_dir(path, factory)
        return _load_ckpt(path)
    except ModelError as exc:
        raise ExportError(str(exc)) from None


def _load_factory(factory: str, weights: str | Path | None) -> ModelSource:
    from ..prune.anymodel import build_with_weights, module_widths

    try:
        model = build_with_weights(factory, weights).eval()
    except PruneError as exc:
        raise ExportError(str(exc)) from None
    doc = {"version": 1, "factory": factory, "modules": module_widths(model)}
    return ModelSource(Path(weights) if weights else Path(factory), model, doc)


def _load_dir(path: Path, factory: str | None = None) -> ModelSource:
    from ..prune import anymodel
    from ..prune.io import load_pruned, pruned_imgsz

    try:
        if (path / "model.json").is_file():
            model, doc = anymodel.load(path, factory)
            rec = read_json(path / "recombination.json", ExportError) if (path / "recombination.json").is_file() else {}
            imgsz = doc.get("imgsz") if isinstance(doc.get("imgsz"), int) else None
        else:
            model, rec = load_pruned(path)
            doc, imgsz = model.spec, pruned_imgsz(path)
    except PruneError as exc:
        raise ExportError(str(exc)) from None
    rec = validate_recombination(rec, str(path / "recombination.json")) if rec.get("junctions") else None
    metrics = read_json(path / "metrics.json", ExportError) if (path / "metrics.json").is_file() else {}
    return ModelSource(path, model.eval(), doc, rec, metrics if isinstance(metrics, dict) else {}, imgsz)


def _load_ckpt(path: Path) -> ModelSource:
    from ..models.io import load_checkpoint

    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt)
    rec = ckpt.get("recombination")
    rec = validate_recombination(rec, f"{path}: recombination") if rec is not None else None
    metrics = ckpt.get("metrics") if isinstance(ckpt.get("metrics"), dict) else {}
    imgsz = ckpt.get("imgsz") if isinstance(ckpt.get("imgsz"), int) else None
    return ModelSource(path, model, model.spec, rec, metrics, imgsz)


def _names(value: Any) -> list[str] | None:
    """--names: a comma-separated list, or a file with one name per line (labels.txt)."""
    if value is None or isinstance(value, list):
        return value
    if Path(value).is_file():
        return [line.strip() for line in Path(value).read_text().splitlines() if line.strip()]
    return [n.strip() for n in str(value).split(",") if n.strip()]


def detection_head(src: ModelSource, imgsz: int, names: Any = None, output_layout: str | None = None,
                   strides: list[int] | None = None) -> dict[str, Any]:
    """The output layout, class names and strides of the detector in `src`, checked against its eval output
    on `imgsz`; sets them in `src.spec` (what the bundle's model.json records) and returns them. An edgeprune
    detector's spec fixes them already (the flags are refused); a factory-built model declares them."""
    if src.factory is None:
        if names is not None or output_layout is not None or strides is not None:
            raise UsageError("--names / --output-layout / --strides describe a --model (factory-built) detector; "
                             f"{src.path}'s arch spec already fixes them")
        return {"names": list(src.spec["names"]), "output_layout": src.model.output_layout,
                "strides": list(src.spec["strides"])}
    doc, model, where = src.spec, src.model, f"--model {src.factory}"
    names = _names(names) or doc.get("names") or _list_attr(model, "names")
    layout = output_layout or doc.get("output_layout") or getattr(model, "output_layout", None)
    strides = strides or doc.get("strides") or _list_attr(model, "strides") or []
    if layout is not None and layout not in DECODED_LAYOUTS:
        raise ExportError(f"{where}: output layout {layout!r} is not one the device decodes; choose one of "
                          f"{sorted(DECODED_LAYOUTS)}")
    if not isinstance(strides, list) or not all(isinstance(v, int) and v > 0 for v in strides):
        raise ExportError(f"{where}: strides must be positive integers, got {strides!r}")
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.zeros(1, 3, imgsz, imgsz), torch.rand(1, 3, imgsz, imgsz, generator=gen)])
    try:
        with torch.no_grad():
            out = model.eval()(x)
    except Exception as exc:  # the user's forward: report whatever it raises
        raise ExportError(f"{where}: the model does not run on a {imgsz}x{imgsz} image: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''} (--imgsz sets the input side)") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 3:
        got = f"a {type(out).__name__}" if not isinstance(out, torch.Tensor) else f"a tensor {list(out.shape)}"
        raise ExportError(f"{where}: its eval forward returns {got}; `detect` needs {LAYOUT_HELP}. Wrap the "
                          "model in a module whose forward decodes its head (docs/export.md)")
    cols = int(out.shape[2])
    if layout is None:
        if not names:
            raise ExportError(f"{where}: the output has {cols} columns per box; give --names (class names; "
                              f"{cols - 4} of them for anchor_free_decoded, {cols - 5} for yolov5_decoded) or "
                              "--output-layout")
        layout = {4 + len(names): "anchor_free_decoded", 5 + len(names): "yolov5_decoded"}.get(cols)
        if layout is None:
            raise ExportError(f"{where}: the output has {cols} columns per box, {len(names)} class names need "
                              f"{4 + len(names)} (anchor_free_decoded) or {5 + len(names)} (yolov5_decoded)")
    nc = cols - DECODED_LAYOUTS[layout]
    if nc < 1:
        raise ExportError(f"{where}: the output has {cols} columns per box, too few for {layout} ({LAYOUT_HELP})")
    names = names or [f"class{i}" for i in range(nc)]
    if len(names) != nc:
        raise ExportError(f"{where}: {len(names)} class names for {nc} classes ({cols} columns, {layout})")
    scores = out[..., 4:]
    if not bool(torch.isfinite(out).all()) or float(scores.min()) < 0.0 or float(scores.max()) > 1.0:
        raise ExportError(f"{where}: columns 4..{cols - 1} of its output must be probabilities in [0, 1] (got "
                          f"{float(scores.min()):.3g}..{float(scores.max()):.3g}); apply sigmoid in forward. "
                          f"Expected {LAYOUT_HELP}")
    head = {"names": [str(n) for n in names], "output_layout": layout, "strides": strides}
    src.spec = {**doc, **head}
    return head


def _list_attr(model: nn.Module, name: str) -> list[Any] | None:
    value = getattr(model, name, None)
    return list(value) if isinstance(value, (list, tuple)) else None
