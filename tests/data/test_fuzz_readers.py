"""Property tests of the label readers. Acceptance: generated valid files parse to exactly the boxes and
classes they were written from. Rejection: specific invalid lines raise a DataError naming file and line.
Robustness (issue 12): whatever bytes a label file holds, readers raise DataError or nothing else."""
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeprune.data.coco import parse_coco
from edgeprune.data.nwpu import parse_gt
from edgeprune.data.voc import parse_voc_xml
from edgeprune.data.yolo import parse_label
from edgeprune.errors import DataError

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
tokens = st.sampled_from(["0", "1", "3", "-1", "0.5", "1e9", "-0", "nan", "inf", "-inf", "1e-400", "9" * 30,
                          "0x1", "abc", "", " ", "\t", ",", "(", ")", ".", "e", "1_0", "\u00e9", "\x00"])
lines = st.lists(st.lists(tokens, max_size=8).map(" ".join), max_size=6).map("\n".join)
nwpu_lines = st.lists(st.lists(tokens, max_size=7).map(",".join), max_size=6).map("\n".join)


def _only_data_error(fn, *args):
    try:
        fn(*args)
    except DataError:
        pass


@SETTINGS
@given(st.one_of(st.binary(max_size=200), lines.map(str.encode)))
def test_yolo_label_reader(data):
    _only_data_error(parse_label, data, "x.txt", 3, 64, 48)


@SETTINGS
@given(st.one_of(st.binary(max_size=200), nwpu_lines.map(lambda s: s.encode("utf-8", "replace"))))
def test_nwpu_reader(data):
    _only_data_error(parse_gt, data, "001.txt", 10, 64, 48)


xml_parts = st.sampled_from(["<annotation>", "</annotation>", "<object>", "</object>", "<name>", "</name>", "car",
                             "<bndbox>", "</bndbox>", "<xmin>", "</xmin>", "<xmax>", "</xmax>", "<ymin>", "</ymin>",
                             "<ymax>", "</ymax>", "<size>", "</size>", "<width>", "</width>", "<height>",
                             "</height>", "<filename>", "</filename>", "1", "7", "nan", "inf", "-3", "1e999",
                             "&amp;", "&bogus;", "<!DOCTYPE a [<!ENTITY x 'y'>]>", "\n", "<?xml version='1.0'?>"])


@SETTINGS
@given(st.one_of(st.binary(max_size=200), st.lists(xml_parts, max_size=40).map(lambda p: "".join(p).encode())))
def test_voc_reader(data):
    _only_data_error(parse_voc_xml, data, "a.xml")


values = st.sampled_from(["1", "7", "0", "-3", "nan", "inf", "1e999", "2.5", "x", "", "99999999999999999999"])


@SETTINGS
@given(st.lists(values, min_size=6, max_size=6), st.text(max_size=4))
def test_voc_reader_on_well_formed_documents_with_odd_values(v, name):
    xml = ("<annotation><size><width>%s</width><height>%s</height></size><object><name>%s</name><bndbox>"
           "<xmin>%s</xmin><ymin>%s</ymin><xmax>%s</xmax><ymax>%s</ymax></bndbox></object></annotation>"
           % (v[0], v[1], name.replace("<", "").replace("&", ""), v[2], v[3], v[4], v[5]))
    _only_data_error(parse_voc_xml, xml.encode("utf-8", "replace"), "a.xml")


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(
        st.sampled_from(["id", "image_id", "category_id", "bbox", "file_name", "width", "height", "name",
                         "iscrowd"]), inner, max_size=6)), max_leaves=20)
coco_docs = st.fixed_dictionaries({"images": st.lists(json_values, max_size=3),
                                   "annotations": st.lists(json_values, max_size=3),
                                   "categories": st.lists(json_values, max_size=3)})


@SETTINGS
@given(st.one_of(st.binary(max_size=200), json_values.map(json.dumps).map(str.encode),
                 coco_docs.map(json.dumps).map(str.encode)))
def test_coco_reader(data):
    _only_data_error(parse_coco, data, "instances.json")


@SETTINGS
@given(st.integers(0, 1000), st.integers(1, 30), st.sampled_from(["nan", "1e999", "-0.0", "x"]))
def test_coco_reader_on_well_formed_documents_with_odd_values(image_id, width, bad):
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": width, "height": 10}],
           "categories": [{"id": 1, "name": "a"}],
           "annotations": [{"id": 1, "image_id": image_id, "category_id": 1, "bbox": [1, 1, 2, bad]}]}
    text = json.dumps(doc).replace('"%s"' % bad, bad if bad != "x" else '"x"')
    _only_data_error(parse_coco, text.encode(), "instances.json")


# ---------------------------------------------------------------- acceptance: valid files, expected values
W, H, NC = 64, 48, 3


@st.composite
def pixel_boxes(draw, min_size=0, max_size=6):
    """Integer xyxy boxes inside a W x H image (at least 1 px wide and high) with classes 0..NC-1."""
    out = []
    for _ in range(draw(st.integers(min_size, max_size))):
        x1, y1 = draw(st.integers(0, W - 1)), draw(st.integers(0, H - 1))
        x2, y2 = draw(st.integers(x1 + 1, W)), draw(st.integers(y1 + 1, H))
        out.append((draw(st.integers(0, NC - 1)), x1, y1, x2, y2))
    return out


def _check(parsed, rows, offset=0):
    boxes, classes = parsed
    assert classes.tolist() == [r[0] for r in rows]
    assert boxes.shape == (len(rows), 4)
    assert np.allclose(boxes, np.array([r[1:] for r in rows], np.float32).reshape(-1, 4), atol=1e-3)


@SETTINGS
@given(pixel_boxes(), st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_valid_yolo_labels_parse_to_their_boxes(rows, newline, blank_lines):
    lines = ["%d %r %r %r %r" % (c, (x1 + x2) / 2 / W, (y1 + y2) / 2 / H, (x2 - x1) / W, (y2 - y1) / H)
             for c, x1, y1, x2, y2 in rows]
    if blank_lines:
        lines = [x for line in lines for x in (line, "  ")]
    _check(parse_label(newline.join(lines).encode(), "x.txt", NC, W, H), rows)


@SETTINGS
@given(pixel_boxes())
def test_valid_nwpu_ground_truth_parses_to_its_boxes(rows):
    text = "\n".join("(%d,%d),(%d,%d),%d" % (x1, y1, x2, y2, c + 1) for c, x1, y1, x2, y2 in rows)
    _check(parse_gt(text.encode(), "001.txt", NC, W, H), rows)


names = st.from_regex(r"[a-z][a-z0-9 _-]{0,10}[a-z0-9]", fullmatch=True)


@SETTINGS
@given(pixel_boxes(), st.lists(names, min_size=NC, max_size=NC, unique=True), st.booleans())
def test_valid_voc_annotations_parse_to_their_boxes(rows, cls_names, with_size):
    objs = "".join("<object><name>%s</name><difficult>0</difficult><bndbox><xmin>%d</xmin><ymin>%d</ymin>"
                   "<xmax>%d</xmax><ymax>%d</ymax></bndbox></object>\n" % (cls_names[c], x1 + 1, y1 + 1, x2, y2)
                   for c, x1, y1, x2, y2 in rows)
    size = "<size><width>%d</width><height>%d</height><depth>3</depth></size>" % (W, H) if with_size else ""
    rec = parse_voc_xml("<annotation><filename>a.png</filename>%s\n%s</annotation>" % (size, objs), "a.xml")
    assert rec.filename == "a.png" and rec.size == ((W, H) if with_size else None)
    assert [(o[0], tuple(o[1])) for o in rec.objects] == [(cls_names[c], (x1, y1, x2, y2)) for c, x1, y1, x2, y2 in rows]


@SETTINGS
@given(st.lists(pixel_boxes(max_size=3), min_size=1, max_size=4),
       st.lists(st.integers(1, 10 ** 6), min_size=NC, max_size=NC, unique=True), st.randoms())
def test_valid_coco_documents_parse_to_their_boxes(per_image, cat_ids, rnd):
    cats = [{"id": cid, "name": "c%d" % cid} for cid in cat_ids]
    rnd.shuffle(cats)               # category order in the file is not the class order: ids sorted are
    images = [{"id": 100 + i, "file_name": "im%d.png" % i, "width": W, "height": H} for i in range(len(per_image))]
    anns = [{"image_id": 100 + i, "category_id": cat_ids[c], "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0}
            for i, rows in enumerate(per_image) for c, x1, y1, x2, y2 in rows]
    for k, a in enumerate(anns):
        a["id"] = k
    rnd.shuffle(anns)
    got_names, got, bad = parse_coco(json.dumps({"images": images, "annotations": anns, "categories": cats}),
                                     "instances.json")
    order = sorted(cat_ids)
    assert got_names == ["c%d" % cid for cid in order] and bad == []
    assert [im.file_name for im in got] == [im["file_name"] for im in images]
    for im, rows in zip(got, per_image):
        want = sorted((order.index(cat_ids[c]), x1, y1, x2, y2) for c, x1, y1, x2, y2 in rows)
        have = sorted((int(k), *map(float, b)) for k, b in zip(im.classes, im.boxes))
        assert have == [tuple(map(float, w)) for w in want]


# ---------------------------------------------------------------- rejection: specific bad input, named error
@pytest.mark.parametrize("text, named", [
    ("0 0.5 0.5 0.2", "x.txt:1: expected 5 fields"),
    ("0 0.5 0.5 0.2 abc", "x.txt:1: non-numeric field"),
    ("1.5 0.5 0.5 0.2 0.2", "x.txt:1: class '1.5' is not an integer"),
    ("3 0.5 0.5 0.2 0.2", "x.txt:1: class 3 is out of range 0..2"),
    ("-1 0.5 0.5 0.2 0.2", "x.txt:1: class -1 is out of range"),
    ("0 0.5 0.5 nan 0.2", "x.txt:1: box"),
    ("0 0.9 0.5 0.4 0.2", "lies outside the 64x48 image"),
    ("0 0.5 0.5 0 0.2", "zero or negative width/height"),
    ("0 0.5 0.5 0.2 0.2\n\n2 0.5 0.5 0.2", "x.txt:3: expected 5 fields"),
])
def test_specific_bad_yolo_lines_are_rejected_naming_file_and_line(text, named):
    with pytest.raises(DataError) as info:
        parse_label(text.encode(), "x.txt", NC, W, H)
    assert named in str(info.value)


def test_bad_bytes_and_bad_lines_of_the_other_readers_are_named():
    with pytest.raises(DataError, match="x.txt: not UTF-8"):
        parse_label(b"0 0.5 \xff 0.2 0.2", "x.txt", NC, W, H)
    with pytest.raises(DataError, match=r"001.txt:2: expected '\(x1,y1\),\(x2,y2\),class'"):
        parse_gt(b"(1,1),(5,5),1\n(1,1),(5,5)", "001.txt", NC, W, H)
    with pytest.raises(DataError, match=r"001.txt:1 \(NWPU classes are 1-based"):
        parse_gt(b"(1,1),(5,5),0", "001.txt", NC, W, H)
    with pytest.raises(DataError, match="a.xml:1: <object> has no <bndbox>"):
        parse_voc_xml(b"<annotation><object><name>car</name></object></annotation>", "a.xml")
    with pytest.raises(DataError, match="<xmin> is not a number"):
        parse_voc_xml(b"<annotation><object><name>car</name><bndbox><xmin>x</xmin><ymin>1</ymin><xmax>2</xmax>"
                      b"<ymax>2</ymax></bndbox></object></annotation>", "a.xml")
    with pytest.raises(DataError, match="instances.json: key 'annotations'"):
        parse_coco(b'{"images": [], "categories": []}', "instances.json")
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}], "categories": [{"id": 7, "name": "a"}],
           "annotations": [{"id": 3, "image_id": 1, "category_id": 7, "bbox": [60, 1, 10, 2]}]}
    names_, images, bad = parse_coco(json.dumps(doc), "instances.json")    # one bad box: that image is set aside
    assert names_ == ["a"] and images == [] and bad[0][0] == "a.png"
    assert "annotations[0] (id 3, image a.png)" in str(bad[0][1]) and "lies outside" in str(bad[0][1])
