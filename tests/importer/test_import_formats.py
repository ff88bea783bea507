"""Format detection on files whose classes carry the producers' module names (made here, without the
producers installed): ultralytics detection vs other tasks, state_dict without YAML, edgeprune files."""
import sys
import types
from collections import OrderedDict

import pytest
import torch

from edgeprune.errors import CheckpointError
from edgeprune.models.importer import import_checkpoint, read_source


def _fake_package(monkeypatch, module: str, *classes: str):
    """Register `module` with nn.Module subclasses named `classes` so torch.save pickles them by that name."""
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    made = {}
    for name in classes:
        cls = type(name, (torch.nn.Module,), {"__module__": module})
        setattr(sys.modules[module], name, cls)
        made[name] = cls
    return made


def _ultralytics_file(monkeypatch, tmp_path, model_cls="DetectionModel", head_cls="Detect"):
    c = _fake_package(monkeypatch, "ultralytics.nn.tasks", model_cls)
    h = _fake_package(monkeypatch, "ultralytics.nn.modules.head", head_cls)
    model = c[model_cls]()
    head = h[head_cls]()
    head.cv2 = torch.nn.Conv2d(4, 4, 1)
    model.model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), head)
    model.yaml = {"nc": 2, "scale": "n", "backbone": [], "head": []}
    model.names = {0: "car", 1: "boat"}
    model.stride = torch.tensor([8.0, 16.0, 32.0])     # a plain attribute, as ultralytics sets it
    path = tmp_path / "u.pt"
    torch.save({"epoch": -1, "model": None, "ema": model.half(), "train_args": {"task": "detect"}}, path)
    return path, model


def test_ultralytics_detection_is_extracted(monkeypatch, tmp_path):
    path, model = _ultralytics_file(monkeypatch, tmp_path)
    src = read_source(path)
    assert src["format"] == "ultralytics" and src["yaml"]["scale"] == "n" and src["names"] == {0: "car", 1: "boat"}
    assert src["stride"] == [8.0, 16.0, 32.0]
    want = model.float().state_dict()
    assert list(src["state"]) == list(want)
    assert all(torch.equal(src["state"][k], want[k]) and src["state"][k].dtype == torch.float32 for k in want)
    try:
        import edgeprune.models.ultralytics_map  # noqa: F401  (the YOLOv8-style family's converter)
    except ModuleNotFoundError:
        with pytest.raises(CheckpointError, match="ultralytics family support not installed"):
            import_checkpoint(path, tmp_path / "out.pt")


@pytest.mark.parametrize("model_cls,head_cls,what", [
    ("SegmentationModel", "Segment", "segmentation"), ("PoseModel", "Pose", "pose"),
    ("ClassificationModel", "Classify", "classification"), ("OBBModel", "OBB", "oriented-box"),
    ("DetectionModel", "Segment", "segmentation head"),
])
def test_other_tasks_are_refused(monkeypatch, tmp_path, capsys, model_cls, head_cls, what):
    path, _ = _ultralytics_file(monkeypatch, tmp_path, model_cls, head_cls)
    from edgeprune.cli import main
    assert main(["import", str(path), "--out", str(tmp_path / "out.pt")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and what in err and "detection models only" in err
    assert not (tmp_path / "out.pt").exists()


def test_unknown_producer_and_plain_containers(monkeypatch, tmp_path):
    c = _fake_package(monkeypatch, "mylab.nets", "Net")
    torch.save({"model": c["Net"]()}, tmp_path / "net.pt")
    with pytest.raises(CheckpointError, match="mylab.nets.Net; edgeprune imports"):
        read_source(tmp_path / "net.pt")
    torch.save(OrderedDict([("model.0.conv.weight", torch.zeros(1))]), tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="a plain state_dict .*--yaml"):
        read_source(tmp_path / "sd.pt")
    torch.save({"epoch": 1, "lr": 0.1}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match="not a YOLO detector"):
        read_source(tmp_path / "meta.pt")
