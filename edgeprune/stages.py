"""The bodies of the `compress` stages (see pipeline.py for the resumable machinery).
Each takes the RunDir and returns the JSON-able outputs recorded in its done-marker."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .config import continued
from .fsio import atomic_write_json
from .pipeline import RunDir, stale_stage_dir
from .train.dist import is_main


def cache_root() -> Path:
    return Path(os.environ.get("EDGEPRUNE_CACHE", Path.home() / ".cache" / "edgeprune"))


def _dataset(run: RunDir):
    from .data.dataset import load_dataset

    out = run.outputs("data")
    return load_dataset(out["dataset"], run.cfg.data.format, run.cfg.data.skip_bad)


def stage_data(run: RunDir) -> dict[str, Any]:
    from .data.dataset import load_dataset
    from .data.synth import ensure_synthetic

    c = run.cfg.data
    if c.source == "synthetic":
        path = ensure_synthetic(cache_root() / "synthetic", c.synth_train, c.synth_val, c.synth_size, c.seed,
                                style=c.synth_style)
    else:
        path = Path(c.source)
    ds = load_dataset(path, c.format, c.skip_bad)
    run.log(f"[data] {path}: {len(ds.splits['train'])} train / {len(ds.splits['val'])} val images, "
            f"{len(ds.names)} classes, {ds.skipped} skipped")
    return {"dataset": str(path), "names": list(ds.names), "train_images": len(ds.splits["train"]),
            "val_images": len(ds.splits["val"]), "skipped": ds.skipped}


def _evaluate(model, ds, run: RunDir) -> dict[str, Any]:
    from .metrics import evaluate
    from .metrics.complexity import count, cpu_latency

    imgsz = run.cfg.model.imgsz
    m = evaluate(model, ds.splits["val"], ds.names, imgsz)
    m.update(count(model, imgsz))
    m["cpu_latency_ms"] = cpu_latency(model, imgsz)["median_ms"]
    return m


def stage_dense(run: RunDir) -> dict[str, Any]:
    from .models.io import model_from_checkpoint
    from .train.trainer import fit, new_model

    ds = _dataset(run)
    out = stale_stage_dir(run, "dense")
    c = run.cfg
    model, anchors = new_model(ds, c.model.size, c.model.imgsz, c.train.seed)
    fit(model, ds, c.train, out, resume=True, imgsz=c.model.imgsz)
    if not is_main():
        return {}
    model = model_from_checkpoint(out / "best.pt")
    metrics = _evaluate(model, ds, run)
    run.log(f"[dense] mAP50 {metrics['map50']:.3f}  mAP50-95 {metrics['map']:.3f}  params {metrics['params']:,}")
    return {"checkpoint": str(out / "best.pt"), "anchors": anchors, "metrics": metrics}


def stage_sparse(run: RunDir) -> dict[str, Any]:
    from .models.io import model_from_checkpoint
    from .sparsity.run import sparse_train

    ds = _dataset(run)
    out = stale_stage_dir(run, "sparse")
    dense = run.outputs("dense")
    summary = sparse_train(dense["checkpoint"], ds, run.cfg, out, dense_metrics=dense["metrics"])
    if not is_main():
        return {}
    metrics = _evaluate(model_from_checkpoint(summary["sparse_ckpt"]), ds, run)
    run.log(f"[sparse] mAP50 {metrics['map50']:.3f}, |gamma| < {summary['zero_threshold']} for "
            f"{100 * summary['zero_share']:.1f} % of prunable channels")
    return {**summary, "checkpoint": summary["sparse_ckpt"], "metrics": metrics}


def stage_prune(run: RunDir) -> dict[str, Any]:
    from .prune.io import load_pruned
    from .prune.run import prune_checkpoint

    ds = _dataset(run)
    out = stale_stage_dir(run, "prune")
    c, sparse = run.cfg, run.outputs("sparse")
    result = prune_checkpoint(sparse["checkpoint"], out, ratios=sparse["ratios"], rule=c.prune.rule,
                              round_to=c.prune.round_to, min_channels=c.prune.min_channels, fold=c.prune.fold, imgsz=c.model.imgsz,
                              skip_unsupported=c.prune.skip_unsupported)
    model, _ = load_pruned(out)
    metrics = _evaluate(model, ds, run)
    run.log(f"[prune] params {metrics['params']:,}  FLOPs {metrics['flops']:,}  mAP50 before fine-tune {metrics['map50']:.3f}")
    return {"model_dir": str(out), "metrics": metrics, "stats": result.get("stats", {})}


def stage_finetune(run: RunDir) -> dict[str, Any]:
    from .models.io import model_from_checkpoint
    from .prune.io import load_pruned, save_pruned_model
    from .sparsity.hook import distill_args
    from .train.trainer import fit

    ds = _dataset(run)
    out = stale_stage_dir(run, "finetune")
    c = run.cfg
    model = load_pruned(run.outputs("prune")["model_dir"]).model
    if c.finetune.epochs > 0:
        tcfg = continued(c.train, c.finetune.epochs, c.finetune.lr0, c.finetune.warmup_epochs)
        fit(model, ds, tcfg, out, resume=True, imgsz=c.model.imgsz,
            **distill_args(c, run.outputs("dense")["checkpoint"]))
    if not is_main():
        return {}      # rank 0 alone writes best.pt (after its evaluation), evaluates and saves
    if c.finetune.epochs > 0:
        model = model_from_checkpoint(out / "best.pt")
    metrics = _evaluate(model, ds, run)
    save_pruned_model(out / "model", model, run.outputs("prune")["model_dir"])
    atomic_write_json(out / "model" / "metrics.json", metrics)
    run.log(f"[finetune] mAP50 {metrics['map50']:.3f}  mAP50-95 {metrics['map']:.3f}")
    return {"model_dir": str(out / "model"), "metrics": metrics}


def stage_export(run: RunDir) -> dict[str, Any]:
    from .export.pipeline import export_bundle

    out = stale_stage_dir(run, "export", "bundle")
    result = export_bundle(run.outputs("finetune")["model_dir"], out, run.cfg, _dataset(run),
                           metrics=run.outputs("finetune")["metrics"])
    parity = result["parity"]
    run.log(f"[export] bundle {out}: graph verified, ORT vs torch max abs diff {parity['max_abs_diff']:.2e}")
    return {"bundle": str(out), "verify": result["verify"], "parity": parity}


def stage_report(run: RunDir) -> dict[str, Any]:
    from .report import write_report

    path = write_report(run)
    run.log(f"[report] {path}")
    return {"report": str(path)}
