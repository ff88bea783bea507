"""Property tests (issue 12): whatever bytes a label file holds, readers raise DataError or nothing else."""
import json

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
