"""`sparse_train`: L1RR sparse training of a dense checkpoint, then the ratio solver and the plots.

out_dir/
  train/            the trainer's run (last.pt for resume, best.pt, log.csv, log.json, curves.png)
  sparse.pt         the sparse (unpruned) model: EMA weights of the last epoch, as the trainer evaluated them
  ratios.json       per-layer kept channels (CONTRACTS.md)
  sparsity.json     zero share per epoch, s(t) per step, gamma histograms, summary
  gamma_hist.png, strength.png, kept.png
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ..config import Config, continued
from ..errors import SparsityError
from ..fsio import atomic_write_json
from ..models.io import load_checkpoint, model_from_checkpoint, save_checkpoint
from ..train.dist import default_device, is_main
from .bnscan import prunable_bns, slimming_excluded
from .graph import trace_channels
from .hook import SparsityHook
from .latency import solver_table
from .plots import plot_gamma_hist, plot_kept, plot_strength
from .ratios import save_ratios, solve_ratios


def zero_share(model: torch.nn.Module, threshold: float, skip: set[str] = frozenset(), graph: Any = None) -> float:
    g = torch.cat([m.weight.detach().abs().flatten() for n, m in prunable_bns(model, graph).items() if n not in skip])
    return float((g < threshold).float().mean())


def val_batches(data: Any, cfg: Config, batch: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `sparse.ratio_batches` validation batches (no augmentation) for the ratio solver."""
    from ..data.torchdata import DetectionDataset, collate

    samples = data.splits.get("val") or []
    if not samples:
        raise SparsityError("the dataset has no 'val' samples: the ratio solver measures attention on them")
    ds = DetectionDataset(samples, cfg.model.imgsz, augment=False, train_cfg=cfg.train, seed=cfg.train.seed)
    loader = torch.utils.data.DataLoader(ds, batch, shuffle=False, collate_fn=collate)
    out = []
    for imgs, targets, _ in loader:
        out.append((imgs, targets))
        if len(out) >= cfg.sparse.ratio_batches:
            break
    return out


def sparse_train(dense_ckpt: str | Path, data: Any, cfg: Config, out_dir: str | Path, resume: bool = True,
                 progress: bool = True, device: str | None = None,
                 dense_metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sparse-train the dense checkpoint on `data` (a Dataset), solve ratios, write the artefacts (rank 0;
    the other ranks of a torchrun job return {} after training).
    `dense_metrics` (map50, map of the dense model on data's val split) saves re-evaluating it when the caller
    already has them (the compress dense stage). Returns the summary (also in sparsity.json["summary"])."""
    from ..metrics import evaluate
    from ..train.trainer import fit

    sc = cfg.sparse
    out = Path(out_dir)
    ckpt = load_checkpoint(dense_ckpt)
    student, teacher = model_from_checkpoint(ckpt), model_from_checkpoint(ckpt)
    skip_unsupported = cfg.prune.skip_unsupported
    prunable_bns(student, trace_channels(student, skip_unsupported=skip_unsupported))   # fail early (no BN gates)
    use_teacher = sc.method == "l1rr" and sc.attention
    hook = SparsityHook(sc, skip_unsupported)
    train_cfg = continued(cfg.train, sc.epochs, sc.lr0, sc.warmup_epochs)
    final = fit(student, data, train_cfg, out / "train", hooks=[hook], resume=resume,
                teacher=teacher if use_teacher else None, imgsz=cfg.model.imgsz, device=device, progress=progress)
    if not is_main():
        return {}       # under torchrun rank 0 alone saves, solves the ratios and plots
    sparse = model_from_checkpoint(out / "train" / "last.pt")
    save_checkpoint(out / "sparse.pt", sparse, method=sc.method, sparse_cfg=dataclasses.asdict(sc))

    mode = "threshold" if sc.method == "slimming" else "attention"
    table = None
    if cfg.prune.target == "latency" and mode == "attention":    # measured on the CPU copy, before the move
        table = solver_table(sparse, cfg.prune, cfg.model.imgsz, log=print if progress else None)
        if not cfg.prune.latency_table:     # measured here: kept beside ratios.json for the report and the device
            atomic_write_json(out / "latency_table.json", table[0])
            table = (table[0], str(out / "latency_table.json"))
    dev = torch.device(device or default_device())          # the solver's forwards run where training ran
    batches = [(imgs.to(dev), targets.to(dev)) for imgs, targets in val_batches(data, cfg)]
    ratios = solve_ratios(sparse.to(dev), batches, sc, cfg.prune, mode=mode, progress=progress, table=table)
    save_ratios(ratios, out / "ratios.json")

    teacher.eval()
    if dense_metrics is None:
        dense_metrics = evaluate(teacher, data.splits["val"], data.names, cfg.model.imgsz, progress=False)
    graph = trace_channels(sparse, skip_unsupported=skip_unsupported)
    skip = slimming_excluded(sparse, graph) if sc.method == "slimming" else set()
    summary = {
        "method": sc.method, "ablation": {k: getattr(sc, k) for k in ("reweight", "dynamic", "adaptive", "attention")},
        "epochs": sc.epochs, "target": sc.target, "zero_threshold": sc.zero_threshold,
        "zero_share": zero_share(sparse, sc.zero_threshold, skip, graph),
        "zero_share_all": zero_share(sparse, sc.zero_threshold, graph=graph),
        "map50_dense": dense_metrics["map50"], "map50_sparse": final.get("map50"),
        "map_dense": dense_metrics["map"], "map_sparse": final.get("map"),
        "flops_reduction": ratios["flops_reduction"], "tau": ratios.get("tau"), "threshold": ratios.get("threshold"),
        **({"latency": ratios["latency"]} if "latency" in ratios else {}),
        "sparse_ckpt": str(out / "sparse.pt"), "ratios": str(out / "ratios.json"),
    }
    if summary["map50_sparse"] is not None:
        summary["map50_drop_points"] = 100.0 * (summary["map50_dense"] - summary["map50_sparse"])
    log = hook.log()
    atomic_write_json(out / "sparsity.json", {**log, "summary": summary})
    plot_gamma_hist(log, out / "gamma_hist.png")
    plot_strength(log, out / "strength.png")
    plot_kept(ratios, out / "kept.png")
    return summary
