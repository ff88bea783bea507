"""YOLO txt format: `images/<split>/x.png` + `labels/<split>/x.txt` with `cls cx cy w h` (normalised) per line,
and a `data.yaml` (path, train, val[, test], nc, names). Reader, label parser and writer."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm import tqdm
import yaml

from jetson.imageio import list_images

from ..errors import DataError
from ..fsio import atomic_write_bytes, atomic_write_text, read_yaml
from .samples import Collector, Dataset, Sample, check_box, check_class, finish, image_size, unique_stem


def _decode(data: bytes | str, source: str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: not UTF-8 text (byte {exc.start}); a YOLO label file is plain text") from None


def parse_label(data: bytes | str, source: str, nc: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Parse a YOLO label file's content → (boxes xyxy pixels, classes). Errors name `source:line`."""
    boxes, classes = [], []
    for lineno, line in enumerate(_decode(data, source).splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{source}:{lineno}"
        if len(fields) != 5:
            raise DataError(f"{where}: expected 5 fields 'class cx cy w h', got {len(fields)} ({line.strip()[:60]!r})")
        try:
            cls_f = float(fields[0])
            cx, cy, w, h = (float(v) for v in fields[1:])
        except ValueError:
            raise DataError(f"{where}: non-numeric field in {line.strip()[:60]!r}") from None
        if not np.isfinite(cls_f) or cls_f != int(cls_f):
            raise DataError(f"{where}: class {fields[0]!r} is not an integer")
        cls = check_class(int(cls_f), nc, where)
        box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
        boxes.append(check_box(box, width, height, where))
        classes.append(cls)
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64)


def label_path(image: Path) -> Path:
    """YOLO convention: the last `images` folder of the path becomes `labels`, the suffix becomes .txt."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def _split_images(root: Path, entry, yaml_path: Path) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    images: list[Path] = []
    for e in entries:
        p = (root / str(e)) if not os.path.isabs(str(e)) else Path(str(e))
        if p.is_dir():
            images += map(Path, list_images(p))
        elif p.is_file() and p.suffix == ".txt":
            for line in p.read_text().splitlines():
                if line.strip():
                    q = Path(line.strip())
                    images.append(q if q.is_absolute() else root / q)
        else:
            raise DataError(f"{yaml_path}: split folder {e!r} not found (resolved to {p})")
    return images


def _names_from_yaml(meta: dict, yaml_path: Path) -> list[str]:
    names = meta.get("names")
    if isinstance(names, dict):
        try:
            names = [str(names[k]) for k in sorted(names, key=int)]
        except (TypeError, ValueError):
            raise DataError(f"{yaml_path}: key 'names' must map integers 0..nc-1 to names") from None
    if not isinstance(names, list) or not names:
        nc = meta.get("nc")
        if isinstance(nc, int) and nc > 0:
            return [f"class{i}" for i in range(nc)]
        raise DataError(f"{yaml_path}: key 'names' (a list of class names) is missing")
    if "nc" in meta and meta["nc"] != len(names):
        raise DataError(f"{yaml_path}: nc={meta['nc']} but 'names' lists {len(names)} classes; make them agree")
    return [str(n) for n in names]


def load_yolo(path: Path, skip_bad: bool = False) -> Dataset:
    path = Path(path)
    yaml_path = path if path.is_file() else path / "data.yaml"
    if yaml_path.is_file():
        meta = read_yaml(yaml_path, DataError)
        if not isinstance(meta, dict):
            raise DataError(f"{yaml_path}: expected a mapping with keys path, train, val, names")
        root = Path(str(meta.get("path") or "."))
        root = root if root.is_absolute() else yaml_path.parent / root
        names = _names_from_yaml(meta, yaml_path)
        split_imgs = {}
        for split in ("train", "val", "test"):
            if meta.get(split):
                split_imgs[split] = _split_images(root, meta[split], yaml_path)
        if "train" not in split_imgs:
            raise DataError(f"{yaml_path}: key 'train' (the training image folder) is missing")
    else:
        root = path
        if not (path / "images").is_dir():
            raise DataError(f"{path}: a YOLO dataset needs data.yaml or an images/ folder")
        subdirs = [d for d in sorted((path / "images").iterdir()) if d.is_dir()]
        split_imgs = ({d.name: [Path(p) for p in list_images(d)] for d in subdirs}
                      or {"train": [Path(p) for p in list_images(path / "images")]})
        names = _names_from_classes_txt(path) or _names_from_labels(path)
    col = Collector(skip_bad)
    splits = {k: [col.run(lambda im=im: _load_sample(im, len(names))) for im in v] for k, v in split_imgs.items()}
    splits.setdefault("val", [])
    return finish(names, splits, col, "yolo", root)


def _names_from_classes_txt(path: Path) -> list[str]:
    f = path / "classes.txt"
    return [ln.strip() for ln in f.read_text().splitlines() if ln.strip()] if f.is_file() else []


def _names_from_labels(path: Path) -> list[str]:
    top = -1
    for f in (path / "labels").rglob("*.txt"):
        for line in f.read_text(errors="replace").splitlines():
            head = line.split()[:1]
            if head and head[0].isdigit():
                top = max(top, int(head[0]))
    return [f"class{i}" for i in range(top + 1)]


def _load_sample(image: Path, nc: int) -> Sample:
    w, h = image_size(image)
    lp = label_path(image)
    if lp.is_file():
        boxes, classes = parse_label(lp.read_bytes(), str(lp), nc, w, h)
    else:  # YOLO convention: an image without a label file has no objects
        boxes, classes = np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
    return Sample(image, boxes, classes, (w, h))


def write_yolo(ds: Dataset, out: Path, progress: bool = False) -> Path:
    """Write `ds` as a YOLO dataset under `out`; returns the data.yaml path."""
    out = Path(out)
    for split, samples in ds.splits.items():
        for kind in ("images", "labels"):  # an empty split still gets its folders: data.yaml names them
            (out / kind / split).mkdir(parents=True, exist_ok=True)
        used: set[str] = set()
        for s in tqdm(samples, desc=f"write {split}", disable=not progress, leave=False):
            stem = unique_stem(s.image.stem, used)
            dst = out / "images" / split / (stem + s.image.suffix.lower())
            atomic_write_bytes(dst, s.image.read_bytes())
            w, h = s.size or image_size(s.image)
            atomic_write_text(out / "labels" / split / (stem + ".txt"), label_text(s.boxes, s.classes, w, h))
    meta = {"path": ".", "train": "images/train", "val": "images/val", "nc": len(ds.names), "names": list(ds.names)}
    for split in ds.splits:
        meta.setdefault(split, f"images/{split}")
    atomic_write_text(out / "data.yaml", yaml.safe_dump(meta, sort_keys=False))
    return out / "data.yaml"


def label_text(boxes: np.ndarray, classes: np.ndarray, width: int, height: int) -> str:
    lines = []
    for (x1, y1, x2, y2), c in zip(np.asarray(boxes).tolist(), np.asarray(classes).tolist()):
        lines.append("%d %.6f %.6f %.6f %.6f\n" % (c, (x1 + x2) / 2 / width, (y1 + y2) / 2 / height,
                                                   (x2 - x1) / width, (y2 - y1) / height))
    return "".join(lines)

