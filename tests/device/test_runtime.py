import numpy as np
import pytest

from device_helpers import scene
from edgeprune.errors import DeviceError
from jetson.runtime import load_detector


@pytest.fixture(scope="module")
def detector(tiny_bundle):
    d = load_detector(tiny_bundle, backend="onnxruntime", threads=1)
    yield d
    d.close()


@pytest.mark.py36
def test_detect_boxes_are_sane(detector):
    img = scene(120, 160)
    dets = detector.detect(img)
    assert detector.backend_name == "onnxruntime" and "CPUExecutionProvider" in detector.description
    assert dets, "the tiny bundle's head is biased to produce detections"
    for d in dets:
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= 160 and 0 <= y1 <= y2 <= 120
        assert 0.25 < d["score"] <= 1.0
        assert d["class_name"] == detector.classes[d["class_id"]]
    scores = [d["score"] for d in dets]
    # class-aware NMS still keeps (and max_det cuts) in one descending score order across classes
    assert scores == sorted(scores, reverse=True)
    assert set(detector.last_timing) >= {"preprocess", "infer", "postprocess", "total"}


@pytest.mark.py36
def test_thresholds_and_max_det(detector):
    img = scene(120, 160, seed=1)
    many = detector.detect(img, conf=0.05)
    few = detector.detect(img, conf=0.6)
    assert len(many) >= len(detector.detect(img)) >= len(few)
    assert len(detector.detect(img, conf=0.05, max_det=3)) == min(3, len(many))


@pytest.mark.py36
def test_batch_equals_single_and_fixed_batch_is_split(detector):
    imgs = [scene(120, 160, seed=s) for s in range(3)]
    batch = detector.detect_batch(imgs)
    assert batch == [detector.detect(i) for i in imgs]


@pytest.mark.py36
def test_bad_inputs(detector):
    with pytest.raises(DeviceError, match="HxWx3 uint8"):
        detector.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(DeviceError, match="input_shape"):
        detector.infer(np.zeros((1, 3, 10, 10), np.float32))
    with pytest.raises(DeviceError, match="precision"):
        load_detector(detector.manifest, precision="int4")


def test_onnxruntime_matches_torch_model(tmp_path):
    """The device pipeline (ORT + numpy pre/post) gives the torch model's detections."""
    torch = pytest.importorskip("torch")
    from device_helpers import make_bundle
    from jetson import postprocess as post
    from jetson.preprocess import preprocess_from_manifest

    root, model = make_bundle(str(tmp_path), seed=3)
    det = load_detector(root, backend="onnxruntime", threads=1)
    img = scene(100, 140, seed=3)
    x, meta = preprocess_from_manifest(img, det.manifest)
    ort_raw = det.infer(x)[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(ort_raw - ref).max() < 1e-3
    boxes, scores, cls = post.postprocess(ref, 0.25, 0.45, 300)[0]
    dets = det.detect(img)
    assert len(dets) == len(scores)
    # many boxes tie on score, so match boxes as sets rather than in NMS order
    got = np.array([d["box"] for d in dets])
    want = post.scale_boxes(boxes, meta)
    dist = np.abs(got[:, None, :] - want[None, :, :]).max(-1)
    assert dist.min(1).max() < 0.05 and dist.min(0).max() < 0.05
    det.close()
