import json
import os
import random

import numpy as np
import pytest

from edgeprune.errors import BundleError, DataError, DeviceError
from calib.build import build_calib
from jetson.calibrators import BatchFeeder, make_trt_calibrator
from jetson.calibset import load_calib_set
from calib.select import label_path_for, read_yolo_labels, scan_dataset, select_images, size_band
from jetson.bundle import extra_file, load_bundle
from jetson.imageio import decode_image
from jetson.preprocess import preprocess_from_manifest

pytestmark = pytest.mark.py36
Image = pytest.importorskip("PIL.Image")

def _calib_of(bundle):
    """The calib set a bundle records, read as the engine build reads it (jetson/engine.py)."""
    m = load_bundle(bundle)
    return load_calib_set(extra_file(m, "calib"), m)


# (class, w, h) boxes per image; class 2 and the "large" band are rare on purpose
LABELS = [[(0, 0.02, 0.02)], [(0, 0.1, 0.1)], [(1, 0.03, 0.03), (0, 0.05, 0.05)], [(1, 0.1, 0.12)], [],
          [(0, 0.02, 0.03)], [(1, 0.04, 0.02)], [(2, 0.03, 0.03)], [(0, 0.5, 0.4)], [(1, 0.02, 0.02)],
          [(0, 0.09, 0.1)], [(1, 0.11, 0.1)]]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("yolo")
    rng = np.random.RandomState(0)
    for split in ("train", "val"):
        os.makedirs(str(root / "images" / split))
        os.makedirs(str(root / "labels" / split))
    for i, boxes in enumerate(LABELS):
        Image.fromarray(rng.randint(0, 255, (48, 64, 3)).astype(np.uint8)).save(str(root / "images/train/im{:02d}.png"
                                                                                    .format(i)))
        with open(str(root / "labels/train/im{:02d}.txt".format(i)), "w") as f:
            for c, w, h in boxes:
                f.write("{} 0.5 0.5 {} {}\n".format(c, w, h))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(str(root / "images/val/v.png"))
    return str(root)


def test_labels_and_bands(dataset, tmp_path):
    img = os.path.join(dataset, "images", "train", "im02.png")
    assert label_path_for(img) == os.path.join(dataset, "labels", "train", "im02.txt")
    cls, w, h = read_yolo_labels(label_path_for(img))
    assert list(cls) == [1, 0]
    assert size_band(0.02, 0.02) == "small" and size_band(0.1, 0.1) == "medium" and size_band(0.5, 0.4) == "large"
    bad = tmp_path / "bad.txt"
    bad.write_text("0 0.5 0.5 0.1 0.1\n1 0.5 oops 0.1 0.1\n")
    with pytest.raises(DataError, match="bad.txt:2"):
        read_yolo_labels(str(bad))


def test_stratified_covers_every_class_and_band(dataset):
    cands = scan_dataset(dataset)
    assert len(cands) == len(LABELS)  # train split only
    strata = set(s for c in cands for s in c["strata"])
    chosen, rep = select_images(cands, 7, "stratified", seed=0)
    got = set(s for c in chosen for s in c["strata"])
    assert got == strata and rep["strata_missing"] == []
    assert set(rep["classes"]) == {"0", "1", "2"} and set(rep["bands"]) == {"small", "medium", "large"}
    assert len(chosen) == 7 and len(set(c["rel"] for c in chosen)) == 7


def test_selection_is_deterministic_and_order_independent(dataset):
    cands = scan_dataset(dataset)
    shuffled = list(cands)
    random.Random(5).shuffle(shuffled)
    for strategy in ("stratified", "random"):
        a = [c["rel"] for c in select_images(cands, 6, strategy, seed=1)[0]]
        b = [c["rel"] for c in select_images(shuffled, 6, strategy, seed=1)[0]]
        assert a == b
    seeds = set(tuple(c["rel"] for c in select_images(cands, 6, "random", seed=s)[0]) for s in range(5))
    assert len(seeds) > 1


def test_too_small_n_reports_missing_strata(dataset):
    chosen, rep = select_images(scan_dataset(dataset), 2, "stratified")
    assert len(chosen) == 2 and rep["strata_missing"]


@pytest.fixture
def calibrated(bundle_copy, dataset):
    calib = build_calib(dataset, bundle_copy, n=5, strategy="stratified", batch_size=2, seed=0)
    return bundle_copy, calib


def test_build_writes_batches_preprocessed_like_the_bundle(calibrated, dataset):
    bundle, calib = calibrated
    m = load_bundle(bundle)  # still valid, model sha untouched
    assert m["extra_files"]["calib"] == "calib/manifest.json"
    assert calib["num_images"] == 5 and calib["num_batches"] == 3 and calib["padded"] == 1
    size = m["preprocess"]["size"]
    batch0 = np.load(os.path.join(bundle, "calib", "batch_00000.npy"))
    assert batch0.shape == (2, 3, size[0], size[1]) and batch0.dtype == np.float32
    first = os.path.join(calib["data"], calib["images"][0]["file"])
    x, _ = preprocess_from_manifest(decode_image(first), m)
    np.testing.assert_array_equal(batch0[0], x[0])
    loaded = _calib_of(bundle)
    assert len(loaded["_batches"]) == 3 and len(loaded["sha256"]) == 64


def test_other_preprocessing_is_refused(calibrated):
    bundle, _ = calibrated
    path = os.path.join(bundle, "manifest.json")
    with open(path) as f:
        raw = json.load(f)
    raw["preprocess"]["pad_value"] = 0
    with open(path, "w") as f:
        json.dump(raw, f)
    with pytest.raises(DeviceError, match="preprocessed differently.*pad_value"):
        _calib_of(bundle)


def _duck_gpu():
    device = {}

    def alloc(nbytes):
        device[1000] = np.zeros(nbytes // 4, np.float32)
        return 1000

    def htod(ptr, host):
        device[ptr][:] = host.reshape(-1)
    return device, alloc, htod


def test_feeder_yields_each_batch_once_then_none(calibrated, tmp_path):
    bundle, _ = calibrated
    calib = _calib_of(bundle)
    device, alloc, htod = _duck_gpu()
    feeder = BatchFeeder(calib, alloc, htod, cache_path=str(tmp_path / "calib.cache"))
    seen = []
    while True:
        ptrs = feeder.get_batch(["images"])
        if ptrs is None:
            break
        assert ptrs == [1000]
        seen.append(device[1000].copy())
    assert len(seen) == 3 and feeder.get_batch(["images"]) is None
    for i, arr in enumerate(seen):
        np.testing.assert_array_equal(arr, np.load(calib["_batches"][i]).reshape(-1))
    assert feeder.read_calibration_cache() is None
    feeder.write_calibration_cache(b"TRT-8201-EntropyCalibration2\nimages: 3c010a14\n")
    again = BatchFeeder(calib, alloc, htod, cache_path=str(tmp_path / "calib.cache"))
    assert again.read_calibration_cache() == b"TRT-8201-EntropyCalibration2\nimages: 3c010a14\n"


def test_corrupt_batch_is_named(calibrated):
    bundle, _ = calibrated
    calib = _calib_of(bundle)
    with open(calib["_batches"][0], "wb") as f:
        f.write(b"not npy")
    _, alloc, htod = _duck_gpu()
    with pytest.raises(BundleError, match="batch_00000.npy"):
        BatchFeeder(calib, alloc, htod).get_batch()


def test_trt_calibrator_class_wiring(calibrated):
    """make_trt_calibrator subclasses whatever trt provides; here plain classes stand in for the pybind ones."""
    class Base(object):
        def __init__(self):
            self.base_init = True

    class FakeTrt(object):
        IInt8EntropyCalibrator2 = Base
        IInt8MinMaxCalibrator = Base

    bundle, _ = calibrated
    device, alloc, htod = _duck_gpu()

    class Mem(object):
        closed = False

        def sync(self):
            pass

        def close(self):
            Mem.closed = True
    mem = Mem()
    mem.alloc, mem.htod = alloc, htod
    cal = make_trt_calibrator(FakeTrt, _calib_of(bundle), "minmax", None, mem)
    assert isinstance(cal, Base) and cal.base_init and cal.get_batch_size() == 2
    assert [cal.get_batch(["images"]) for _ in range(4)] == [[1000], [1000], [1000], None]
    assert cal.read_calibration_cache() is None
    cal.close()
    assert Mem.closed
    with pytest.raises(DeviceError, match="calibrator"):
        make_trt_calibrator(FakeTrt, _calib_of(bundle), "percentile", None, mem)


def _feed_all(feeder):
    out = []
    while feeder.get_batch(["images"]) is not None:
        out.append(feeder._host.copy())
    return out


def test_feeder_rebatches_to_what_the_engine_reads(calibrated):
    """Files hold 2 images; a [1,3,H,W] engine reads one image per get_batch, a calibration profile of 3 reads 3."""
    bundle, calib = calibrated
    loaded = _calib_of(bundle)
    images = np.concatenate([np.load(p) for p in loaded["_batches"]])[:calib["num_images"]]  # without padding
    _, alloc, htod = _duck_gpu()
    one = BatchFeeder(loaded, alloc, htod, input_shape=[1] + calib["shape"][1:])
    assert one.get_batch_size() == 1 and one.nbytes == images[0].nbytes
    np.testing.assert_array_equal(np.concatenate(_feed_all(one)), images)
    three = BatchFeeder(loaded, alloc, htod, input_shape=[3] + calib["shape"][1:])
    got = _feed_all(three)
    assert [b.shape[0] for b in got] == [3, 3]
    np.testing.assert_array_equal(np.concatenate(got), np.concatenate([images, images[:1]]))  # short batch cycles
    with pytest.raises(DeviceError, match="engine reads"):
        BatchFeeder(loaded, alloc, htod, input_shape=[1, 3, 32, 32])


def test_feeder_checks_each_file_against_the_manifest_sha256(calibrated):
    bundle, _ = calibrated
    calib = _calib_of(bundle)
    np.save(calib["_batches"][1], np.load(calib["_batches"][1]) * 0.5)  # a valid .npy, other numbers
    _, alloc, htod = _duck_gpu()
    feeder = BatchFeeder(calib, alloc, htod)
    assert feeder.get_batch() == [1000]
    with pytest.raises(BundleError, match="batch_00001.npy: sha256 differs from the calib manifest"):
        feeder.get_batch()


def test_calib_manifest_without_batch_sha256_is_refused(calibrated):
    bundle, _ = calibrated
    path = os.path.join(bundle, "calib", "manifest.json")
    with open(path) as f:
        raw = json.load(f)
    del raw["batches"][2]["sha256"]
    with open(path, "w") as f:
        json.dump(raw, f)
    with pytest.raises(BundleError, match=r"batches\[2\].sha256"):
        _calib_of(bundle)


def test_calibrator_callbacks_never_raise_into_tensorrt(calibrated, tmp_path):
    """TensorRT calls these from noexcept C++: errors are kept on the calibrator, calibration ends cleanly."""
    class FakeTrt(object):
        IInt8EntropyCalibrator2 = object
        IInt8MinMaxCalibrator = object

    bundle, _ = calibrated
    calib = _calib_of(bundle)
    _, alloc, htod = _duck_gpu()

    class Mem(object):
        def sync(self):
            raise RuntimeError("cudaErrorLaunchFailure")
    mem = Mem()
    mem.alloc, mem.htod = alloc, htod
    (tmp_path / "a-file").write_bytes(b"")
    cal = make_trt_calibrator(FakeTrt, calib, "entropy", str(tmp_path / "a-file" / "c.cache"), mem)
    assert cal.get_batch(["images"]) is None and cal.get_batch(["images"]) is None
    assert isinstance(cal.error, DeviceError) and "get_batch (batch 1 of 3): RuntimeError: cudaErrorLaunchFailure" \
        in str(cal.error)
    first = cal.error
    cal.write_calibration_cache(b"table")  # its folder is a file: recorded, not raised; the first error stays
    assert cal.error is first and cal.read_calibration_cache() is None
    cache = tmp_path / "c.cache"
    cache.write_bytes(b"TRT-8001-EntropyCalibration2\n")
    cal2 = make_trt_calibrator(FakeTrt, calib, "entropy", str(cache), mem)
    got = cal2.read_calibration_cache()
    assert got == b"TRT-8001-EntropyCalibration2\n" and cal2._cache is got  # kept alive for TensorRT 8.0.1
