"""ultralytics_map.convert against the real ultralytics package (tests only; AGPL, never imported by
edgeprune): models built from the stock yamls with random weights give the same raw head outputs and
decoded boxes as their converted edgeprune twins."""
import copy

import pytest
import torch

from edgeprune.errors import ModelError
from edgeprune.models.spec import new_spec
from edgeprune.models.ultralytics_map import convert
from edgeprune.models.yolo import build_model
from edgeprune.prune.apply import random_bn_stats

tasks = pytest.importorskip("ultralytics.nn.tasks")

NAMES = ["plane", "ship", "car"]


def _pair(cfg, seed=0):
    torch.manual_seed(seed)
    theirs = tasks.DetectionModel(cfg, nc=len(NAMES), verbose=False)
    random_bn_stats(theirs, seed)
    with torch.no_grad():   # random head biases too, so the class/box branches are not at their priors
        for name, p in theirs.named_parameters():
            if name.endswith(".bias"):
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)) * 0.5)
    spec, state = convert(copy.deepcopy(theirs.yaml), theirs.state_dict(), NAMES)
    ours = build_model(spec)
    ours.load_state_dict(state)
    return theirs.eval(), ours.eval(), spec


def _raw_eval(model, x):
    """The head's raw maps with eval-mode BN, as [B, 4*reg_max, N] and [B, nc, N]."""
    det = model.detect
    feats = model.forward_features(x)
    boxes = torch.cat([det.cv2[i](f).flatten(2) for i, f in enumerate(feats)], 2)
    scores = torch.cat([det.cv3[i](f).flatten(2) for i, f in enumerate(feats)], 2)
    return boxes, scores


@pytest.mark.parametrize("cfg,arch", [("yolov8n.yaml", "yolov8"), ("yolov8s.yaml", "yolov8"),
                                      ("yolo11n.yaml", "yolo11"), ("yolo11s.yaml", "yolo11"),
                                      ("yolov5nu.yaml", "yolov5u"), ("yolov5su.yaml", "yolov5u")])
def test_converted_outputs_equal(cfg, arch):
    theirs, ours, spec = _pair(cfg)
    assert spec["arch"] == arch and spec["names"] == NAMES
    x = torch.rand(2, 3, 96, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y, raw = theirs(x)
        boxes, scores = _raw_eval(ours, x)
        dec = ours(x)
    if isinstance(raw, (list, tuple)):   # ultralytics < 8.4: per-level [B, 4*reg_max + nc, H, W] maps
        cat = torch.cat([r.flatten(2) for r in raw], 2)
        raw = {"boxes": cat[:, :64], "scores": cat[:, 64:]}
    assert (boxes - raw["boxes"]).abs().max() <= 1e-4
    assert (scores - raw["scores"]).abs().max() <= 1e-4
    assert torch.allclose(dec.transpose(1, 2), y, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("family,cfg", [("yolov8", "yolov8n.yaml"), ("yolo11", "yolo11s.yaml")])
def test_presets_equal_the_published_yamls(family, cfg):
    """edgeprune's own n/s presets are the published architectures (same resolved layers and head)."""
    _, _, spec = _pair(cfg)
    preset = new_spec(len(NAMES), NAMES, size=cfg[-6], family=family)
    assert preset["layers"] == spec["layers"] and preset["head"] == spec["head"]


def test_bad_inputs_are_named():
    theirs = tasks.DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    sd = theirs.state_dict()
    y = copy.deepcopy(theirs.yaml)
    y["head"][-1] = [[15, 18, 21], 1, "Segment", ["nc", 32, 256]]
    with pytest.raises(ModelError, match="segmentation"):
        convert(y, sd, NAMES)
    y = copy.deepcopy(theirs.yaml)
    y["backbone"][2][2] = "GhostBottleneck"
    with pytest.raises(ModelError, match="layer 2 is a 'GhostBottleneck'"):
        convert(y, sd, NAMES)
    with pytest.raises(ModelError, match="shape"):
        convert(tasks.DetectionModel("yolov8s.yaml", nc=3, verbose=False).yaml, sd, NAMES)
    y = copy.deepcopy(tasks.DetectionModel("yolov8s.yaml", nc=3, verbose=False).yaml)
    del y["scale"]                            # the size comes from the file name then
    assert convert(y, tasks.DetectionModel("yolov8s.yaml", nc=3, verbose=False).state_dict(), NAMES)[0]["size"] == "s"
    with pytest.raises(ModelError, match="nc is 3"):
        convert(theirs.yaml, sd, NAMES[:2])
