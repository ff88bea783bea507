"""`load_dataset`: format detection and the format readers (types and shared helpers: data/samples.py).

Readers check an image's header (and PNG checksums) only; `load_dataset(..., decode=True)` also decodes every
image in full, the only way to find a truncated JPEG (its header is intact). `skip_bad=True` implies it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DataError
from .samples import SKIP_HINT, Collector, Dataset, decode_check

FORMATS = ("yolo", "coco", "voc", "nwpu")


def detect_format(path: Path) -> str:
    """Guess the format of a dataset path (see docs/data.md for the layouts)."""
    if path.is_file():
        if path.suffix.lower() in (".yaml", ".yml"):
            return "yolo"
        if path.suffix.lower() == ".json":
            return "coco"
        raise DataError(f"{path}: cannot tell the dataset format from this file; pass a data.yaml, a COCO "
                        f".json or a dataset folder, or name the format (format=yolo|coco|voc|nwpu)")
    if (path / "data.yaml").is_file() or (path / "labels").is_dir():
        return "yolo"
    if (path / "Annotations").is_dir():
        return "voc"
    if (path / "ground truth").is_dir() or (path / "ground_truth").is_dir():
        return "nwpu"
    if list(path.glob("*.json")) or (path / "annotations").is_dir():
        return "coco"
    raise DataError(f"{path}: no known dataset layout here (data.yaml or labels/ for YOLO, Annotations/ for VOC, "
                    f"'ground truth/' for NWPU VHR-10, a .json for COCO); see docs/data.md")


def load_dataset(path: str | Path, format: str = "auto", skip_bad: bool = False,
                 decode: bool | None = None) -> Dataset:
    """Load a dataset in any supported format; `format="auto"` detects it from the layout. `decode` (default:
    `skip_bad`) decodes every image in full, so that a truncated one fails here (or is skipped) rather than
    in the middle of a training."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: dataset not found (data.source); give a YOLO folder/data.yaml, COCO json, "
                        f"VOC folder or NWPU VHR-10 folder, or use the synthetic default")
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "yolo":
        from .yolo import load_yolo as loader
    elif fmt == "coco":
        from .coco import load_coco as loader
    elif fmt == "voc":
        from .voc import load_voc as loader
    elif fmt == "nwpu":
        from .nwpu import load_nwpu as loader
    else:
        raise DataError(f"data.format: unknown format {fmt!r}; choose one of {list(FORMATS)} or auto")
    ds = loader(path, skip_bad=skip_bad)
    if skip_bad if decode is None else decode:
        _decode_all(ds, skip_bad)
    return ds


def require_clean_split(ds: Dataset, split: str) -> Dataset:
    """`ds` loaded with skip_bad=True, for a command that reads `split` alone (eval): a bad sample in another
    split does not matter; one in `split` (or one no split claims) is an error, as without skip_bad."""
    unclaimed = ds.skipped - sum(ds.skipped_by_split.values())
    if ds.skipped_by_split.get(split) or unclaimed:
        n = ds.skipped_by_split.get(split, 0) + unclaimed
        raise DataError(f"{n} bad sample(s) in the {split} split (first: {ds.problems[0]}); "
                        f"{SKIP_HINT}")
    return ds


def _decode_all(ds: Dataset, skip_bad: bool) -> None:
    col = Collector(skip_bad)
    for split, samples in ds.splits.items():
        kept = [s for s in samples if col.run(lambda s=s: (decode_check(s.image), s)[1]) is not None]
        if len(kept) < len(samples):
            ds.skipped_by_split[split] = ds.skipped_by_split.get(split, 0) + len(samples) - len(kept)
            ds.splits[split] = kept
    ds.skipped += len(col.problems)
    ds.problems += col.problems


def dataset_path(data: Any, cache: str | Path | None = None, progress: bool = True) -> tuple[Path, str]:
    """The dataset a `DataConfig` names, and its format: `data.source`, or for "synthetic" the generated set
    (made on first use, cached in `cache`, default `synth.cache_dir()`)."""
    if data.source != "synthetic":
        return Path(data.source), data.format
    from .synth import cache_dir, ensure_synthetic
    return ensure_synthetic(Path(cache) if cache else cache_dir(), data.synth_train, data.synth_val, data.synth_size,
                            data.seed, progress, style=data.synth_style), "auto"


def load_data(data: Any, cache: str | Path | None = None, split: str | None = None) -> Dataset:
    """The dataset of a `DataConfig` (see `dataset_path`), as the train/eval/sparse commands read it. With
    `split` (a command that reads that split alone) bad samples elsewhere are left out rather than fatal."""
    path, fmt = dataset_path(data, cache)
    if split is None or data.skip_bad:
        return load_dataset(path, fmt, data.skip_bad)
    return require_clean_split(load_dataset(path, fmt, skip_bad=True, decode=False), split)
