"""A tiny real run: dense training, then L1RR sparse training through the real trainer, ratios, plots."""
import json

import pytest
import torch

from edgeprune.config import make_config
from edgeprune.data.dataset import load_dataset
from edgeprune.data.synth import ensure_synthetic
from edgeprune.models.io import load_checkpoint, model_from_checkpoint
from edgeprune.sparsity.ratios import load_ratios
from edgeprune.sparsity.run import sparse_train
from edgeprune.train.trainer import fit, new_model


@pytest.mark.slow
def test_sparse_train_end_to_end(tmp_path):
    cfg = make_config("quick", {"data": {"synth_train": 16, "synth_val": 8, "synth_size": 160},
                                "model": {"imgsz": 64},
                                "train": {"epochs": 1, "batch": 8, "mosaic": 0.0},
                                "sparse": {"epochs": 2, "lam": 0.05, "refresh_every": 1, "ratio_batches": 1,
                                           "ratio_grid": 2, "ramp_frac": 0.25, "relax_frac": 0.25}})
    data = load_dataset(ensure_synthetic(tmp_path / "data", 16, 8, 160, 0))
    model, _ = new_model(data, "n", 64, 0, autoanchor=False)
    fit(model, data, cfg.train, tmp_path / "dense", imgsz=64, progress=False)
    dense = model_from_checkpoint(tmp_path / "dense" / "last.pt")
    summary = sparse_train(tmp_path / "dense" / "last.pt", data, cfg, tmp_path / "sparse", progress=False)

    out = tmp_path / "sparse"
    for name in ("sparse.pt", "ratios.json", "sparsity.json", "gamma_hist.png", "strength.png", "kept.png"):
        assert (out / name).is_file(), name
    sparse = model_from_checkpoint(out / "sparse.pt")
    load_ratios(out / "ratios.json", sparse)
    log = json.loads((out / "sparsity.json").read_text())
    assert [e["epoch"] for e in log["epochs"]] == [-1, 0, 1]
    steps = log["steps"]
    assert len(steps) == 2 * 2 and all(s[1] > 0 for s in steps)          # 2 epochs x 2 batches, s(t) logged
    assert steps[-1][3] > 0                                               # the attention loss was active
    # the penalty moved the BN scales towards zero compared with the dense model
    g = lambda m: torch.cat([b.weight.detach().abs() for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)])
    assert g(sparse).mean() < g(dense).mean()
    assert 0 <= summary["zero_share"] <= 1 and summary["map50_dense"] >= 0
    assert load_checkpoint(out / "sparse.pt")["method"] == "l1rr"
    trained = json.loads((out / "train" / "log.json").read_text())["cfg"]   # continued(): no bias-lr spike
    assert trained["warmup_bias_lr"] == 0.0 and trained["lr0"] == cfg.sparse.lr0
