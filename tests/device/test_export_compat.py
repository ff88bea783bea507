"""Bundles written by the export side (edgeprune.export, branch h/export) load and run here. Skips until that
package is merged into the tree under test."""
import numpy as np
import pytest

pytest.importorskip("torch")
export = pytest.importorskip("edgeprune.export.bundler")

from edgeprune.config import ExportConfig  # noqa: E402
from device_helpers import CLASSES, scene  # noqa: E402
from jetson.bundle import load_bundle  # noqa: E402
from jetson.runtime import load_detector  # noqa: E402


@pytest.mark.slow
def test_exported_bundles_load_and_run(tmp_path):
    from edgeprune.models.io import save_checkpoint
    from edgeprune.models.spec import new_spec
    from edgeprune.models.yolo import build_model

    ckpt = str(tmp_path / "model.pt")
    save_checkpoint(ckpt, build_model(new_spec(len(CLASSES), CLASSES)).eval())
    for dynamic in (False, True):
        out = str(tmp_path / "bundle_dyn{}".format(int(dynamic)))
        export.export_bundle(ckpt, out, ExportConfig(dynamic_batch=dynamic, parity_images=1), imgsz=64)
        m = load_bundle(out)
        assert (m["model"]["input_shape"][0] == -1) == dynamic
        with load_detector(out, backend="onnxruntime", threads=1) as det:
            imgs = [scene(50, 70, seed=s) for s in range(3)]
            assert det.detect_batch(imgs, conf=0.0001) == [det.detect(i, conf=0.0001) for i in imgs]
            assert np.isfinite(det.infer(det.preprocess(imgs[0])[0])[0]).all()
