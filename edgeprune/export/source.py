"""Load what `edgeprune export` exports: a pruned model folder (arch.json + weights.pt [+ recombination.json,
metrics.json]) or an edgeprune checkpoint (.pt with spec + state_dict). Errors become ExportError naming the file."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ExportError, ModelError, PruneError
from ..models.io import model_from_checkpoint
from ..models.yolo import Detector


@dataclass
class ModelSource:
    path: Path
    model: Detector
    recombination: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    imgsz: int | None = None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path}: not valid JSON ({exc})") from None


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


def load_source(path: str | Path) -> ModelSource:
    path = Path(path)
    if not path.exists():
        raise ExportError(f"{path}: model not found (pass a pruned model folder or a .pt checkpoint)")
    try:
        if path.is_dir():
            return _load_dir(path)
        return _load_ckpt(path)
    except ModelError as exc:
        raise ExportError(str(exc)) from None


def _load_dir(path: Path) -> ModelSource:
    from ..prune.io import load_pruned, pruned_imgsz

    try:
        model, rec = load_pruned(path)
        imgsz = pruned_imgsz(path)
    except PruneError as exc:
        raise ExportError(str(exc)) from None
    rec = validate_recombination(rec, str(path / "recombination.json")) if rec.get("junctions") else None
    metrics = _read_json(path / "metrics.json") if (path / "metrics.json").is_file() else {}
    return ModelSource(path, model, rec, metrics if isinstance(metrics, dict) else {}, imgsz)


def _load_ckpt(path: Path) -> ModelSource:
    from ..models.io import load_checkpoint

    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt)
    rec = ckpt.get("recombination")
    rec = validate_recombination(rec, f"{path}: recombination") if rec is not None else None
    metrics = ckpt.get("metrics") if isinstance(ckpt.get("metrics"), dict) else {}
    imgsz = ckpt.get("imgsz") if isinstance(ckpt.get("imgsz"), int) else None
    return ModelSource(path, model, rec, metrics, imgsz)
