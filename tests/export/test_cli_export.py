import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgeprune.cli import main
from edgeprune.models.io import save_checkpoint
from edgeprune.models.spec import save_spec
from tests.export.export_helpers import IMGSZ, RECOMBINATION


def _model_dir(path, model, recombination=RECOMBINATION):
    path.mkdir()
    save_spec(model.spec, path / "arch.json")
    torch.save(model.state_dict(), path / "weights.pt")
    (path / "recombination.json").write_text(json.dumps(recombination))
    (path / "metrics.json").write_text(json.dumps({"map50": 0.61, "map": 0.32}))
    return path


@pytest.mark.slow
def test_export_pruned_dir_with_int8_and_nms_then_verify(tmp_path, pruned_model, capfd):
    src = _model_dir(tmp_path / "pruned", pruned_model)
    calib = tmp_path / "calib"
    calib.mkdir()
    np.save(calib / "batch_00000.npy", np.random.default_rng(0).random((4, 3, IMGSZ, IMGSZ), dtype=np.float32))
    out = tmp_path / "bundle"
    code = main(["export", str(src), "--out", str(out), "--imgsz", str(IMGSZ), "--nms-plugin", "--int8",
                 "--calib", str(calib), "--parity-images", "3", "--json"])
    stdout = capfd.readouterr().out
    assert code == 0
    res = json.loads(stdout)  # stdout holds only the JSON (onnxsim's chatter goes to stderr)
    m = res["manifest"]
    assert m["model"]["nms"] == "efficient_nms" and m["extra_files"]["int8_model"] == "model.int8.onnx"
    assert m["metrics"]["map50"] == 0.61 and m["metrics"]["params"] == sum(p.numel() for p in pruned_model.parameters())
    assert m["metrics"]["flops"] > 0 and m["recombination"]["junctions"] == 2
    assert res["verify"]["conv"] == 60 and res["parity"]["max_abs_diff"] <= 1e-3
    assert res["int8"]["calib_images"] == 4 and res["int8"]["latency_ms_int8"]["mean"] > 0
    assert main(["verify", str(out), "--json"]) == 0
    assert json.loads(capfd.readouterr().out)["verify"]["junctions"] == 2


def test_export_checkpoint_and_verify_plain_output(tmp_path, dense_model, capfd):
    from PIL import Image

    from tests.export.export_helpers import scenes

    save_checkpoint(tmp_path / "m.pt", dense_model, imgsz=IMGSZ)
    (tmp_path / "imgs").mkdir()
    for i, img in enumerate(scenes(3)[0]):
        Image.fromarray(img).save(tmp_path / "imgs" / f"{i}.png")
    assert main(["export", str(tmp_path / "m.pt"), "--out", str(tmp_path / "b"), "--parity-images", "2",
                 "--images", str(tmp_path / "imgs"), "--parity-atol", "0.002", "--parity-min-match", "0.98"]) == 0
    assert "parity max|diff|" in capfd.readouterr().out
    parity = json.loads((tmp_path / "b" / "reports" / "parity.json").read_text())
    assert parity["images"] == 2 and parity["image_source"] == str(tmp_path / "imgs")
    assert parity["atol"] == 0.002 and parity["min_match"] == 0.98     # the relaxed tolerances are on record
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["model"]["input_shape"] == [1, 3, IMGSZ, IMGSZ]
    assert main(["verify", str(tmp_path / "b")]) == 0
    assert "sha256 ok" in capfd.readouterr().out
    with open(tmp_path / "b" / "model.onnx", "ab") as f:
        f.write(b"\0")
    assert main(["verify", str(tmp_path / "b")]) == 1
    assert "sha256 does not match" in capfd.readouterr().err


def test_config_file_and_set_reach_the_export(tmp_path, dense_model):
    """export builds its config like every command: --config's export section and model.imgsz, --set over it."""
    save_checkpoint(tmp_path / "m.pt", dense_model, imgsz=IMGSZ)
    (tmp_path / "c.yaml").write_text(f"model:\n  imgsz: {IMGSZ + 32}\nexport:\n  opset: 14\n  parity_images: 3\n")
    assert main(["export", str(tmp_path / "m.pt"), "--out", str(tmp_path / "b"), "--config", str(tmp_path / "c.yaml"),
                 "--set", "export.parity_images=1"]) == 0
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["model"]["opset"] == 14 and manifest["model"]["input_shape"] == [1, 3, IMGSZ + 32, IMGSZ + 32]
    assert json.loads((tmp_path / "b" / "reports" / "parity.json").read_text())["images"] == 1


def test_bad_inputs_give_one_line_errors(tmp_path, pruned_model, capfd):
    (tmp_path / "garbled.pt").write_bytes(b"PK\x03\x04 not a zip")
    assert main(["export", str(tmp_path / "garbled.pt"), "--out", str(tmp_path / "b")]) == 1
    assert "garbled.pt" in capfd.readouterr().err
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "b")]) == 1
    assert "model not found" in capfd.readouterr().err
    save_checkpoint(tmp_path / "m.pt", pruned_model)
    assert main(["export", str(tmp_path / "m.pt"), "--out", str(tmp_path / "b"), "--int8"]) == 1
    assert "--calib" in capfd.readouterr().err
    wrong = json.loads(json.dumps(RECOMBINATION))
    wrong["junctions"][0]["kept"] = [0, 1, 2]
    src = _model_dir(tmp_path / "wrong", pruned_model, wrong)
    assert main(["export", str(src), "--out", str(tmp_path / "b"), "--imgsz", str(IMGSZ)]) == 1
    assert "/layers.2/cv1/conv/Conv" in capfd.readouterr().err
    assert not (tmp_path / "b" / "manifest.json").exists()
    assert main(["verify", str(tmp_path / "nobundle")]) == 1
    assert "no manifest" in capfd.readouterr().err


def test_state_dict_that_does_not_fit_names_the_file(tmp_path, pruned_model, dense_model, capfd):
    src = _model_dir(tmp_path / "mixed", pruned_model)
    torch.save(dense_model.state_dict(), src / "weights.pt")
    assert main(["export", str(src), "--out", str(tmp_path / "b")]) == 1
    err = capfd.readouterr().err
    assert "weights.pt: does not fit" in err and "arch.json" in err


def test_json_stdout_is_clean_in_a_real_process(tmp_path, dense_model):
    save_checkpoint(tmp_path / "m.pt", dense_model, imgsz=IMGSZ)
    out = subprocess.run([sys.executable, "-m", "edgeprune", "export", str(tmp_path / "m.pt"), "--out",
                          str(tmp_path / "b"), "--parity-images", "1", "--json"],
                         capture_output=True, text=True, env={"PYTHONPATH": ".", "OMP_NUM_THREADS": "1",
                                                              "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["manifest"]["schema_version"] == 1


@pytest.mark.slow
def test_really_pruned_model_exports_and_verifies(tmp_path):
    """h/prune's pruner output (arch.json + weights.pt + recombination.json) through export and verify."""
    from edgeprune.models.spec import new_spec
    from edgeprune.models.yolo import build_model
    from edgeprune.prune.run import prune_checkpoint
    from edgeprune.prune.apply import random_bn_stats
    from tests.export.export_helpers import BN_SPREAD, NAMES

    model = random_bn_stats(build_model(new_spec(len(NAMES), NAMES, size="n")), 3, spread=BN_SPREAD).eval()
    save_checkpoint(tmp_path / "dense.pt", model, imgsz=IMGSZ)
    prune_checkpoint(tmp_path / "dense.pt", tmp_path / "pruned", global_ratio=0.5, imgsz=IMGSZ)
    rec = json.loads((tmp_path / "pruned" / "recombination.json").read_text())
    assert rec["junctions"]
    assert main(["export", str(tmp_path / "pruned"), "--out", str(tmp_path / "b"), "--imgsz", str(IMGSZ),
                 "--parity-images", "2"]) == 0
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["recombination"]["junctions"] == len(rec["junctions"])
    verify = json.loads((tmp_path / "b" / "reports" / "verify.json").read_text())
    assert verify["ok"] and verify["checked"]["junctions"] == len(rec["junctions"])
    assert main(["verify", str(tmp_path / "b")]) == 0


def test_compress_stage_call_uses_config_and_dataset_truth(tmp_path, dense_model):
    """The compress pipeline calls export_bundle(model_dir, out, cfg.export, dataset, metrics=..., imgsz=...)."""
    from types import SimpleNamespace

    from PIL import Image

    from edgeprune.config import make_config
    from edgeprune.export.bundler import export_bundle
    from tests.export.export_helpers import scenes

    images, truth = scenes(3, seed=7)
    samples = []
    for i, (img, (boxes, classes)) in enumerate(zip(images, truth)):
        Image.fromarray(img).save(tmp_path / f"{i}.png")
        samples.append(SimpleNamespace(image=tmp_path / f"{i}.png", boxes=boxes, classes=classes))
    dataset = SimpleNamespace(names=["plane", "ship", "tank"], splits={"train": [], "val": samples})
    save_checkpoint(tmp_path / "m.pt", dense_model)
    cfg = make_config("quick", {"model": {"imgsz": 64}, "export": {"opset": 14, "parity_images": 2}})
    res = export_bundle(tmp_path / "m.pt", tmp_path / "b", cfg.export, dataset, metrics={"map50": 0.4, "map": 0.2},
                        imgsz=cfg.model.imgsz)
    assert res["verify"]["status"] == "passed" and res["manifest"]["model"]["opset"] == 14
    assert res["parity"]["images"] == 2 and res["parity"]["image_source"] == "dataset val split"
    assert res["parity"]["map_torch"] == res["parity"]["map_ort"] or \
        abs(res["parity"]["map_torch"]["map"] - res["parity"]["map_ort"]["map"]) <= 0.001
    assert res["manifest"]["metrics"]["map50"] == 0.4
    json.dumps(res)  # the stage records it in its done-marker
