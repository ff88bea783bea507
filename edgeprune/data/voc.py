"""Pascal VOC xml (and DIOR, which ships it): `Annotations/<id>.xml`, `JPEGImages/<id>.jpg`,
`ImageSets/Main/{train,val,test}.txt`. Reader, parser (with line numbers) and writer.

DIOR variants read as well: xml under `Annotations/Horizontal Bounding Boxes/`, images under
`JPEGImages-trainval/` and `JPEGImages-test/`, split lists under `ImageSets/Main/` or `Main/`.
VOC boxes are 1-based inclusive pixel indices: x1 = xmin - 1, x2 = xmax in our 0-based continuous pixels.
"""
from __future__ import annotations

from pathlib import Path
from xml.parsers import expat

import numpy as np
from tqdm import tqdm

from jetson.imageio import IMAGE_EXTS

from ..errors import DataError
from ..fsio import atomic_write_bytes, atomic_write_text
from .samples import Collector, Dataset, Sample, check_box, finish, image_size, unique_stem

VOC_NAMES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
             "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
DIOR_NAMES = ["airplane", "airport", "baseballfield", "basketballcourt", "bridge", "chimney", "dam",
              "Expressway-Service-area", "Expressway-toll-station", "golffield", "groundtrackfield", "harbor",
              "overpass", "ship", "stadium", "storagetank", "tenniscourt", "trainstation", "vehicle", "windmill"]


class _Node:
    __slots__ = ("tag", "line", "text", "children")

    def __init__(self, tag: str, line: int) -> None:
        self.tag, self.line, self.text, self.children = tag, line, "", []

    def find(self, tag: str) -> _Node | None:
        return next((c for c in self.children if c.tag == tag), None)


def _parse_xml(data: bytes, source: str) -> _Node:
    """Tiny expat tree builder that keeps the line of every element (ElementTree does not)."""
    parser = expat.ParserCreate()
    root = _Node("#document", 0)
    stack = [root]

    def start(tag: str, _attrs: dict) -> None:
        node = _Node(tag, parser.CurrentLineNumber)
        stack[-1].children.append(node)
        stack.append(node)

    def end(_tag: str) -> None:
        stack.pop()

    def text(t: str) -> None:
        stack[-1].text += t

    def no_entities(*_args: object) -> None:  # no DTD entity declarations: no "billion laughs"
        raise DataError(f"{source}: XML entity declarations are not allowed in annotations")

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, text
    parser.EntityDeclHandler = no_entities
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise DataError(f"{source}:{exc.lineno}: not well-formed XML ({expat.ErrorString(exc.code)})") from None
    except (TypeError, ValueError) as exc:
        raise DataError(f"{source}: cannot read as XML ({exc})") from None
    if not root.children:
        raise DataError(f"{source}: empty XML document")
    return root.children[0]


class VocRecord:
    def __init__(self, filename: str | None, size: tuple[int, int] | None,
                 objects: list[tuple[str, tuple, int]]) -> None:
        self.filename, self.size, self.objects = filename, size, objects   # objects: (name, xyxy, line)


def _int_field(node: _Node | None, tag: str, source: str, parent: _Node) -> float:
    child = node.find(tag) if node is not None else None
    if child is None:
        raise DataError(f"{source}:{parent.line}: <{parent.tag}> has no <{tag}>")
    try:
        return float(child.text.strip())
    except ValueError:
        raise DataError(f"{source}:{child.line}: <{tag}> is not a number ({child.text.strip()[:30]!r})") from None


def parse_voc_xml(data: bytes | str, source: str) -> VocRecord:
    """Parse one VOC annotation → filename, (w, h) if given, [(class name, xyxy 0-based, line)]."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    root = _parse_xml(data, source)
    if root.tag != "annotation":
        raise DataError(f"{source}:{root.line}: root element is <{root.tag}>, expected <annotation>")
    fn = root.find("filename")
    size = None
    size_node = root.find("size")
    if size_node is not None:
        w = _int_field(size_node, "width", source, size_node)
        h = _int_field(size_node, "height", source, size_node)
        if not (0 < w < 1e6 and 0 < h < 1e6 and w == int(w) and h == int(h)):
            raise DataError(f"{source}:{size_node.line}: <size> must hold positive integer width/height, "
                            f"got {w}x{h}")
        size = (int(w), int(h))
    objects = []
    for obj in root.children:
        if obj.tag != "object":
            continue
        name = obj.find("name")
        if name is None or not name.text.strip():
            raise DataError(f"{source}:{obj.line}: <object> has no <name>")
        bnd = obj.find("bndbox")
        if bnd is None:
            raise DataError(f"{source}:{obj.line}: <object> has no <bndbox>")
        xmin, ymin, xmax, ymax = (_int_field(bnd, t, source, bnd) for t in ("xmin", "ymin", "xmax", "ymax"))
        objects.append((name.text.strip(), (xmin - 1, ymin - 1, xmax, ymax), bnd.line))
    return VocRecord(fn.text.strip() if fn is not None and fn.text.strip() else None, size, objects)


def _ann_dir(root: Path) -> Path:
    hbb = root / "Annotations" / "Horizontal Bounding Boxes"
    return hbb if hbb.is_dir() else root / "Annotations"


def _image_dirs(root: Path) -> list[Path]:
    return [root / "JPEGImages"] + sorted(p for p in root.glob("JPEGImages-*") if p.is_dir())


def _class_names(root: Path, records: dict[str, VocRecord]) -> list[str]:
    f = root / "classes.txt"
    if f.is_file():
        return [ln.strip() for ln in f.read_text().splitlines() if ln.strip()]
    used = {o[0] for r in records.values() for o in r.objects}
    for known in (DIOR_NAMES, VOC_NAMES):
        if used <= set(known):
            return list(known)
    return sorted(used)


def load_voc(path: Path, skip_bad: bool = False) -> Dataset:
    root = Path(path)
    ann_dir = _ann_dir(root)
    if not ann_dir.is_dir():
        raise DataError(f"{root}: a VOC/DIOR dataset needs an Annotations/ folder")
    col = Collector(skip_bad)
    records: dict[str, VocRecord] = {}
    for xml in sorted(ann_dir.glob("*.xml")):
        rec = col.run(lambda xml=xml: parse_voc_xml(xml.read_bytes(), str(xml)))
        if rec is not None:
            records[xml.stem] = rec
    names = _class_names(root, records)
    index = {n: i for i, n in enumerate(names)}
    sets_dir = next((d for d in (root / "ImageSets" / "Main", root / "Main") if d.is_dir()), None)
    split_ids: dict[str, list[str]] = {}
    if sets_dir is not None:
        for split in ("train", "val", "test"):
            f = sets_dir / f"{split}.txt"
            if f.is_file():
                split_ids[split] = [ln.split()[0] for ln in f.read_text().splitlines() if ln.strip()]
    if not split_ids:  # no split lists: everything is training data
        split_ids = {"train": sorted(records)}
    splits: dict[str, list[Sample | None]] = {}
    for split, ids in split_ids.items():
        out = splits.setdefault(split, [])
        for i in ids:
            xml = ann_dir / f"{i}.xml"
            if i not in records:
                if not xml.is_file():
                    col.record(DataError(f"{sets_dir / (split + '.txt')}: id {i!r} has no {xml}"))
                continue  # else: its parse error was already recorded
            out.append(col.run(lambda i=i, xml=xml: _sample(root, records[i], i, xml, index)))
    splits.setdefault("val", [])
    return finish(names, splits, col, "voc", root)


def _sample(root: Path, rec: VocRecord, ident: str, xml: Path, index: dict[str, int]) -> Sample:
    candidates = [d / rec.filename for d in _image_dirs(root)] if rec.filename else []
    candidates += [d / (ident + ext) for d in _image_dirs(root) for ext in IMAGE_EXTS]
    image = next((p for p in candidates if p.is_file()), None)
    if image is None:
        raise DataError(f"{xml}: its image ({rec.filename or ident + '.jpg'}) is not in JPEGImages*/")
    w, h = rec.size or image_size(image)
    if rec.size is not None:
        image_size(image)  # still check the file decodes
    boxes, classes = [], []
    for name, box, line in rec.objects:
        where = f"{xml}:{line}"
        if name not in index:
            raise DataError(f"{where}: class {name!r} is not in the class list {list(index)} "
                            f"(add it to classes.txt)")
        boxes.append(check_box(box, w, h, where))
        classes.append(index[name])
    return Sample(image, np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64), (w, h))


def voc_xml(filename: str, width: int, height: int, boxes: np.ndarray, classes: np.ndarray, names: list[str]) -> str:
    objs = []
    for (x1, y1, x2, y2), c in zip(np.asarray(boxes).tolist(), np.asarray(classes).tolist()):
        xmin, ymin = int(round(x1)) + 1, int(round(y1)) + 1
        xmax, ymax = max(xmin, int(round(x2))), max(ymin, int(round(y2)))
        objs.append(f"  <object>\n    <name>{_esc(names[c])}</name>\n    <pose>Unspecified</pose>\n"
                    f"    <truncated>0</truncated>\n    <difficult>0</difficult>\n    <bndbox>\n"
                    f"      <xmin>{xmin}</xmin>\n      <ymin>{ymin}</ymin>\n      <xmax>{xmax}</xmax>\n"
                    f"      <ymax>{ymax}</ymax>\n    </bndbox>\n  </object>\n")
    return (f"<annotation>\n  <folder>JPEGImages</folder>\n  <filename>{_esc(filename)}</filename>\n"
            f"  <size>\n    <width>{width}</width>\n    <height>{height}</height>\n    <depth>3</depth>\n  </size>\n"
            + "".join(objs) + "</annotation>\n")


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_voc(ds: Dataset, out: Path, progress: bool = False) -> Path:
    """Write Annotations/, JPEGImages/ (images copied, original format kept), ImageSets/Main/<split>.txt and
    classes.txt (VOC has no class list of its own; the reader uses it to keep the class order)."""
    out = Path(out)
    used: set[str] = set()
    for split, samples in ds.splits.items():
        ids = []
        for s in tqdm(samples, desc=f"write {split}", disable=not progress, leave=False):
            ident = unique_stem(s.image.stem, used)
            ids.append(ident)
            fn = ident + s.image.suffix.lower()
            w, h = s.size or image_size(s.image)
            atomic_write_bytes(out / "JPEGImages" / fn, s.image.read_bytes())
            atomic_write_text(out / "Annotations" / f"{ident}.xml", voc_xml(fn, w, h, s.boxes, s.classes, ds.names))
        atomic_write_text(out / "ImageSets" / "Main" / f"{split}.txt", "".join(i + "\n" for i in ids))
    atomic_write_text(out / "classes.txt", "".join(n + "\n" for n in ds.names))
    return out
