"""fit(): tiny overfit, hook protocol, exact resume, artefacts; all on the real synthetic data + DetectionDataset."""
import csv
import json
from dataclasses import replace

import pytest
import torch

from edgeprune.config import TrainConfig
from edgeprune.data import load_dataset
from edgeprune.data.synth import ensure_synthetic
from edgeprune.errors import CheckpointError
from edgeprune.models.io import load_checkpoint, model_from_checkpoint
from edgeprune.train.trainer import fit, new_model

NO_AUG = dict(mosaic=0.0, flip=0.0, rot90=0.0, hsv=0.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return load_dataset(ensure_synthetic(root, 4, 2, 128, seed=1, progress=False))


def _fresh(data, imgsz=128):
    model, _ = new_model(data, "n", imgsz, seed=0)
    return model


@pytest.mark.slow
def test_loss_falls_on_four_images(tiny, tmp_path):
    """fit() end to end without augmentation (the sharper overfit check on the loss alone is in test_loss.py)."""
    cfg = TrainConfig(epochs=12, batch=2, optimizer="adamw", lr0=0.003, warmup_epochs=1, eval_every=1000, **NO_AUG)
    fit(_fresh(tiny), tiny, cfg, tmp_path, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 12
    assert losses[-1] < 0.85 * losses[0], losses
    for name in ("last.pt", "best.pt", "log.csv", "log.json", "curves.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert rows[-1]["map50"] != "" and all(r["map50"] == "" for r in rows[:-1])   # evaluated at the end only


class Recorder:
    """Implements every hook; its extra loss is a real term (mean |P3|) so it must show up in the logs."""

    def __init__(self):
        self.calls, self.loaded = [], None

    def on_train_start(self, trainer):
        self.calls.append(("start", trainer.epoch))
        assert trainer.teacher is not None and not any(p.requires_grad for p in trainer.teacher.parameters())

    def extra_loss(self, trainer, imgs, targets, feats):
        self.calls.append(("extra", trainer.step))
        assert len(feats) == 3 and feats[0].requires_grad and imgs.shape[0] == targets[:, 0].max() + 1
        term = 1e-3 * feats[0].abs().mean()
        return term, {"feat": float(term.detach())}

    def after_backward(self, trainer, step):
        g = trainer.model.layers[0].bn.weight.grad
        self.calls.append(("after", step, g is not None))

    def on_epoch_end(self, trainer, epoch):
        self.calls.append(("end", epoch))
        return {"hook_epoch": epoch}

    def state_dict(self):
        return {"n_calls": len(self.calls)}

    def load_state_dict(self, d):
        self.loaded = d


def test_hooks_called_in_order_and_state_saved(tiny, tmp_path):
    cfg = TrainConfig(epochs=2, batch=2, eval_every=1000, **NO_AUG)
    h = Recorder()
    teacher = _fresh(tiny)
    fit(_fresh(tiny), tiny, cfg, tmp_path, hooks=[h], teacher=teacher, progress=False)
    # 4 images, batch 2 -> 2 steps per epoch
    assert h.calls == [("start", 0),
                       ("extra", 0), ("after", 0, True), ("extra", 1), ("after", 1, True), ("end", 0),
                       ("extra", 2), ("after", 2, True), ("extra", 3), ("after", 3, True), ("end", 1)]
    log = json.loads((tmp_path / "log.json").read_text())["history"]
    assert [r["hook_epoch"] for r in log] == [0, 1] and all(r["feat"] > 0 for r in log)
    assert load_checkpoint(tmp_path / "last.pt")["train"]["hooks"] == [{"n_calls": 11}]
    # a finished run resumes to its final metrics without training again
    h2 = Recorder()
    fit(_fresh(tiny), tiny, cfg, tmp_path, hooks=[h2], progress=False)
    assert h2.loaded == {"n_calls": 11} and h2.calls == []


class Interrupt:
    def extra_loss(self, trainer, imgs, targets, feats):
        if trainer.epoch == 1:
            raise KeyboardInterrupt


def test_resume_matches_uninterrupted_run(tiny, tmp_path):
    cfg = TrainConfig(epochs=2, batch=2, eval_every=1, warmup_epochs=0.5, mosaic=1.0, hsv=0.5)
    fit(_fresh(tiny), tiny, cfg, tmp_path / "a", progress=False)
    with pytest.raises(KeyboardInterrupt):
        fit(_fresh(tiny), tiny, cfg, tmp_path / "b", hooks=[Interrupt()], progress=False)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["train"]["epoch"] == 1
    fit(_fresh(tiny), tiny, cfg, tmp_path / "b", progress=False)
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key                          # EMA
        assert torch.equal(a["train"]["model_raw"][key], b["train"]["model_raw"][key]), key
    timing = ("time_s", "cpu_s", "img_per_s", "data_wait")
    strip = lambda h: [{k: v for k, v in r.items() if k not in timing} for r in h]  # noqa: E731
    assert strip(a["train"]["history"]) == strip(b["train"]["history"])
    # and the EMA weights in best.pt load as a plain model
    assert model_from_checkpoint(tmp_path / "b" / "best.pt").num_classes == len(tiny.names)


def test_resume_refuses_another_model(tiny, tmp_path):
    cfg = TrainConfig(epochs=1, batch=4, eval_every=1000, **NO_AUG)
    fit(_fresh(tiny), tiny, cfg, tmp_path, progress=False)
    other, _ = new_model(tiny, "s", 128)
    with pytest.raises(CheckpointError, match="last.pt.*another model"):
        fit(other, tiny, replace(cfg, epochs=2), tmp_path, progress=False)


@pytest.mark.slow
def test_patience_stops_on_a_plateau_and_resumes_to_the_stop(quick_dense, tmp_path):
    """The quick preset's trained model (mAP50 ~0.9) trained on with lr0=0: its weights cannot move, so its val
    mAP50 reaches a plateau at once; patience 2 must end a 10-epoch run two epochs after the best evaluation,
    record where, and a resume must return that result without training."""
    from edgeprune.config import make_config
    run, data_root, _ = quick_dense
    c = make_config("quick")
    data = load_dataset(ensure_synthetic(data_root, c.data.synth_train, c.data.synth_val, c.data.synth_size,
                                         c.data.seed, progress=False, style=c.data.synth_style))
    cfg = replace(c.train, epochs=10, lr0=0.0, warmup_epochs=0, eval_every=1, patience=2)
    final = fit(model_from_checkpoint(run / "best.pt"), data, cfg, tmp_path, imgsz=c.model.imgsz, progress=False)
    maps = [r["map50"] for r in json.loads((tmp_path / "log.json").read_text())["history"]]
    best = final["best_epoch"]
    assert final["stopped_early"] is True and final["epochs"] == best + 2 < 10, (final, maps)
    assert len(maps) == final["epochs"] and max(maps[best:]) <= maps[best - 1] == final["best_map50"] > 0.5, maps
    st = load_checkpoint(tmp_path / "last.pt")["train"]
    assert st["epoch"] == final["epochs"] and st["best_epoch"] == best
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == best
    again = fit(model_from_checkpoint(run / "best.pt"), data, cfg, tmp_path, imgsz=c.model.imgsz, progress=False)
    assert again["epochs"] == final["epochs"] and len(json.loads((tmp_path / "log.json").read_text())["history"]) == len(maps)


def test_patience_never_stops_a_model_that_detects_nothing_yet(tiny, tmp_path):
    """lr0=0 from random weights: val mAP50 stays 0, which is a model that has not started, not a plateau."""
    cfg = TrainConfig(epochs=3, batch=2, lr0=0.0, warmup_epochs=0, eval_every=1, patience=1, **NO_AUG)
    final = fit(_fresh(tiny), tiny, cfg, tmp_path, progress=False)
    maps = [r["map50"] for r in json.loads((tmp_path / "log.json").read_text())["history"]]
    assert maps == [0.0, 0.0, 0.0] and final["epochs"] == 3 and final["stopped_early"] is False


def test_patience_needs_a_val_split_and_continued_stages_run_their_budget(tiny, tmp_path):
    from edgeprune.config import continued
    from edgeprune.errors import ConfigError
    no_val = replace(tiny, splits={"train": tiny.splits["train"]})
    with pytest.raises(ConfigError, match="train.patience"):
        fit(_fresh(tiny), no_val, TrainConfig(epochs=2, patience=3), tmp_path, progress=False)
    assert continued(TrainConfig(patience=5), 4, 0.001, 0.5).patience == 0


class StepValues:
    """Extra loss items with known values: the step number as a device tensor and as a float, and a NaN loss
    from step `nan_at` on."""

    def __init__(self, nan_at=None):
        self.nan_at = nan_at

    def extra_loss(self, trainer, imgs, targets, feats):
        bad = self.nan_at is not None and trainer.step >= self.nan_at
        term = feats[0].sum() * (float("nan") if bad else 0.0)
        return term, {"step_t": torch.tensor(float(trainer.step)), "step_f": float(trainer.step)}


def test_losses_are_summed_on_the_device_and_logged_as_epoch_means(tiny, tmp_path, monkeypatch):
    """The step's items are summed without a host read and divided once per epoch: the log holds each epoch's
    mean for tensor and float items alike, also when the sums are read mid-epoch; a NaN loss is caught at the
    next read and named with its window of batches."""
    from edgeprune.errors import DataError
    from edgeprune.train import trainer as trainer_mod

    cfg = TrainConfig(epochs=2, batch=1, eval_every=1000, **NO_AUG)          # 4 steps per epoch
    monkeypatch.setattr(trainer_mod, "LOG_EVERY", 3)                         # a read after the third step
    fit(_fresh(tiny), tiny, cfg, tmp_path / "run", hooks=[StepValues()], progress=False)
    log = json.loads((tmp_path / "run" / "log.json").read_text())["history"]
    assert [(r["step_t"], r["step_f"]) for r in log] == [(1.5, 1.5), (5.5, 5.5)]
    assert all(r["loss"] > 0 and abs(r["loss"] - r["box"] - r["obj"] - r["cls"]) < 1e-3 * r["loss"] for r in log)
    with pytest.raises(DataError, match="epoch 1, batches 3-3"):        # reads after batches 0-2 and 3
        fit(_fresh(tiny), tiny, replace(cfg, epochs=1), tmp_path / "nan", hooks=[StepValues(nan_at=3)],
            progress=False)
