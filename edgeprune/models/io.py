"""Checkpoint I/O without pickle of code: torch.save of plain containers (spec dict, state_dicts,
numbers), always loaded with `weights_only=True`. Writes are atomic."""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ModelError
from ..fsio import AtomicFile
from .spec import validate_spec
from .yolo import Detector, build_model


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when the message is empty."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def save_checkpoint(path: str | Path, model: Detector, **extra: Any) -> None:
    """Save {'spec', 'model' (state_dict), **extra}. `extra` must hold only tensors and plain types."""
    payload = {"spec": model.spec, "model": model.state_dict(), **extra}
    with AtomicFile(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint; re-create it (compress reruns the "
                              "stage that wrote it)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(f"{path}: checkpoint is truncated or corrupt ({first_line(exc)}); "
                              "re-create it (compress reruns the stage that wrote it)") from None
    except Exception as exc:  # weights_only unpickler refuses arbitrary objects
        raise CheckpointError(f"{path}: not a safe edgeprune checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or "spec" not in ckpt or "model" not in ckpt:
        raise CheckpointError(f"{path}: not an edgeprune checkpoint (expected keys 'spec' and 'model')")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any] | str | Path, key: str = "model") -> Detector:
    source = str(ckpt) if not isinstance(ckpt, dict) else "checkpoint"
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    try:
        model = build_model(validate_spec(ckpt["spec"], source))
    except ModelError as exc:
        raise CheckpointError(str(exc)) from None
    state = ckpt.get(key) or ckpt["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{source}: state_dict does not fit its spec: {str(exc).splitlines()[0]}") from None
    return model
