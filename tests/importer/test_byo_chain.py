"""Bring your own YOLO, as a user does it: checkpoints made by the real producers (the ultralytics package's
YOLOv8n and YOLO11n, the yolov5 repository's v5n; random weights from their stock YAMLs, saved the way their
trainers save) go `edgeprune import` -> `compress --model` on a tiny budget -> bundle -> the device's `detect`.
Skipped without the producer package (CI installs neither ultralytics nor OpenCV, which yolov5's models need)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeprune.data.synth import NAMES

from .conftest import build_yolov5, save_like_trainer, save_like_ultralytics, yolov5_yaml

pytestmark = pytest.mark.slow

# the aerial scenes (their classes are NAMES), few of them, one sparse and one fine-tune epoch
TINY = ["--preset", "quick", "--set", "data.synth_style=aerial", "--set", "data.synth_train=32",
        "--set", "data.synth_val=8", "--set", "sparse.epochs=1", "--set", "finetune.epochs=1",
        "--set", "export.parity_images=2"]


def _edgeprune(*args: str, env: dict | None = None, timeout: int = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeprune", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("producer,yaml,layout,extra", [
    ("ultralytics", "yolov8n.yaml", "anchor_free_decoded", []),
    # YOLO11's attention heads are frozen, not pruned (docs/models.md): the graph needs skip_unsupported
    ("ultralytics", "yolo11n.yaml", "anchor_free_decoded", ["--set", "prune.skip_unsupported=true"]),
    ("yolov5", "yolov5n.yaml", "yolov5_decoded", []),
])
def test_producer_checkpoint_import_compress_detect(tmp_path, request, producer, yaml, layout, extra):
    src = tmp_path / "best.pt"
    if producer == "ultralytics":
        tasks = pytest.importorskip("ultralytics.nn.tasks", reason="the ultralytics package is not installed")
        save_like_ultralytics(tasks, yaml, src, dict(enumerate(NAMES)), strip=True)
    else:
        model = build_yolov5(request.getfixturevalue("yolov5_yolo"), yolov5_yaml(yaml), nc=len(NAMES))
        model.names = list(NAMES)
        save_like_trainer(model, src)

    imp = _edgeprune("import", str(src), "--out", str(tmp_path / "model.pt"), "--json")
    assert imp.returncode == 0, imp.stderr
    imported = json.loads(imp.stdout)
    assert imported["format"] == producer and imported["num_classes"] == len(NAMES)

    env = dict(os.environ, EDGEPRUNE_CACHE=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    out = _edgeprune("compress", *TINY, *extra, "--name", "byo", "--runs-dir", str(tmp_path / "runs"),
                     "--model", str(tmp_path / "model.pt"), "--json", env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    stages = json.loads(out.stdout)["stages"]
    assert stages["dense"]["imported_from"]["format"] == "edgeprune"      # the file `import` wrote
    assert stages["dense"]["metrics"]["params"] == imported["params"]
    assert stages["finetune"]["metrics"]["params"] < imported["params"]
    bundle = Path(stages["export"]["bundle"])
    assert json.loads((bundle / "manifest.json").read_text())["model"]["output_layout"] == layout

    image = next((tmp_path / "cache").rglob("val_000000.png"))
    det = _edgeprune("detect", str(bundle), "--source", str(image), "--conf", "0.001", "--json", timeout=300)
    assert det.returncode == 0, det.stderr
    assert "detections" in det.stdout
