"""`edgeprune train` / `edgeprune eval` end to end on the quick preset's synthetic scenes (in-process, real code)."""
import json
import subprocess
import sys

import pytest

from edgeprune.cli import main
from edgeprune.data.synth import ensure_synthetic
from tests.quick_floors import check_learned


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A few aerial scenes: enough to run a training command, not to learn (the quick_dense fixture learns)."""
    return ensure_synthetic(tmp_path_factory.mktemp("synth"), 4, 2, 96, seed=2, progress=False)


@pytest.mark.slow
def test_train_then_eval_json(quick_dense, capsys):
    out, data_root, res = quick_dense          # `train --preset quick --json` (tests/conftest.py)
    assert set(res) >= {"map50", "map", "ap_small", "per_class", "best_map50", "anchors"}
    check_learned(res)
    assert (out / "config.yaml").exists() and (out / "anchors.json").exists()

    assert main(["train", "--preset", "quick", "--data-root", str(data_root), "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err

    code = main(["eval", str(out / "best.pt"), "--preset", "quick", "--data-root", str(data_root), "--json",
                 "--latency-iters", "2"])
    assert code == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["imgsz"] == 128 and ev["images"] == 32 and ev["params"] > 0 and ev["flops"] > 0
    assert ev["latency"]["median_ms"] > 0 and set(ev["per_class"]) == set(res["per_class"])
    # best.pt holds the EMA weights of the best evaluated epoch: eval reproduces that mAP exactly
    assert ev["map50"] == pytest.approx(res["best_map50"], abs=1e-9)


def test_eval_missing_checkpoint_is_one_line_error(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope.pt"), "--data", str(tmp_path)]) == 1
    assert "nope.pt" in capsys.readouterr().err


def test_train_cli_module_is_py36_light():
    code = "import sys, edgeprune.train.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_train_and_eval_anchor_free_family(data_dir, tmp_path, capsys):
    out = tmp_path / "v8"
    code = main(["train", "--data", str(data_dir), "--imgsz", "64", "--epochs", "1", "--out", str(out), "--family",
                 "yolov8", "--set", "train.batch=2", "--set", "train.mosaic=0", "--quiet", "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert res["anchors"] == {"changed": False}
    assert "family: yolov8" in (out / "config.yaml").read_text()
    assert main(["eval", str(out / "best.pt"), "--data", str(data_dir), "--json", "--latency-iters", "2"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["map50"] == pytest.approx(res["map50"], abs=1e-9)
