"""Real TensorRT: build, cache and run an engine for the tiny bundle; compare with onnxruntime.
Skips cleanly where tensorrt (and a GPU) is absent, which is the case on the CI host."""
import shutil

import numpy as np
import pytest

pytestmark = [pytest.mark.trt, pytest.mark.py36]
trt = pytest.importorskip("tensorrt")


@pytest.fixture
def bundle(tiny_bundle, tmp_path):
    dst = str(tmp_path / "b")
    shutil.copytree(tiny_bundle, dst, ignore=shutil.ignore_patterns("engines"))
    return dst


def test_engine_build_cache_and_parity(bundle):
    from device_helpers import scene
    from jetson.engine import get_engine
    from jetson.profiles import get_profile
    from jetson.runtime import load_detector

    logs = []
    path, prec = get_engine(__import__("jetson.bundle").bundle.load_bundle(bundle), get_profile("host"), "fp32",
                            log=logs.append)
    again, _ = get_engine(__import__("jetson.bundle").bundle.load_bundle(bundle), get_profile("host"), "fp32",
                          log=logs.append)
    assert again == path and prec == "fp32"
    assert sum("building" in m for m in logs) == 1
    trt_det = load_detector(bundle, backend="tensorrt", precision="fp32")
    ort_det = load_detector(bundle, backend="onnxruntime", threads=1)
    img = scene(120, 160)
    x, _ = ort_det.preprocess(img)
    a, b = trt_det.infer(x)[0], ort_det.infer(x)[0]
    assert np.abs(a - b).max() < 1e-2
    assert set(trt_det.backend.last_split) == {"h2d", "compute", "d2h"}
    trt_det.close()
    ort_det.close()
