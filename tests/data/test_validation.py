import json
import re

import numpy as np
import pytest

from edgeprune.data.check import check, report
from edgeprune.data.dataset import load_dataset
from edgeprune.errors import DataError

BAD_LINES = {
    "class out of range": ("7 0.5 0.5 0.1 0.1", r"class 7 is out of range"),
    "box outside image": ("0 0.95 0.5 0.3 0.1", r"outside the 40x32 image"),
    "non-numeric": ("0 0.5 abc 0.1 0.1", r"non-numeric"),
    "wrong field count": ("0 0.5 0.5 0.1", r"expected 5 fields"),
}


def test_missing_dataset_dir_names_the_path(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nope")) + ".*not found"):
        load_dataset(tmp_path / "nope")


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_label_line_names_file_and_line(yolo_dir, case):
    line, why = BAD_LINES[case]
    label = yolo_dir / "labels" / "train" / "train1.txt"
    label.write_text(label.read_text() + line + "\n")  # 4th line
    with pytest.raises(DataError) as exc:
        load_dataset(yolo_dir)
    assert f"{label}:4:" in str(exc.value)
    assert re.search(why, str(exc.value))
    ds = load_dataset(yolo_dir, skip_bad=True)
    assert ds.skipped == 1 and len(ds.splits["train"]) == 2 and len(ds.problems) == 1
    assert f"{label}:4:" in ds.problems[0]


def test_corrupt_and_truncated_images(yolo_dir):
    bad = yolo_dir / "images" / "train" / "train0.png"
    bad.write_bytes(b"this is not a png")
    half = yolo_dir / "images" / "val" / "val0.png"
    half.write_bytes(half.read_bytes()[:60])
    with pytest.raises(DataError, match=re.escape(str(bad)) + ".*corrupt or undecodable"):
        load_dataset(yolo_dir)
    ds = load_dataset(yolo_dir, skip_bad=True)
    assert ds.skipped == 2 and len(ds.splits["train"]) == 2 and ds.splits["val"] == []
    assert any(str(half) in p for p in ds.problems)


def test_voc_errors_name_file_and_line(tmp_path):
    root = tmp_path / "voc"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    from PIL import Image
    Image.new("RGB", (20, 20)).save(root / "JPEGImages" / "a.jpg")
    xml = root / "Annotations" / "a.xml"
    xml.write_text("<annotation>\n<filename>a.jpg</filename>\n<object>\n<name>car</name>\n<bndbox>\n"
                   "<xmin>1</xmin><ymin>1</ymin><xmax>x9</xmax><ymax>5</ymax>\n</bndbox>\n</object>\n</annotation>\n")
    with pytest.raises(DataError, match=re.escape(f"{xml}:6: <xmax> is not a number")):
        load_dataset(root)
    xml.write_text("<annotation>\n<object>\n<name>car</name>\n<bndbox>\n"
                   "<xmin>1</xmin><ymin>1</ymin><xmax>29</xmax><ymax>5</ymax>\n</bndbox>\n</object>\n</annotation>\n")
    with pytest.raises(DataError, match=re.escape(f"{xml}:4: box") + ".*outside the 20x20 image"):
        load_dataset(root)
    xml.write_text("<annotation>\n<object>\n<name>car</name>\n</annotation>\n")
    with pytest.raises(DataError, match=re.escape(f"{xml}:4: not well-formed XML")):
        load_dataset(root)
    assert load_dataset(root, skip_bad=True).skipped == 1


def test_nwpu_errors_name_file_and_line(tmp_path):
    from PIL import Image
    root = tmp_path / "nwpu"
    (root / "positive image set").mkdir(parents=True)
    (root / "ground truth").mkdir()
    Image.new("RGB", (50, 40)).save(root / "positive image set" / "001.jpg")
    gt = root / "ground truth" / "001.txt"
    for text, why in [("(1,2),(10,20),11\n", "class 10 is out of range"),
                      ("(1,2),(10,20),1\n(1,2),(10,20)\n", "expected '\\(x1,y1\\),\\(x2,y2\\),class'"),
                      ("(1,2),(10,z),1\n", "non-numeric"), ("(1,2),(60,20),1\n", "outside the 50x40 image")]:
        gt.write_text(text)
        with pytest.raises(DataError, match=re.escape(f"{gt}:{text.count(chr(10))}") + ".*" + why):
            load_dataset(root)
    assert load_dataset(root, skip_bad=True).skipped == 1


def test_coco_errors_name_file_and_annotation(tmp_path):
    from PIL import Image
    Image.new("RGB", (30, 20)).save(tmp_path / "a.png")
    Image.new("RGB", (30, 20)).save(tmp_path / "b.png")
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 30, "height": 20},
                      {"id": 2, "file_name": "b.png", "width": 30, "height": 20}],
           "categories": [{"id": 1, "name": "ship"}],
           "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [25, 2, 10, 5]},
                           {"id": 6, "image_id": 2, "category_id": 1, "bbox": [2, 2, 10, 5]}]}
    p = tmp_path / "instances_train.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=re.escape(f"{p}: annotations[0] (id 5, image a.png)") + ".*outside"):
        load_dataset(p)
    ds = load_dataset(p, skip_bad=True)
    assert ds.skipped == 1 and [s.image.name for s in ds.splits["train"]] == ["b.png"]
    p.write_text('{"images": [\n  1,\n  oops]}')
    with pytest.raises(DataError, match=re.escape(f"{p}:3: not valid JSON")):
        load_dataset(p)


def test_check_report_counts_classes_and_bands(yolo_dir):
    label = yolo_dir / "labels" / "train" / "train2.txt"
    label.write_text(label.read_text() + "9 0.5 0.5 0.1 0.1\n")
    ds, rep = check(yolo_dir)
    assert rep["skipped"] == 1 and "train2.txt:4" in rep["problems"][0]
    tr = rep["splits"]["train"]
    assert tr["images"] == 2 and tr["boxes"] == 6
    assert tr["per_class"]["plane"]["boxes"] == 2
    # boxes are 7..8 x 9 px: sqrt(area) < 16 → tiny
    assert tr["bands"] == {"tiny": 6, "small": 0, "medium": 0, "large": 0}
    assert report(ds) == rep


def _truncate_jpeg(path, keep):
    """Save a noisy JPEG (so it is large enough to cut) and keep its first `keep` bytes (a share or a count)."""
    from PIL import Image
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (96, 120, 3), dtype=np.uint8)).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep) if keep < 1 else int(keep)])


@pytest.mark.parametrize("keep", [0.5, 2000])
def test_truncated_jpeg_fails_check_and_is_skipped(yolo_dir, keep):
    for f in (yolo_dir / "images" / "train").glob("*.png"):   # the dataset as JPEGs
        from PIL import Image
        Image.open(f).convert("RGB").save(f.with_suffix(".jpg"))
        f.unlink()
    bad = yolo_dir / "images" / "train" / "train1.jpg"
    _truncate_jpeg(bad, keep)
    assert len(load_dataset(yolo_dir).splits["train"]) == 3     # the header is intact: a plain load passes
    ds, rep = check(yolo_dir)
    assert rep["skipped"] == 1 and str(bad) in rep["problems"][0] and "truncated" in rep["problems"][0]
    assert "--set data.skip_bad=true" in rep["problems"][0]
    ds = load_dataset(yolo_dir, skip_bad=True)
    assert ds.skipped == 1 and ds.skipped_by_split == {"train": 1}
    assert [s.image.name for s in ds.splits["train"]] == ["train0.jpg", "train2.jpg"]
    with pytest.raises(DataError, match=re.escape(str(bad)) + ".*truncated"):
        load_dataset(yolo_dir, decode=True)


def test_eval_split_ignores_bad_samples_of_other_splits(yolo_dir):
    from edgeprune.config import make_config
    from edgeprune.data.dataset import load_data

    cfg = make_config("quick", {"data": {"source": str(yolo_dir)}}).data
    label = yolo_dir / "labels" / "train" / "train1.txt"
    label.write_text("9 0.5 0.5 0.1 0.1\n")
    ds = load_data(cfg, split="val")
    assert len(ds.splits["val"]) == 1 and ds.skipped == 1
    with pytest.raises(DataError, match="1 bad sample.*train split.*train1.txt:1.*--set data.skip_bad=true"):
        load_data(cfg, split="train")
    with pytest.raises(DataError, match="train1.txt:1"):
        load_data(cfg)
