"""The bodies of the `compress` stages (see pipeline.py for the resumable machinery).
Each takes the RunDir and returns the JSON-able outputs recorded in its done-marker."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from .pipeline import RunDir, stale_stage_dir


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
        path = ensure_synthetic(cache_root() / "synthetic", c.synth_train, c.synth_val, c.synth_size, c.seed)
    else:
        path = Path(c.source)
    ds = load_dataset(path, c.format, c.skip_bad)
    run.log(f"[data] {path}: {len(ds.splits['train'])} train / {len(ds.splits['val'])} val images, "
            f"{len(ds.names)} classes, {ds.skipped} skipped")
    return {"dataset": str(path), "names": list(ds.names), "train_images": len(ds.splits["train"]),
            "val_images": len(ds.splits["val"]), "skipped": ds.skipped}


def _evaluate(model, ds, run: RunDir) -> dict[str, Any]:
    from .metrics import evaluate
    from .metrics.complexity import count, cpu_latency_ms

    imgsz = run.cfg.model.imgsz
    m = evaluate(model, ds.splits["val"], ds.names, imgsz)
    m.update(count(model, imgsz))
    m["cpu_latency_ms"] = cpu_latency_ms(model, imgsz)
    return m


def stage_dense(run: RunDir) -> dict[str, Any]:
    from .models.io import model_from_checkpoint
    from .models.spec import new_spec
    from .models.yolo import build_model
    from .train.anchors import anchors_for
    from .train.trainer import fit

    ds = _dataset(run)
    out = stale_stage_dir(run, "dense")
    spec = new_spec(len(ds.names), ds.names, run.cfg.model.size, anchors_for(ds, run.cfg.model.imgsz))
    fit(build_model(spec), ds, run.cfg.train, out, resume=True, imgsz=run.cfg.model.imgsz)
    model = model_from_checkpoint(out / "best.pt", key="ema")
    metrics = _evaluate(model, ds, run)
    run.log(f"[dense] mAP50 {metrics['map50']:.3f}  mAP50-95 {metrics['map']:.3f}  params {metrics['params']:,}")
    return {"checkpoint": str(out / "best.pt"), "metrics": metrics}


def stage_sparse(run: RunDir) -> dict[str, Any]:
    from .models.io import model_from_checkpoint
    from .sparsity.run import sparse_train

    ds = _dataset(run)
    out = stale_stage_dir(run, "sparse")
    result = sparse_train(run.outputs("dense")["checkpoint"], ds, run.cfg, out)
    model = model_from_checkpoint(result["checkpoint"], key="ema")
    metrics = _evaluate(model, ds, run)
    run.log(f"[sparse] mAP50 {metrics['map50']:.3f}  zero-gamma share {result.get('zero_share', float('nan')):.2f}")
    return {**result, "metrics": metrics}


def stage_prune(run: RunDir) -> dict[str, Any]:
    from .models.io import model_from_checkpoint
    from .prune.apply import prune_from_ratios, save_pruned

    ds = _dataset(run)
    out = stale_stage_dir(run, "prune")
    sparse = run.outputs("sparse")
    model = model_from_checkpoint(sparse["checkpoint"], key="ema")
    result = prune_from_ratios(model, sparse["ratios"], run.cfg.prune, run.cfg.model.imgsz)
    save_pruned(out, result)
    metrics = _evaluate(result.model, ds, run)
    run.log(f"[prune] params {metrics['params']:,}  FLOPs {metrics['flops']:,}  mAP50 before fine-tune {metrics['map50']:.3f}")
    return {"model_dir": str(out), "metrics": metrics, "stats": result.stats}


def stage_finetune(run: RunDir) -> dict[str, Any]:
    from .models.io import model_from_checkpoint
    from .prune.apply import load_pruned, save_pruned_model
    from .train.trainer import fit

    ds = _dataset(run)
    out = stale_stage_dir(run, "finetune")
    model = load_pruned(run.outputs("prune")["model_dir"]).model
    c = run.cfg
    tcfg = dataclasses.replace(c.train, epochs=c.finetune.epochs, lr0=c.finetune.lr0, warmup_epochs=min(1.0, c.train.warmup_epochs))
    if c.finetune.epochs > 0:
        teacher = model_from_checkpoint(run.outputs("dense")["checkpoint"], key="ema") if c.finetune.distill else None
        fit(model, ds, tcfg, out, resume=True, imgsz=c.model.imgsz, teacher=teacher)
        model = model_from_checkpoint(out / "best.pt", key="ema")
    save_pruned_model(out / "model", model, run.outputs("prune")["model_dir"])
    metrics = _evaluate(model, ds, run)
    run.log(f"[finetune] mAP50 {metrics['map50']:.3f}  mAP50-95 {metrics['map']:.3f}")
    return {"model_dir": str(out / "model"), "metrics": metrics}


def stage_export(run: RunDir) -> dict[str, Any]:
    from .export.pipeline import export_bundle

    ds = _dataset(run)
    out = stale_stage_dir(run, "export", "bundle")
    result = export_bundle(run.outputs("finetune")["model_dir"], out, run.cfg, ds,
                           metrics=run.outputs("finetune")["metrics"])
    run.log(f"[export] bundle {out}: verification {result['verify']['status']}, ORT max abs diff {result['parity']['max_abs_diff']:.2e}")
    return result


def stage_report(run: RunDir) -> dict[str, Any]:
    from .report import write_report

    path = write_report(run)
    run.log(f"[report] {path}")
    return {"report": str(path)}
