"""`compress --model`: a trained model is the dense one (evaluated on the data first), then the usual chain."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeprune.data.synth import NAMES


def _compress(tmp_path: Path, model: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, EDGEPRUNE_CACHE=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "edgeprune", "compress", "--preset", "quick", "--name", "byo",
           "--runs-dir", str(tmp_path / "runs"), "--model", str(model),
           "--set", "data.synth_style=aerial", *extra]   # the aerial scenes' classes (NAMES), not the quick preset's 3
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)


def _dense(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "runs" / "byo" / "stages" / "dense.done").read_text())["outputs"]


def test_an_edgeprune_checkpoint_is_the_dense_model(tmp_path):
    import torch

    from edgeprune.models.io import load_checkpoint, save_checkpoint
    from edgeprune.models.spec import new_spec
    from edgeprune.models.yolo import build_model

    torch.manual_seed(0)
    model = build_model(new_spec(len(NAMES), NAMES, "n"))
    save_checkpoint(tmp_path / "mine.pt", model)
    out = _compress(tmp_path, tmp_path / "mine.pt", "--until", "dense")
    assert out.returncode == 0, out.stdout + out.stderr
    dense = _dense(tmp_path)
    assert dense["imported_from"]["format"] == "edgeprune" and "map50" in dense["metrics"]
    assert "train" not in os.listdir(tmp_path / "runs" / "byo" / "dense")      # nothing was trained
    saved = load_checkpoint(dense["checkpoint"])
    assert all(torch.equal(saved["model"][k], v) for k, v in model.state_dict().items())
    assert str(tmp_path / "mine.pt") in (tmp_path / "runs" / "byo" / "config.yaml").read_text()

    # a model for another label set is refused with one line naming the file
    wrong = build_model(new_spec(3, None, "n"))
    save_checkpoint(tmp_path / "three.pt", wrong)
    out = _compress(tmp_path, tmp_path / "three.pt", "--until", "dense")
    assert out.returncode == 1
    assert "three.pt: the model detects 3 classes but the data" in out.stderr


@pytest.mark.slow
def test_yolov5_checkpoint_through_compress_to_a_device_bundle(tmp_path, yolov5_yolo):
    from .conftest import build_yolov5, save_like_trainer, yolov5_yaml

    src = build_yolov5(yolov5_yolo, yolov5_yaml("yolov5n.yaml"), nc=len(NAMES))
    src.names = list(NAMES)
    save_like_trainer(src, tmp_path / "best.pt")
    out = _compress(tmp_path, tmp_path / "best.pt", "--json")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    summary = json.loads(out.stdout)
    dense = _dense(tmp_path)
    assert dense["imported_from"]["format"] == "yolov5"
    assert dense["metrics"]["params"] == sum(p.numel() for p in src.parameters())
    final = summary["stages"]["finetune"]["metrics"]
    assert final["params"] < dense["metrics"]["params"]
    bundle = Path(summary["stages"]["export"]["bundle"])
    image = next((tmp_path / "cache").rglob("*.jpg"), None) or next((tmp_path / "cache").rglob("*.png"))
    det = subprocess.run([sys.executable, "-m", "edgeprune", "detect", str(bundle), "--source", str(image),
                          "--conf", "0.001", "--json"], capture_output=True, text=True, timeout=300)
    assert det.returncode == 0, det.stderr
    assert json.loads(det.stdout)


@pytest.mark.slow
def test_ultralytics_checkpoint_through_compress_to_a_device_bundle(tmp_path):
    import copy

    import torch

    tasks = pytest.importorskip("ultralytics.nn.tasks", reason="the ultralytics package is not installed")
    pytest.importorskip("edgeprune.models.ultralytics_map", reason="the YOLOv8-style family is not in this build")
    torch.manual_seed(0)
    src = tasks.DetectionModel("yolov8n.yaml", nc=len(NAMES), verbose=False)
    src.names = dict(enumerate(NAMES))
    torch.save({"epoch": 1, "model": None, "ema": copy.deepcopy(src).half()}, tmp_path / "best.pt")
    out = _compress(tmp_path, tmp_path / "best.pt", "--json")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    summary = json.loads(out.stdout)
    assert _dense(tmp_path)["imported_from"]["format"] == "ultralytics"
    bundle = Path(summary["stages"]["export"]["bundle"])
    image = next((tmp_path / "cache").rglob("*.jpg"), None) or next((tmp_path / "cache").rglob("*.png"))
    det = subprocess.run([sys.executable, "-m", "edgeprune", "detect", str(bundle), "--source", str(image),
                          "--conf", "0.001", "--json"], capture_output=True, text=True, timeout=300)
    assert det.returncode == 0, det.stderr
