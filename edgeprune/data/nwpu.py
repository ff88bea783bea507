"""NWPU VHR-10: `positive image set/001.jpg` + `ground truth/001.txt` with one `(x1,y1),(x2,y2),class` per line,
classes 1..10. Reader, parser and writer.

The dataset has no official split. A `splits/{train,val,test}.txt` (image stems, one a line) is used when
present; otherwise every 5th image (sorted by name) goes to val — deterministic, 80/20. Images of
`negative image set/` (no objects) are not loaded.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from jetson.imageio import list_images

from ..errors import DataError
from ..fsio import atomic_write_bytes, atomic_write_text
from .samples import Collector, Dataset, Sample, check_box, check_class, finish, image_size, unique_stem

NWPU_NAMES = ["airplane", "ship", "storage tank", "baseball diamond", "tennis court", "basketball court",
              "ground track field", "harbor", "bridge", "vehicle"]
VAL_EVERY = 5


def parse_gt(data: bytes | str, source: str, nc: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Parse a ground-truth file → (boxes xyxy pixels, classes 0-based). Errors name `source:line`."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(f"{source}: not UTF-8 text (byte {exc.start}); NWPU ground truth is plain text") from None
    boxes, classes = [], []
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source}:{lineno}"
        fields = [f.strip() for f in line.replace("(", " ").replace(")", " ").split(",")]
        if len(fields) != 5:
            raise DataError(f"{where}: expected '(x1,y1),(x2,y2),class' (5 values), got {len(fields)} "
                            f"({line.strip()[:60]!r})")
        try:
            x1, y1, x2, y2, c = (float(f) for f in fields)
        except ValueError:
            raise DataError(f"{where}: non-numeric field in {line.strip()[:60]!r}") from None
        if not math.isfinite(c) or c != int(c):
            raise DataError(f"{where}: class {fields[4]!r} is not an integer 1..{nc}")
        classes.append(check_class(int(c) - 1, nc, where + " (NWPU classes are 1-based; shown 0-based)"))
        boxes.append(check_box((x1, y1, x2, y2), width, height, where))
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64)


def _gt_dir(root: Path) -> Path:
    for name in ("ground truth", "ground_truth"):
        if (root / name).is_dir():
            return root / name
    raise DataError(f"{root}: an NWPU VHR-10 dataset needs a 'ground truth/' folder")


def _image_dir(root: Path) -> Path:
    for name in ("positive image set", "positive_image_set"):
        if (root / name).is_dir():
            return root / name
    raise DataError(f"{root}: an NWPU VHR-10 dataset needs a 'positive image set/' folder")


def load_nwpu(path: Path, skip_bad: bool = False) -> Dataset:
    root = Path(path)
    gt_dir, img_dir = _gt_dir(root), _image_dir(root)
    names = NWPU_NAMES
    if (root / "classes.txt").is_file():
        names = [ln.strip() for ln in (root / "classes.txt").read_text().splitlines() if ln.strip()]
    images = [Path(p) for p in list_images(img_dir)]
    by_stem = {p.stem: p for p in images}
    if (root / "splits").is_dir():
        split_stems = {f.stem: [ln.strip() for ln in f.read_text().splitlines() if ln.strip()]
                       for f in sorted((root / "splits").glob("*.txt"))}
    else:
        stems = sorted(by_stem)
        split_stems = {"train": [s for i, s in enumerate(stems) if i % VAL_EVERY != VAL_EVERY - 1],
                       "val": [s for i, s in enumerate(stems) if i % VAL_EVERY == VAL_EVERY - 1]}
    col = Collector(skip_bad)
    splits: dict[str, list[Sample | None]] = {}
    for split, stems in split_stems.items():
        out = splits.setdefault(split, [])
        for stem in stems:
            if stem not in by_stem:
                col.record(DataError(f"{root / 'splits' / (split + '.txt')}: image {stem!r} is not in {img_dir}"))
                continue
            out.append(col.run(lambda p=by_stem[stem]: _sample(p, gt_dir / (p.stem + ".txt"), len(names))))
    splits.setdefault("val", [])
    return finish(names, splits, col, "nwpu", root)


def _sample(image: Path, gt: Path, nc: int) -> Sample:
    w, h = image_size(image)
    if not gt.is_file():
        raise DataError(f"{gt}: ground truth missing for positive image {image.name}")
    boxes, classes = parse_gt(gt.read_bytes(), str(gt), nc, w, h)
    return Sample(image, boxes, classes, (w, h))


def gt_text(boxes: np.ndarray, classes: np.ndarray) -> str:
    return "".join("(%d,%d),(%d,%d),%d\n" % (round(x1), round(y1), round(x2), round(y2), c + 1)
                   for (x1, y1, x2, y2), c in zip(np.asarray(boxes).tolist(), np.asarray(classes).tolist()))


def write_nwpu(ds: Dataset, out: Path, progress: bool = False) -> Path:
    """Write `positive image set/`, `ground truth/`, `splits/<split>.txt` and `classes.txt`."""
    out = Path(out)
    used: set[str] = set()
    for split, samples in ds.splits.items():
        stems = []
        for s in tqdm(samples, desc=f"write {split}", disable=not progress, leave=False):
            stem = unique_stem(s.image.stem, used)
            stems.append(stem)
            atomic_write_bytes(out / "positive image set" / (stem + s.image.suffix.lower()), s.image.read_bytes())
            atomic_write_text(out / "ground truth" / (stem + ".txt"), gt_text(s.boxes, s.classes))
        atomic_write_text(out / "splits" / f"{split}.txt", "".join(x + "\n" for x in stems))
    atomic_write_text(out / "classes.txt", "".join(n + "\n" for n in ds.names))
    return out
