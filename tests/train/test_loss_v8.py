"""Anchor-free loss: task-aligned assignment follows TOOD's rules, DFL matches GFL's definition, and a tiny
YOLOv8-style model overfits a fixed batch; the trainer trains the family end to end on synthetic data."""
import math

import pytest
import torch
from torch.nn import functional as F

from edgeprune.models.spec import new_spec
from edgeprune.models.yolo import build_model
from edgeprune.train.loss import DetectionLoss
from edgeprune.train.trainer import build_loss
from edgeprune.train.loss_v8 import TaskAlignedAssigner, V8DetectionLoss


def _model(nc=2, family="yolov8"):
    torch.manual_seed(0)
    return build_model(new_spec(nc, size="n", family=family)).train()


def test_build_loss_picks_the_family():
    from edgeprune.config import TrainConfig
    assert isinstance(build_loss(_model(), 64, TrainConfig()), V8DetectionLoss)
    v5 = build_model(new_spec(2, size="n"))
    assert isinstance(build_loss(v5, 64, TrainConfig()), DetectionLoss)


def test_finite_without_targets_only_class_loss():
    model = _model()
    loss, items = V8DetectionLoss(model)(model(torch.rand(2, 3, 64, 64)), torch.zeros(0, 6))
    assert math.isfinite(loss.item()) and loss.item() > 0
    assert items["box"] == 0.0 and items["dfl"] == 0.0 and items["cls"] > 0
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_assigner_topk_inside_and_conflicts():
    centres = torch.tensor([[4.0, 4.0], [12.0, 4.0], [20.0, 4.0], [28.0, 4.0]])
    # predictions: each cell predicts a 8x8 box around itself
    boxes = torch.cat((centres - 4, centres + 4), 1)[None]
    scores = torch.full((1, 4, 2), 0.5)
    gt_boxes = torch.tensor([[[0.0, 0.0, 16.0, 8.0], [8.0, 0.0, 32.0, 8.0], [0, 0, 0, 0]]])
    gt_cls = torch.tensor([[0, 1, 0]])
    gt_mask = torch.tensor([[True, True, False]])
    fg, t_boxes, t_scores = TaskAlignedAssigner(topk=2)(scores, boxes, centres, gt_cls, gt_boxes, gt_mask)
    assert fg.tolist() == [[True, True, True, True]]
    # cell 1 (centre 12) lies in both boxes: IoU 0.5 with box 0, 1/3 with box 1 -> box 0
    assert t_boxes[0, 1].tolist() == [0.0, 0.0, 16.0, 8.0]
    assert t_boxes[0, 2].tolist() == [8.0, 0.0, 32.0, 8.0]
    # soft targets: class of the assigned box only; a box's best cell gets the box's best IoU
    assert t_scores[0, :2, 1].abs().sum() == 0 and t_scores[0, 2:, 0].abs().sum() == 0
    assert float(t_scores[0, :2, 0].max()) == pytest.approx(0.5, abs=1e-5)
    assert float(t_scores[0, 2:, 1].max()) == pytest.approx(1 / 3, abs=1e-5)
    # a padded (masked) box never takes a cell
    fg, _, _ = TaskAlignedAssigner(topk=2)(scores, boxes, centres, gt_cls, gt_boxes, torch.zeros(1, 3, dtype=bool))
    assert not fg.any()


def test_dfl_is_interpolated_cross_entropy():
    logits = torch.randn(3, 4, 16, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([[0.0, 2.5, 7.25, 14.0]] * 3)
    got = V8DetectionLoss._dfl(logits, target)
    logp = F.log_softmax(logits, -1)
    want = torch.zeros(3)
    for i in range(4):
        t = target[0, i]
        lo = int(t)
        want -= (logp[:, i, lo] * (lo + 1 - t) + logp[:, i, lo + 1] * (t - lo)) / 4
    assert torch.allclose(got, want, atol=1e-5)


def test_overfits_a_fixed_batch(family="yolov8"):
    """The loss first rises (soft targets grow with the IoU, as TAL intends), then falls; the two large
    boxes are then found by the top-scoring cell of their class."""
    from edgeprune.train.loss_v8 import box_iou_pairs
    model = _model(3, family)
    loss_fn = V8DetectionLoss(model)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([[0, 1, 0.3, 0.4, 0.25, 0.3], [1, 2, 0.6, 0.5, 0.4, 0.2], [1, 0, 0.2, 0.8, 0.15, 0.15]])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        loss, items = loss_fn(model(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert items["box"] > 0 and items["dfl"] > 0
    assert sum(losses[-3:]) / 3 < 0.6 * max(losses), losses
    with torch.no_grad():
        out = model.detect.decode(model(x))     # train-mode BN: the running statistics saw 40 batches only
    for b, c, *box in t[:2].tolist():
        j = int(out[int(b), :, 4 + int(c)].argmax())
        p = out[int(b), j, :4]
        g = torch.tensor(box) * 64
        iou = box_iou_pairs(torch.cat((p[:2] - p[2:] / 2, p[:2] + p[2:] / 2)), torch.cat((g[:2] - g[2:] / 2, g[:2] + g[2:] / 2)))
        assert float(out[int(b), j, 4 + int(c)]) > 0.5 and float(iou) > 0.7


def test_trainer_fits_v8_on_synthetic(tmp_path):
    from edgeprune.config import TrainConfig
    from edgeprune.data import load_dataset
    from edgeprune.data.synth import ensure_synthetic
    from edgeprune.train.trainer import fit, new_model

    data = load_dataset(ensure_synthetic(tmp_path / "synth", 8, 4, 96, seed=0))
    model, report = new_model(data, "n", 64, seed=0, family="yolo11")
    assert report == {"changed": False} and model.spec["family"] == "edgeprune-yolov8"
    cfg = TrainConfig(epochs=2, batch=4, workers=0, warmup_epochs=0.0, eval_every=2)
    final = fit(model, data, cfg, tmp_path / "run", imgsz=64, device="cpu", progress=False)
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert "dfl" in log[0] and "obj" not in log[0]
    assert final["epochs"] == 2 and 0.0 <= final["map50"] <= 1.0
    again = build_model(torch.load(tmp_path / "run" / "best.pt", weights_only=True)["spec"])
    assert again.spec == model.spec
