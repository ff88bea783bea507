"""Real ultralytics detection checkpoints (the `ultralytics` package, tests only): read without the package's
code running, the yaml / weights / names / strides extracted exactly; imported end to end where edgeprune's
YOLOv8-style family (`edgeprune.models.ultralytics_map`) is present."""

import pytest
import torch

from edgeprune.models.importer import import_checkpoint, read_source

from .conftest import save_like_ultralytics

tasks = pytest.importorskip("ultralytics.nn.tasks", reason="the ultralytics package is not installed")
NAMES = {0: "plane", 1: "ship", 2: "car"}


@pytest.mark.parametrize("cfg,strip", [("yolov8n.yaml", False), ("yolo11n.yaml", True), ("yolov5nu.yaml", True)])
def test_ultralytics_checkpoint_is_read_exactly(tmp_path, cfg, strip):
    ref = save_like_ultralytics(tasks, cfg, tmp_path / "best.pt", NAMES, strip)
    src = read_source(tmp_path / "best.pt")
    assert src["format"] == "ultralytics" and src["names"] == NAMES
    assert src["yaml"] == ref.yaml and src["stride"] == ref.stride.tolist()
    want = ref.state_dict()
    assert list(src["state"]) == list(want)
    assert all(torch.equal(src["state"][k], want[k]) for k in want)

    pytest.importorskip("edgeprune.models.ultralytics_map", reason="the YOLOv8-style family is not in this build")
    from edgeprune.models.io import model_from_checkpoint

    summary = import_checkpoint(tmp_path / "best.pt", tmp_path / "model.pt")
    assert summary["format"] == "ultralytics" and summary["names"] == list(NAMES.values())
    ours = model_from_checkpoint(tmp_path / "model.pt").eval()
    x = torch.rand(2, 3, 128, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = ref(x)[0]
        mine = ours(x)
    mine = mine.transpose(1, 2) if mine.shape[1] != theirs.shape[1] else mine
    assert ((mine - theirs).abs().max() / theirs.abs().max()).item() <= 1e-4
