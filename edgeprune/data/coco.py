"""COCO detection json: one `instances_<split>.json` per split (images, annotations with bbox = [x, y, w, h],
categories with arbitrary ids). Reader, parser and writer.

Layouts read: a single .json file (its split is guessed from the name: train/val/test, else train), or a folder
holding `annotations/*.json` or `*.json`. Image `file_name`s are looked up next to the json, under
`images/<split>/`, `images/`, `<split>/` and the dataset root, in that order.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import DataError
from ..fsio import atomic_write_bytes, atomic_write_json
from .samples import Collector, Dataset, Sample, check_box, finish, image_size, unique_stem


class CocoImage:
    def __init__(self, file_name: str, width: int, height: int, boxes: np.ndarray, classes: np.ndarray) -> None:
        self.file_name, self.width, self.height, self.boxes, self.classes = file_name, width, height, boxes, classes


def _num(v: object, where: str, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise DataError(f"{where}: {what} must be a finite number, got {v!r}")
    return float(v)


def parse_coco(data: bytes | str, source: str) -> tuple[list[str], list[CocoImage], list[tuple[str, DataError]]]:
    """Parse a COCO json → (category names in id order, images, [(file_name, error)] for bad annotations).

    Structural errors (not json, missing keys, duplicate ids) raise DataError naming the file (and line for
    syntax errors); errors confined to one image's annotations are returned per image so a caller can skip it.
    """
    try:
        doc = json.loads(data)
    except json.JSONDecodeError as exc:
        raise DataError(f"{source}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DataError(f"{source}: not a UTF-8 JSON document ({exc.__class__.__name__})") from None
    if not isinstance(doc, dict):
        raise DataError(f"{source}: a COCO file is a JSON object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise DataError(f"{source}: key '{key}' (a list) is missing; this is not a COCO detection file")
    cat_ids: dict[int, str] = {}
    for i, cat in enumerate(doc["categories"]):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or not isinstance(cat.get("name"), str):
            raise DataError(f"{source}: categories[{i}] needs an integer 'id' and a string 'name'")
        if cat["id"] in cat_ids:
            raise DataError(f"{source}: categories[{i}]: duplicate category id {cat['id']}")
        cat_ids[cat["id"]] = cat["name"]
    order = sorted(cat_ids)
    index = {cid: k for k, cid in enumerate(order)}
    images: dict[object, dict] = {}
    for i, im in enumerate(doc["images"]):
        where = f"{source}: images[{i}]"
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise DataError(f"{where} needs an 'id' and a string 'file_name'")
        if not isinstance(im["id"], (int, str)) or im["id"] in images:
            raise DataError(f"{where}: image id {im['id']!r} is a duplicate or not an int/str")
        w, h = im.get("width"), im.get("height")
        if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0 and not isinstance(w, bool)
                and not isinstance(h, bool)):
            raise DataError(f"{where} ({im['file_name']}): width/height must be positive integers, got {w!r}x{h!r}")
        images[im["id"]] = {"file_name": im["file_name"], "w": w, "h": h, "boxes": [], "classes": [], "error": None}
    for i, ann in enumerate(doc["annotations"]):
        where = f"{source}: annotations[{i}]"
        if not isinstance(ann, dict):
            raise DataError(f"{where} is not an object")
        aid = ann.get("id", "?")
        img_id = ann.get("image_id")
        if not isinstance(img_id, (int, str)) or img_id not in images:
            raise DataError(f"{where} (id {aid}): image_id {img_id!r} is not in 'images'")
        rec = images[img_id]
        if rec["error"] is not None:
            continue
        if ann.get("iscrowd", 0):  # crowd regions are not single objects; evaluation ignores them too
            continue
        try:
            cid = ann.get("category_id")
            if not isinstance(cid, int) or cid not in index:
                raise DataError(f"{where} (id {aid}, image {rec['file_name']}): category_id {cid!r} is not in "
                                f"'categories' {order}")
            bbox = ann.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise DataError(f"{where} (id {aid}, image {rec['file_name']}): bbox must be [x, y, w, h], "
                                f"got {bbox!r}")
            x, y, bw, bh = (_num(v, f"{where} (id {aid})", "bbox value") for v in bbox)
            box = check_box((x, y, x + bw, y + bh), rec["w"], rec["h"], f"{where} (id {aid}, image {rec['file_name']})")
        except DataError as exc:
            rec["error"] = exc
            continue
        rec["boxes"].append(box)
        rec["classes"].append(index[cid])
    out, bad = [], []
    for rec in images.values():
        if rec["error"] is not None:
            bad.append((rec["file_name"], rec["error"]))
            continue
        out.append(CocoImage(rec["file_name"], rec["w"], rec["h"], np.array(rec["boxes"], np.float32).reshape(-1, 4),
                             np.array(rec["classes"], np.int64)))
    return [cat_ids[c] for c in order], out, bad


def _split_of(json_path: Path) -> str:
    stem = json_path.stem.lower()
    for split in ("train", "val", "test"):
        if split in stem:
            return split
    return "train"


def _find_image(root: Path, json_dir: Path, split: str, name: str) -> Path:
    for base in (json_dir, root / "images" / split, root / "images", root / split, root):
        p = base / name
        if p.is_file():
            return p
    raise DataError(f"{json_dir}: image {name!r} not found next to the json, under images/{split}/, images/, "
                    f"{split}/ or {root}")


def load_coco(path: Path, skip_bad: bool = False) -> Dataset:
    path = Path(path)
    if path.is_file():
        jsons = [path]
    else:
        jsons = sorted((path / "annotations").glob("*.json")) if (path / "annotations").is_dir() else []
        jsons = jsons or sorted(path.glob("*.json"))
    if not jsons:
        raise DataError(f"{path}: no COCO .json found (looked in annotations/ and the folder itself)")
    col = Collector(skip_bad)
    names: list[str] | None = None
    splits: dict[str, list[Sample | None]] = {}
    for jp in jsons:
        json_dir = jp.parent
        root = json_dir.parent if json_dir.name == "annotations" else json_dir
        cats, images, bad = parse_coco(jp.read_bytes(), str(jp))
        if names is None:
            names = cats
        elif cats != names:
            raise DataError(f"{jp}: categories {cats} differ from those of {jsons[0].name} {names}")
        for _, err in bad:
            col.record(err)
        split = _split_of(jp)
        splits.setdefault(split, []).extend(
            col.run(lambda im=im, split=split, root=root, jd=json_dir: _sample(im, split, root, jd)) for im in images)
    splits.setdefault("val", [])
    return finish(names or [], splits, col, "coco", path if path.is_dir() else path.parent)


def _sample(im: CocoImage, split: str, root: Path, json_dir: Path) -> Sample:
    p = _find_image(root, json_dir, split, im.file_name)
    real = image_size(p)
    if real != (im.width, im.height):
        raise DataError(f"{p}: the image is {real[0]}x{real[1]} but the json says {im.width}x{im.height}")
    return Sample(p, im.boxes, im.classes, (im.width, im.height))


def coco_dict(samples: list[Sample], names: list[str], file_names: list[str]) -> dict:
    images, anns = [], []
    for i, (s, fn) in enumerate(zip(samples, file_names), 1):
        w, h = s.size or image_size(s.image)
        images.append({"id": i, "file_name": fn, "width": int(w), "height": int(h)})
        for (x1, y1, x2, y2), c in zip(s.boxes.tolist(), s.classes.tolist()):
            bw, bh = x2 - x1, y2 - y1
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c) + 1,
                         "bbox": [round(x1, 3), round(y1, 3), round(bw, 3), round(bh, 3)],
                         "area": round(bw * bh, 3), "iscrowd": 0})
    return {"images": images, "annotations": anns,
            "categories": [{"id": k + 1, "name": n, "supercategory": "object"} for k, n in enumerate(names)]}


def write_coco(ds: Dataset, out: Path, progress: bool = False) -> Path:
    """Write `annotations/instances_<split>.json` + `images/<split>/` (images copied)."""
    out = Path(out)
    for split, samples in ds.splits.items():
        used: set[str] = set()
        file_names = []
        for s in tqdm(samples, desc=f"write {split}", disable=not progress, leave=False):
            fn = unique_stem(s.image.stem, used) + s.image.suffix.lower()
            file_names.append(fn)
            atomic_write_bytes(out / "images" / split / fn, s.image.read_bytes())
        atomic_write_json(out / "annotations" / f"instances_{split}.json", coco_dict(samples, ds.names, file_names))
    return out
