"""The lr schedule of a stage that continues from trained weights (sparse, fine-tune) has no bias-lr spike;
a dense run from scratch keeps YOLOv5's warm-up (bias lr falling from warmup_bias_lr)."""
import pytest

from edgeprune.config import TrainConfig, continued
from edgeprune.data.dataset import load_dataset
from edgeprune.data.synth import ensure_synthetic
from edgeprune.train.trainer import Trainer, new_model


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_dataset(ensure_synthetic(tmp_path_factory.mktemp("d"), 16, 4, 96, 0, progress=False))


def _lrs(data, cfg, tmp_path, steps):
    model, _ = new_model(data, "n", 64, 0, autoanchor=False)
    trainer = Trainer(model, data, cfg, tmp_path, imgsz=64, progress=False)
    out = []
    for step in steps:
        trainer._set_lr(step)
        out.append({g["name"]: g["lr"] for g in trainer.optimizer.param_groups})
    return trainer, out


def test_dense_warm_up_starts_the_bias_lr_high(data, tmp_path):
    cfg = TrainConfig(epochs=4, batch=4, lr0=0.01, warmup_epochs=2.0)
    _, (first,) = _lrs(data, cfg, tmp_path, [0])
    assert first["biases"] == pytest.approx(0.1) and max(v for k, v in first.items() if k != "biases") == 0.0


def test_continued_schedule_never_exceeds_its_lr0(data, tmp_path):
    base = TrainConfig(epochs=12, batch=4, lr0=0.01, warmup_epochs=2.0)
    cfg = continued(base, epochs=4, lr0=0.005, warmup_epochs=0.25)
    assert (cfg.epochs, cfg.lr0, cfg.warmup_epochs, cfg.warmup_bias_lr) == (4, 0.005, 0.25, 0.0)
    assert continued(base, 4, 0.005, 5.0).warmup_epochs == 2.0       # never longer than the dense warm-up
    trainer, lrs = _lrs(data, cfg, tmp_path, range(3 * 4))
    warm = max(round(0.25 * trainer.nb), 1)
    assert all(v <= 0.005 + 1e-12 for row in lrs for v in row.values())
    assert lrs[0]["biases"] == 0.0                                     # no spike on a trained model's betas
    assert lrs[warm]["biases"] == lrs[warm]["weights"] > 0.004         # warm-up over: one lr for every group
