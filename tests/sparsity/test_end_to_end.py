"""A real run from the quick preset's trained dense model: L1RR sparse training through the real trainer,
ratios, plots."""
import json

import pytest
import torch

from edgeprune.config import make_config
from edgeprune.models.io import load_checkpoint, model_from_checkpoint
from edgeprune.prune.io import keep_from_ratios, read_ratios
from edgeprune.sparsity.run import sparse_train
from edgeprune.data.dataset import load_data
from tests.quick_floors import check_learned


@pytest.mark.slow
def test_sparse_train_end_to_end(quick_dense, tmp_path):
    run, data_root, _ = quick_dense
    cfg = make_config("quick", {"sparse": {"epochs": 2, "lam": 0.05, "refresh_every": 1, "ratio_batches": 1,
                                           "ratio_grid": 2, "ramp_frac": 0.25, "relax_frac": 0.25}})
    data = load_data(cfg.data, data_root)
    dense = model_from_checkpoint(run / "last.pt")
    summary = sparse_train(run / "last.pt", data, cfg, tmp_path / "sparse", progress=False)
    check_learned({"map50": summary["map50_dense"]})      # it starts from a model that detects

    out = tmp_path / "sparse"
    for name in ("sparse.pt", "ratios.json", "sparsity.json", "gamma_hist.png", "strength.png", "kept.png"):
        assert (out / name).is_file(), name
    sparse = model_from_checkpoint(out / "sparse.pt")
    keep_from_ratios(read_ratios(out / "ratios.json"), sparse, "ratios.json")     # as the prune stage reads it
    log = json.loads((out / "sparsity.json").read_text())
    assert [e["epoch"] for e in log["epochs"]] == [-1, 0, 1]
    steps = log["steps"]
    batches = len(data.splits["train"]) // cfg.train.batch
    assert len(steps) == 2 * batches and all(s[1] > 0 for s in steps)   # 2 epochs, s(t) logged every step
    assert steps[-1][3] > 0                                               # the attention loss was active
    # the penalty moved the BN scales towards zero compared with the dense model
    g = lambda m: torch.cat([b.weight.detach().abs() for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)])
    assert g(sparse).mean() < g(dense).mean()
    assert 0 < summary["zero_share"] <= 1
    # a strong penalty for 2 epochs costs accuracy, but the sparse model still detects (its mAP is measured)
    assert summary["map50_sparse"] is not None and summary["map50_sparse"] > 0.05
    assert load_checkpoint(out / "sparse.pt")["method"] == "l1rr"
    trained = json.loads((out / "train" / "log.json").read_text())["cfg"]   # continued(): no bias-lr spike
    assert trained["warmup_bias_lr"] == 0.0 and trained["lr0"] == cfg.sparse.lr0
