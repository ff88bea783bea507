"""Real yolov5 checkpoints (made with the `yolov5` package) import with equal head outputs."""
import copy
import json

import pytest
import torch
import yaml

from edgeprune.errors import CheckpointError
from edgeprune.models.io import load_checkpoint, model_from_checkpoint
from edgeprune.models.importer import import_checkpoint

from .conftest import build_yolov5, save_like_trainer, yolov5_yaml

TOL = 1e-4


def _compare(ref, ours, imgsz=256):
    """Raw head maps and decoded predictions of the yolov5 model and the imported one on one input."""
    x = torch.rand(2, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z, raw = ref.eval()(x)
        ours.eval()
        mine = [m(f) for m, f in zip(ours.detect.m, ours.forward_features(x))]
        decoded = ours(x)
    worst = 0.0
    for r, m in zip(raw, mine):
        b, na, ny, nx, no = r.shape
        m = m.view(b, na, no, ny, nx).permute(0, 1, 3, 4, 2)
        worst = max(worst, ((m - r).abs().max() / r.abs().max()).item())
    worst = max(worst, ((decoded - z).abs().max() / z.abs().max()).item())
    return worst


@pytest.mark.parametrize("size", ["n", "s"])
def test_trainer_checkpoint_imports_with_equal_outputs(tmp_path, yolov5_yolo, size):
    src = build_yolov5(yolov5_yolo, yolov5_yaml("yolov5%s.yaml" % size))
    ref = save_like_trainer(src, tmp_path / "best.pt")
    summary = import_checkpoint(tmp_path / "best.pt", tmp_path / "model.pt")
    assert summary["format"] == "yolov5" and summary["size"] == size and summary["custom_widths"] == 0
    assert summary["params"] == sum(p.numel() for p in src.parameters())
    ckpt = load_checkpoint(tmp_path / "model.pt")            # weights_only=True
    assert ckpt["spec"]["names"] == src.names and ckpt["imported_from"]["format"] == "yolov5"
    ours = model_from_checkpoint(ckpt)
    assert _compare(ref, ours) <= TOL


def test_custom_multiples_and_a_plain_state_dict_with_its_yaml(tmp_path, yolov5_yolo):
    cfg = yaml.safe_load(yolov5_yaml("yolov5n.yaml").read_text())
    cfg.update(depth_multiple=0.5, width_multiple=0.375)
    (tmp_path / "custom.yaml").write_text(yaml.safe_dump(cfg))
    src = build_yolov5(yolov5_yolo, str(tmp_path / "custom.yaml"), nc=3, seed=2)
    # anchors that autoanchor would have changed: the imported ones must be the model's, not the yaml's
    with torch.no_grad():
        src.model[-1].anchors.mul_(1.25)
    ref = copy.deepcopy(src).eval()
    torch.save(src.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="--yaml"):
        import_checkpoint(tmp_path / "weights.pt", tmp_path / "model.pt")
    summary = import_checkpoint(tmp_path / "weights.pt", tmp_path / "model.pt", yaml_path=tmp_path / "custom.yaml")
    assert summary["size"] == "custom" and summary["names"] == ["class0", "class1", "class2"]
    ours = model_from_checkpoint(tmp_path / "model.pt")
    assert ours.spec["depth_multiple"] == 0.5 and len(ours.layers[4].m) == 3
    assert _compare(ref, ours) <= TOL


def _yaml_with(tmp_path, index, block):
    cfg = yaml.safe_load(yolov5_yaml("yolov5n.yaml").read_text())
    blocks = cfg["backbone"] + cfg["head"]
    blocks[index] = block
    cfg["backbone"], cfg["head"] = blocks[:10], blocks[10:]
    (tmp_path / "odd.yaml").write_text(yaml.safe_dump(cfg))
    return str(tmp_path / "odd.yaml")


@pytest.mark.parametrize("index,block,match", [
    (9, [-1, 1, "SPP", [1024, [5, 9, 13]]], "unknown block 'SPP' at index 9"),
    (3, [-1, 1, "Conv", [256, 3, 1]], "block 3 \\(Conv\\) has arguments"),
    (13, [-1, 3, "C3", [512, True]], "block 13 \\(C3\\)"),
])
def test_another_architecture_names_the_block(tmp_path, yolov5_yolo, capsys, index, block, match):
    src = build_yolov5(yolov5_yolo, _yaml_with(tmp_path, index, block))
    save_like_trainer(src, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match=match):
        import_checkpoint(tmp_path / "odd.pt", tmp_path / "model.pt")
    from edgeprune.cli import main
    capsys.readouterr()
    assert main(["import", str(tmp_path / "odd.pt"), "--out", str(tmp_path / "model.pt")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "odd.pt") in err
    assert not (tmp_path / "model.pt").exists()


def test_a_changed_module_the_yaml_does_not_show_is_caught(tmp_path, yolov5_yolo):
    src = build_yolov5(yolov5_yolo, yolov5_yaml("yolov5n.yaml"))
    src.model[2].m[0].add = False            # a residual add switched off in code, not in the yaml
    save_like_trainer(src, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="model.2.m.0 .*residual add"):
        import_checkpoint(tmp_path / "odd.pt", tmp_path / "model.pt")


def test_segmentation_checkpoint_is_refused(tmp_path, yolov5_yolo):
    seg = yolov5_yolo.SegmentationModel(str(yolov5_yaml("segment/yolov5n-seg.yaml")), ch=3, nc=4)
    save_like_trainer(seg, tmp_path / "seg.pt")
    with pytest.raises(CheckpointError, match="segmentation model .*detection models only"):
        import_checkpoint(tmp_path / "seg.pt", tmp_path / "model.pt")


def test_cli_json(tmp_path, yolov5_yolo, capsys):
    src = build_yolov5(yolov5_yolo, yolov5_yaml("yolov5n.yaml"))
    save_like_trainer(src, tmp_path / "best.pt")
    from edgeprune.cli import main
    assert main(["import", str(tmp_path / "best.pt"), "--out", str(tmp_path / "m.pt"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "yolov5" and out["num_classes"] == 10 and out["out"] == str(tmp_path / "m.pt")
