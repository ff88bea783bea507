"""`compress --model`: a trained model is the dense one (evaluated on the data first), then the usual chain
(real producer checkpoints through the whole chain: test_byo_chain.py)."""
import json
import os
import subprocess
import sys
from pathlib import Path

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
