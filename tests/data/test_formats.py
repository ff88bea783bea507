import json

import numpy as np
import pytest
from PIL import Image

from edgeprune.data.convert import convert
from edgeprune.data.dataset import detect_format, load_dataset
from edgeprune.data.nwpu import NWPU_NAMES
from edgeprune.errors import DataError


def _same(a, b, tol=1.0):
    assert a.names == b.names
    assert sorted(a.splits) == sorted(b.splits)
    for split in ("train", "val"):
        sa = sorted(a.splits[split], key=lambda s: s.image.stem)
        sb = sorted(b.splits[split], key=lambda s: s.image.stem)
        assert [s.image.stem for s in sa] == [s.image.stem for s in sb]
        for x, y in zip(sa, sb):
            assert x.classes.tolist() == y.classes.tolist()
            assert np.abs(x.boxes - y.boxes).max() <= tol


def test_yolo_loader_reads_boxes_in_pixels(yolo_dir):
    ds = load_dataset(yolo_dir)
    assert ds.format == "yolo" and ds.names == ["plane", "ship", "tank"] and ds.skipped == 0
    s = ds.splits["train"][1]
    assert s.size == (40, 32)
    assert np.allclose(s.boxes[0], [2, 4, 10, 13], atol=1e-3) and s.classes.tolist() == [0, 1, 2]
    assert load_dataset(yolo_dir / "data.yaml").splits["val"][0].image == ds.splits["val"][0].image


def test_round_trip_yolo_coco_voc_yolo_within_one_pixel(yolo_dir, tmp_path):
    src = load_dataset(yolo_dir)
    coco, _ = convert(yolo_dir, tmp_path / "coco", "coco")
    assert detect_format(tmp_path / "coco") == "coco"
    voc, _ = convert(tmp_path / "coco", tmp_path / "voc", "voc")
    assert detect_format(tmp_path / "voc") == "voc"
    back, _ = convert(tmp_path / "voc", tmp_path / "yolo2", "yolo")
    assert (coco.format, voc.format, back.format) == ("yolo", "coco", "voc")
    _same(src, load_dataset(tmp_path / "coco"), tol=1e-3)
    _same(src, load_dataset(tmp_path / "voc"))
    _same(src, load_dataset(tmp_path / "yolo2"))


def test_round_trip_through_nwpu(yolo_dir, tmp_path):
    convert(yolo_dir, tmp_path / "nwpu", "nwpu")
    assert detect_format(tmp_path / "nwpu") == "nwpu"
    _same(load_dataset(yolo_dir), load_dataset(tmp_path / "nwpu"))


def test_empty_split_survives_conversion(yolo_dir, tmp_path):
    import shutil
    for kind in ("images", "labels"):
        shutil.rmtree(yolo_dir / kind / "val")
        (yolo_dir / kind / "val").mkdir()
    for to in ("yolo", "coco", "voc", "nwpu"):
        convert(yolo_dir, tmp_path / f"out_{to}", to)
        back = load_dataset(tmp_path / f"out_{to}")
        assert len(back.splits["train"]) == 3 and back.splits["val"] == [], to


def test_convert_refuses_a_non_empty_destination(yolo_dir, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(DataError, match="not empty"):
        convert(yolo_dir, tmp_path / "busy", "coco")


def _nwpu_fixture(root):
    (root / "positive image set").mkdir(parents=True)
    (root / "ground truth").mkdir()
    for i in range(1, 11):
        Image.fromarray(np.full((60, 80, 3), 90, np.uint8)).save(root / "positive image set" / f"{i:03d}.jpg")
        # the real files look like this: no spaces, 1-based classes, a trailing blank line
        (root / "ground truth" / f"{i:03d}.txt").write_text(
            f"({5 + i},{6}),({30 + i},{40}),{i}\n(50, 10), (70, 20), 10\n\n")
    return root


def test_nwpu_reader_on_the_original_layout(tmp_path):
    root = _nwpu_fixture(tmp_path / "NWPU VHR-10 dataset")
    ds = load_dataset(root)
    assert ds.format == "nwpu" and ds.names == NWPU_NAMES
    # no split lists: every 5th image (sorted) is validation
    assert [s.image.stem for s in ds.splits["val"]] == ["005", "010"]
    assert len(ds.splits["train"]) == 8
    s = ds.splits["val"][1]
    assert s.classes.tolist() == [9, 9] and s.size == (80, 60)
    assert s.boxes.tolist() == [[15, 6, 40, 40], [50, 10, 70, 20]]
    assert {c for x in ds.all_samples() for c in x.classes.tolist()} == set(range(10))


def test_voc_reader_reads_dior_layout(tmp_path):
    root = tmp_path / "DIOR"
    hbb = root / "Annotations" / "Horizontal Bounding Boxes"
    hbb.mkdir(parents=True)
    (root / "JPEGImages-trainval").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(root / "JPEGImages-trainval" / "00001.jpg")
    (hbb / "00001.xml").write_text(
        "<annotation><filename>00001.jpg</filename><size><width>50</width><height>50</height></size>"
        "<object><name>storagetank</name><bndbox><xmin>3</xmin><ymin>4</ymin><xmax>20</xmax><ymax>30</ymax>"
        "</bndbox></object></annotation>")
    (root / "ImageSets" / "Main" / "train.txt").write_text("00001\n")
    ds = load_dataset(root)
    assert ds.format == "voc" and ds.names[15] == "storagetank" and len(ds.names) == 20
    assert ds.splits["train"][0].boxes.tolist() == [[2, 3, 20, 30]]
    assert ds.splits["train"][0].classes.tolist() == [15]


def test_coco_reader_maps_category_ids_and_ignores_crowd(tmp_path):
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "a.png")
    doc = {"images": [{"id": 7, "file_name": "a.png", "width": 30, "height": 20}],
           "categories": [{"id": 9, "name": "ship"}, {"id": 3, "name": "plane"}],
           "annotations": [{"id": 1, "image_id": 7, "category_id": 9, "bbox": [1, 2, 10, 5]},
                           {"id": 2, "image_id": 7, "category_id": 3, "bbox": [0, 0, 4, 4], "iscrowd": 1}]}
    (tmp_path / "instances_val.json").write_text(json.dumps(doc))
    ds = load_dataset(tmp_path / "instances_val.json")
    assert ds.names == ["plane", "ship"]
    s = ds.splits["val"][0]
    assert s.classes.tolist() == [1] and s.boxes.tolist() == [[1, 2, 11, 7]]


def test_format_detection_errors_say_what_to_do(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no known dataset layout"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="cannot tell the dataset format"):
        load_dataset(tmp_path / "x.csv")
    with pytest.raises(DataError, match="unknown format 'kitti'"):
        load_dataset(tmp_path / "empty", format="kitti")


def test_yolo_folder_without_data_yaml_and_names_as_mapping(yolo_dir):
    (yolo_dir / "data.yaml").unlink()
    ds = load_dataset(yolo_dir)
    assert ds.names == ["class0", "class1", "class2"] and len(ds.splits["train"]) == 3
    (yolo_dir / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\n"
                                        "names: {0: plane, 1: ship, 2: tank}\n")
    assert load_dataset(yolo_dir).names == ["plane", "ship", "tank"]
    (yolo_dir / "data.yaml").write_text("train: images/train\nnc: 4\nnames: [a, b, c]\n")
    with pytest.raises(DataError, match="nc=4 but 'names' lists 3"):
        load_dataset(yolo_dir)
    (yolo_dir / "data.yaml").write_text("train: images/train\nnames: [a, b\nval: images/val\n")
    with pytest.raises(DataError, match=r"data.yaml: line 3, column 4: not valid YAML"):     # the line to fix
        load_dataset(yolo_dir)
    (yolo_dir / "data.yaml").write_bytes(b"\xff\xfe names")            # not text: an error, not a traceback
    with pytest.raises(DataError, match=r"data.yaml: not valid YAML \('utf-8' codec"):
        load_dataset(yolo_dir)
