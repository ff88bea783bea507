"""Real ultralytics detection checkpoints (the `ultralytics` package, tests only): read without the package's
code running, the yaml / weights / names / strides extracted exactly; imported end to end where edgeprune's
YOLOv8-style family (`edgeprune.models.ultralytics_map`) is present."""
import copy

import pytest
import torch

from edgeprune.models.importer import import_checkpoint, read_source

from .conftest import randomize_bn

tasks = pytest.importorskip("ultralytics.nn.tasks", reason="the ultralytics package is not installed")
NAMES = {0: "plane", 1: "ship", 2: "car"}


def _trainer_checkpoint(cfg, path, strip):
    """As ultralytics' trainer saves (EMA in FP16, model None, hyper-parameters attached to the model as an
    IterableSimpleNamespace), then, with `strip`, as its strip_optimizer leaves best.pt."""
    from ultralytics.utils import DEFAULT_CFG_DICT, IterableSimpleNamespace
    from ultralytics.utils.torch_utils import strip_optimizer

    torch.manual_seed(0)
    model = randomize_bn(tasks.DetectionModel(cfg, nc=len(NAMES), verbose=False))
    model.names = dict(NAMES)
    model.args = IterableSimpleNamespace(**DEFAULT_CFG_DICT)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    torch.save({"epoch": 4, "best_fitness": 0.31, "model": None, "ema": copy.deepcopy(model).half(), "updates": 50,
                "optimizer": opt.state_dict(), "train_args": dict(DEFAULT_CFG_DICT),
                "train_metrics": {"metrics/mAP50(B)": 0.4}, "date": "2026-11-30T17:00:00+00:00",
                "version": "8.4.190"}, path)
    if strip:
        strip_optimizer(path)
    return copy.deepcopy(model).half().float().eval()


@pytest.mark.parametrize("cfg,strip", [("yolov8n.yaml", False), ("yolo11n.yaml", True), ("yolov5nu.yaml", True)])
def test_ultralytics_checkpoint_is_read_exactly(tmp_path, cfg, strip):
    ref = _trainer_checkpoint(cfg, tmp_path / "best.pt", strip)
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
