"""A short real L1RR run on the synthetic data: dense training (cached), sparse training, ratios.
Writes OUT/result.json with the dense vs sparse mAP50, the zero share and the FLOPs reduction.

example: python benchmarks/sparsity_run.py --out runs/l1rr_demo --set sparse.lam=0.002
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from edgeprune.config import make_config, parse_set
from edgeprune.data.dataset import load_dataset
from edgeprune.data.synth import ensure_synthetic
from edgeprune.fsio import atomic_write_json
from edgeprune.sparsity.run import sparse_train
from edgeprune.train.trainer import fit, new_model

SMALL = {"data": {"synth_train": 200, "synth_val": 60, "synth_size": 160},
         "model": {"imgsz": 128},
         "train": {"epochs": 25, "batch": 16, "eval_every": 25},
         "sparse": {"epochs": 12, "ratio_batches": 2}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dense", default="runs/dense_small", help="dense run folder (trained once, then reused)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--threads", type=int, default=1)   # 1: the shared 2-core machine thrashes with 2
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    over = SMALL
    for sec, vals in parse_set(args.set).items():
        over = {**over, sec: {**over.get(sec, {}), **vals}}
    cfg = make_config("default", over)
    d = cfg.data
    data = load_dataset(ensure_synthetic(Path("runs/data/synthetic"), d.synth_train, d.synth_val, d.synth_size, d.seed))
    dense = Path(args.dense)
    t0 = time.time()
    if not (dense / "log.json").is_file() or \
            len(json.loads((dense / "log.json").read_text())["history"]) < cfg.train.epochs:
        model, _ = new_model(data, cfg.model.size, cfg.model.imgsz, cfg.train.seed)
        fit(model, data, cfg.train, dense, imgsz=cfg.model.imgsz)
    t1 = time.time()
    summary = sparse_train(dense / "last.pt", data, cfg, args.out)
    result = {"summary": summary, "dense_s": round(t1 - t0, 1), "sparse_s": round(time.time() - t1, 1),
              "overrides": over}
    atomic_write_json(Path(args.out) / "result.json", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
