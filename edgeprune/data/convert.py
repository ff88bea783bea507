"""Conversion between dataset formats: load with any reader, write with the chosen writer (images copied)."""
from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .dataset import load_dataset
from .samples import Dataset

TARGETS = ("yolo", "coco", "voc", "nwpu")


def write_dataset(ds: Dataset, out: str | Path, to: str, progress: bool = False) -> Path:
    """Write `ds` under `out` in format `to`; returns the folder (or data.yaml for YOLO)."""
    out = Path(out)
    if to == "yolo":
        from .yolo import write_yolo
        return write_yolo(ds, out, progress=progress)
    if to == "coco":
        from .coco import write_coco
        return write_coco(ds, out, progress=progress)
    if to == "voc":
        from .voc import write_voc
        return write_voc(ds, out, progress=progress)
    if to == "nwpu":
        from .nwpu import write_nwpu
        return write_nwpu(ds, out, progress=progress)
    raise DataError(f"--to {to!r}: unknown target format; choose one of {list(TARGETS)}")


def convert(src: str | Path, dst: str | Path, to: str, src_format: str = "auto",
            skip_bad: bool = False, progress: bool = False) -> tuple[Dataset, Path]:
    src, dst = Path(src), Path(dst)
    if dst.exists() and any(dst.iterdir()):
        raise DataError(f"{dst}: the destination folder is not empty; choose a new folder")
    ds = load_dataset(src, src_format, skip_bad=skip_bad)
    return ds, write_dataset(ds, dst, to, progress)
