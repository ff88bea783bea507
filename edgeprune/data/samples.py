"""What every dataset format shares: the `Sample` and `Dataset` types, and the helpers readers validate with.

A `Sample` is one image with its boxes in image pixels (xyxy); a `Dataset` holds class names and splits.
Readers raise `DataError` naming the file and line of the first bad input; with `skip_bad=True` the bad
sample is left out instead, counted in `Dataset.skipped` and described in `Dataset.problems`.
Readers check an image's header (and PNG checksums) only (`image_size`); `decode_check` decodes in full.
The format readers (yolo, coco, voc, nwpu) import this module; `dataset.load_dataset` imports them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from jetson import imageio

from ..errors import DataError, DeviceError

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
    def size_then_verify(im: Image.Image) -> tuple[int, int]:
        size = im.size        # verify() leaves the image unusable: read the size first
        im.verify()
        return int(size[0]), int(size[1])

    return _read_checked(path, size_then_verify)


def decode_check(path: Path) -> None:
    """Decode the whole image: a truncated JPEG passes `image_size` (header intact) but fails here."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:   # a library may have switched Pillow to padding truncated files
        raise DataError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True in this process: truncated images would "
                        "decode silently; set it to False")
    _read_checked(path, lambda im: im.load())


def _read_checked(path: Path, read: Callable[[Image.Image], Any]) -> Any:
    """`read(image)` on the opened file; a missing or undecodable file raises DataError naming it."""
    try:
        with Image.open(path) as im:
            return read(im)
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


def finish(names: list[str], splits: dict[str, list[Sample | None]], collector: Collector, fmt: str,
           root: Path) -> Dataset:
    clean = {k: [s for s in v if s is not None] for k, v in splits.items()}
    lost = {k: len(v) - len(clean[k]) for k, v in splits.items() if len(v) > len(clean[k])}
    return Dataset(names=list(names), splits=clean, skipped=len(collector.problems),
                   problems=list(collector.problems), skipped_by_split=lost, format=fmt, root=root)
