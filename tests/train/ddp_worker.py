"""Run by tests/train/test_ddp.py, plainly and under `torch.distributed.run --nproc-per-node 2`: for each
RUN = name:accumulate:batch:sync_bn[:index] (sync_bn: auto | false), trains a tiny detector on the images listed in INDEX (JSON; or the RUN's
own index) into OUT/name and saves each rank's final raw weights as OUT/name/rank<r>.pt, and the training
sample indices it loaded, in order, as OUT/name/reads<r>.json.

lr0 0.002 without the warm-up bias lr: at lr0 0.02 / bias lr 0.1 these 4 steps amplified a 1e-6 relative change of
the loss into 1.3e-3 on the weights, so the 1e-4 DDP-vs-single tolerance held only while both summed in the same
order; at 0.002 the same change moves them 1.3e-6, and a global batch of 2 still moves them 3.6e-3."""
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch


def main(index: str, out: str, *runs: str) -> None:
    torch.set_num_threads(1)
    from edgeprune.config import TrainConfig
    from edgeprune.data.torchdata import DetectionDataset
    from edgeprune.train.trainer import fit, new_model

    reads = []
    load = DetectionDataset.__getitem__

    def logged(self, i):        # which shard this rank trains on (the training set is the augmenting one)
        if self.augment:        # the sampler hands (epoch, index) pairs (data/torchdata.py)
            reads.append(int(i[1] if isinstance(i, tuple) else i))
        return load(self, i)

    DetectionDataset.__getitem__ = logged
    for run in runs:
        name, accumulate, batch, sync_bn, *own = run.split(":", 4)
        items = json.loads(Path(own[0] if own else index).read_text())
        samples = [SimpleNamespace(image=Path(it["image"]), boxes=np.asarray(it["boxes"], np.float32).reshape(-1, 4),
                                   classes=np.asarray(it["classes"], np.int64)) for it in items]
        data = SimpleNamespace(names=["a", "b"], splits={"train": samples, "val": samples[:2]})
        del reads[:]
        cfg = TrainConfig(epochs=2, batch=int(batch), accumulate=int(accumulate), eval_every=100,
                          warmup_epochs=0.5, mosaic=0.0, flip=0.0, rot90=0.0, hsv=0.0, lr0=0.002,
                          warmup_bias_lr=0.0, workers=0,  # in-process loading: `reads` sees every item
                          sync_bn={"auto": "auto", "false": False}[sync_bn])
        model, _ = new_model(data, "n", 64, seed=0, autoanchor=False)
        fit(model, data, cfg, Path(out) / name, imgsz=64, progress=False)
        rank = int(os.environ.get("RANK", "0"))
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()},
                   Path(out) / name / f"rank{rank}.pt")
        (Path(out) / name / f"reads{rank}.json").write_text(json.dumps(reads))


if __name__ == "__main__":
    main(*sys.argv[1:])
