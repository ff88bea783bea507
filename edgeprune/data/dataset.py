"""Dataset types shared by every format, validation helpers, and `load_dataset` (format detection).

A `Sample` is one image with its boxes in image pixels (xyxy); a `Dataset` holds class names and splits.
Readers raise `DataError` naming the file and line of the first bad input; with `skip_bad=True` the bad
sample is left out instead, counted in `Dataset.skipped` and described in `Dataset.problems`.
Readers check an image's header (and PNG checksums) only; `load_dataset(..., decode=True)` also decodes every
image in full, the only way to find a truncated JPEG (its header is intact). `skip_bad=True` implies it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from jetson import imageio

from ..errors import DataError, DeviceError

FORMATS = ("yolo", "coco", "voc", "nwpu")
SKIP_HINT = "or leave bad samples out with --set data.skip_bad=true (data convert: --skip-bad)"
# A box may overshoot the image by this many pixels (rounding in annotation tools) before it is an error.
EDGE_TOLERANCE_PX = 1.0


@dataclass
class Sample:
    image: Path
    boxes: np.ndarray                       # float32 (N, 4) x1, y1, x2, y2 in image pixels
    classes: np.ndarray                     # int64 (N,)
    size: tuple[int, int] | None = None     # (width, height) when the reader knows it

    def __post_init__(self) -> None:
        self.image = Path(self.image)
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)


@dataclass
class Dataset:
    names: list[str]
    splits: dict[str, list[Sample]]
    skipped: int = 0
    problems: list[str] = field(default_factory=list)   # one line per skipped sample: file, line, why
    skipped_by_split: dict[str, int] = field(default_factory=dict)  # skipped samples each split lost
    format: str = "yolo"
    root: Path | None = None

    def all_samples(self) -> list[Sample]:
        return [s for split in self.splits.values() for s in split]


class Collector:
    """Runs per-sample parsing; re-raises DataError, or records and skips it when skip_bad is set."""

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.problems: list[str] = []

    def run(self, fn: Callable[[], Sample | None]) -> Sample | None:
        try:
            return fn()
        except DataError as exc:
            if not self.skip_bad:
                raise
            self.problems.append(str(exc))
            return None

    def record(self, exc: DataError) -> None:
        """A bad sample found outside `run` (e.g. while parsing a whole annotation file)."""
        if not self.skip_bad:
            raise exc
        self.problems.append(str(exc))


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image, after checking the file decodes (header + chunk checksums)."""
    try:
        with Image.open(path) as im:
            size = im.size
            im.verify()
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: corrupt or undecodable image ({exc}); re-export it or delete it "
                        f"({SKIP_HINT})") from None
    return int(size[0]), int(size[1])


def decode_check(path: Path) -> None:
    """Decode the whole image: a truncated JPEG passes `image_size` (header intact) but fails here."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:   # a library may have switched Pillow to padding truncated files
        raise DataError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True in this process: truncated images would "
                        "decode silently; set it to False")
    try:
        with Image.open(path) as im:
            im.load()
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: corrupt or undecodable image ({exc}); re-export it or delete it "
                        f"({SKIP_HINT})") from None


def read_image(path: Path) -> np.ndarray:
    """Decode to HxWx3 uint8 RGB with the device's decoder (`jetson.imageio.decode_image`: the host trains and
    evaluates on exactly the pixels the device sees); DataError naming the file when it cannot be decoded."""
    try:
        return imageio.decode_image(path)
    except DeviceError as exc:
        raise DataError(str(exc)) from None


def check_box(box: tuple[float, float, float, float], width: int, height: int, where: str) -> tuple[float, ...]:
    """Validate an xyxy pixel box against the image; clip sub-pixel overshoot. `where` = "file:line"."""
    x1, y1, x2, y2 = box
    if not all(np.isfinite(v) for v in box):
        raise DataError(f"{where}: box {list(box)} has a non-finite coordinate")
    t = EDGE_TOLERANCE_PX
    if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t:
        raise DataError(f"{where}: box {[round(v, 2) for v in box]} lies outside the {width}x{height} image; "
                        f"fix the annotation ({SKIP_HINT})")
    if x2 <= x1 or y2 <= y1:
        raise DataError(f"{where}: box {[round(v, 2) for v in box]} has zero or negative width/height")
    return max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)


def check_class(cls: int, nc: int, where: str) -> int:
    if not 0 <= cls < nc:
        raise DataError(f"{where}: class {cls} is out of range 0..{nc - 1} ({nc} classes); "
                        f"fix the label or the class list")
    return cls


def unique_stem(stem: str, used: set[str]) -> str:
    """`stem`, or `stem_1`, `stem_2`... if taken (writers flatten splits/folders, names must not collide)."""
    out, k = stem, 1
    while out in used:
        out, k = f"{stem}_{k}", k + 1
    used.add(out)
    return out


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


def finish(names: list[str], splits: dict[str, list[Sample | None]], collector: Collector, fmt: str,
           root: Path) -> Dataset:
    clean = {k: [s for s in v if s is not None] for k, v in splits.items()}
    lost = {k: len(v) - len(clean[k]) for k, v in splits.items() if len(v) > len(clean[k])}
    return Dataset(names=list(names), splits=clean, skipped=len(collector.problems),
                   problems=list(collector.problems), skipped_by_split=lost, format=fmt, root=root)
