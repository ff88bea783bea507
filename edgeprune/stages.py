"""The bodies of the `compress` stages (declared in stagedefs.py; pipeline.py runs them resumably).
Each takes the RunDir and returns the JSON-able outputs recorded in its done-marker."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .config import continued
from .errors import BundleError, ConfigError
from .fsio import atomic_write_json
from .rundir import RunDir, stale_stage_dir
from .train.dist import is_main


def _dataset(run: RunDir):
    from .data.dataset import load_dataset

    out = run.outputs("data")
    return load_dataset(out["dataset"], run.cfg.data.format, run.cfg.data.skip_bad)


def stage_data(run: RunDir) -> dict[str, Any]:
    from .data.dataset import dataset_path, load_dataset

    c = run.cfg.data
    path, fmt = dataset_path(c)
    ds = load_dataset(path, fmt, c.skip_bad, decode=True)   # once, so a truncated image fails now
    link = _link_dataset(run.dir("data"), path)
    run.log(f"[data] {path}: {len(ds.splits['train'])} train / {len(ds.splits['val'])} val images, "
            f"{len(ds.names)} classes" + (f", {ds.skipped} bad samples skipped" if ds.skipped else ""))
    return {"dataset": str(path), "dataset_link": link, "names": list(ds.names), "train_images": len(ds.splits["train"]),
            "val_images": len(ds.splits["val"]), "skipped": ds.skipped}


def _link_dataset(folder: Path, dataset: Path) -> str | None:
    """`runs/<name>/data/dataset` -> the dataset the run used (the synthetic one lives in a cache folder with a
    hashed name), so that commands can be pasted with a path that exists. None where links cannot be made."""
    link = folder / ("dataset" + (dataset.suffix if dataset.is_file() else ""))
    tmp = folder / (".tmp-" + link.name)
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(dataset.resolve(), tmp, target_is_directory=dataset.is_dir())
        os.replace(tmp, link)
    except OSError:
        return None
    return str(link)


def _threads() -> int:
    """torch's intra-op thread count: a training's numbers depend on it (BENCHMARKS.md 0c), so it is recorded."""
    import torch

    return torch.get_num_threads()


def _evaluate(model, ds, run: RunDir) -> dict[str, Any]:
    from .metrics import evaluate
    from .metrics.complexity import count, cpu_latency

    imgsz = run.cfg.model.imgsz
    m = evaluate(model, ds.splits["val"], ds.names, imgsz)
    m.update(count(model, imgsz))
    m["cpu_latency_ms"] = cpu_latency(model, imgsz)["median_ms"]
    predicted = predicted_latency(model, run.cfg)
    if predicted is not None:
        m["predicted_latency_ms"] = predicted
    return m


def latency_table(cfg) -> dict[str, Any] | None:
    """`prune.latency_table` read and checked against model.imgsz (None when unset); ConfigError otherwise.
    Called when the dense stage starts, so a wrong table fails before hours of training, not after."""
    if not cfg.prune.latency_table:
        return None
    from jetson.layerprof import key_mismatches, read_table

    path = cfg.prune.latency_table
    try:
        table = read_table(path)
    except BundleError as exc:
        raise ConfigError(f"prune.latency_table: {exc}") from None
    wrong = key_mismatches(table, input_shape=[int(table["key"]["batch"]), 3, cfg.model.imgsz, cfg.model.imgsz])
    if wrong:
        raise ConfigError(f"prune.latency_table {path}: measured for another input ({wrong[0]}); profile a bundle "
                          f"exported at model.imgsz {cfg.model.imgsz}")
    return table


def predicted_latency(model, cfg) -> float | None:
    """The model's latency predicted from `prune.latency_table` (None without one); ConfigError when the table
    is for another input size or another architecture."""
    table = latency_table(cfg)
    if table is None:
        return None
    from .prune.latency import predict_model
    try:
        return predict_model(table, model, cfg.model.imgsz, int(table["key"]["batch"]))["total_ms"]
    except BundleError as exc:
        raise ConfigError(f"prune.latency_table: {exc}") from None


def stage_dense(run: RunDir) -> dict[str, Any]:
    from .models.io import model_from_checkpoint
    from .train.trainer import fit, new_model

    ds = _dataset(run)
    latency_table(run.cfg)
    out = stale_stage_dir(run, "dense")
    c = run.cfg
    if c.model.weights:
        return _given_dense(run, ds, out) if is_main() else {}
    model, anchors = new_model(ds, c.model.size, c.model.imgsz, c.train.seed, family=c.model.family)
    fit(model, ds, c.train, out, resume=True, imgsz=c.model.imgsz)
    if not is_main():
        return {}
    model = model_from_checkpoint(out / "best.pt")
    metrics = _evaluate(model, ds, run)
    run.log(f"[dense] mAP50 {metrics['map50']:.3f}  mAP50-95 {metrics['map']:.3f}  params {metrics['params']:,}")
    return {"checkpoint": str(out / "best.pt"), "anchors": anchors, "metrics": metrics, "threads": _threads()}


def _given_dense(run: RunDir, ds: Any, out: Path) -> dict[str, Any]:
    """compress --model: the user's trained model (imported when it is not an edgeprune checkpoint) is the
    dense one; it is evaluated on the user's data, which must have as many classes as its head."""
    from .errors import ModelError
    from .models.importer import load_foreign
    from .models.io import save_checkpoint

    model, info = load_foreign(run.cfg.model.weights)
    if model.num_classes != len(ds.names):
        raise ModelError(f"{info['source']}: the model detects {model.num_classes} classes but the data "
                         f"{run.outputs('data')['dataset']} has {len(ds.names)}; compress --model needs a model "
                         "trained on this label set")
    if list(model.names) != list(ds.names):
        run.log(f"[dense] class names differ (model {model.names[:4]}..., data {ds.names[:4]}...): "
                "taking the data's, in the same order")
        model.spec["names"] = list(ds.names)
    save_checkpoint(out / "best.pt", model, imported_from=info)
    metrics = _evaluate(model, ds, run)
    run.log(f"[dense] {info['format']} model {info['source']}: mAP50 {metrics['map50']:.3f}  "
            f"mAP50-95 {metrics['map']:.3f}  params {metrics['params']:,}")
    return {"checkpoint": str(out / "best.pt"), "anchors": {"changed": False, "source": "model"},
            "metrics": metrics, "imported_from": info}


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
    return {**summary, "checkpoint": summary["sparse_ckpt"], "metrics": metrics, "threads": _threads()}


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
    return {"model_dir": str(out / "model"), "metrics": metrics, "threads": _threads()}


def stage_export(run: RunDir) -> dict[str, Any]:
    """The pruned model's bundle, the dense model's beside it (`bundle_dense/`, so `edgeprune bench bundle
    --compare bundle_dense` works on the device straight away), and a first interleaved comparison of the two
    through ONNX Runtime on this machine."""
    from .export.bundler import export_bundle

    out = stale_stage_dir(run, "export", "bundle")
    dense_out = stale_stage_dir(run, "export", "bundle_dense")
    ds = _dataset(run)
    result = export_bundle(run.outputs("finetune")["model_dir"], out, run.cfg.export, ds,
                           metrics=run.outputs("finetune")["metrics"], imgsz=run.cfg.model.imgsz)
    parity = result["parity"]
    run.log(f"[export] bundle {out}: graph verified, ORT vs torch max abs diff {parity['max_abs_diff']:.2e}")
    dense = export_bundle(run.outputs("dense")["checkpoint"], dense_out, run.cfg.export, ds,
                          metrics=run.outputs("dense")["metrics"], imgsz=run.cfg.model.imgsz)
    run.log(f"[export] dense bundle {dense_out}: ORT vs torch max abs diff {dense['parity']['max_abs_diff']:.2e}")
    bench = compare_bundles(out, dense_out, table_path=table_for_report(run))
    run.log("[export] " + bench["summary"][0] + " (ONNX Runtime, this machine)")
    return {"bundle": str(out), "verify": result["verify"], "parity": parity, "dense_bundle": str(dense_out),
            "dense_parity": dense["parity"], "bench": bench}


def table_for_report(run: RunDir) -> str | None:
    """The latency table the run predicts with: `prune.latency_table`, else the one the sparse stage measured
    on the spot for prune.target=latency (None when neither exists)."""
    if run.cfg.prune.latency_table:
        return run.cfg.prune.latency_table
    path = (run.outputs("sparse").get("latency") or {}).get("table") if run.marker("sparse") else None
    return path if path and Path(path).is_file() else None


def compare_bundles(pruned: Path, dense: Path, iterations: int = 30, table_path: str | None = None) -> dict[str, Any]:
    """`edgeprune bench PRUNED --compare DENSE` in short, in-process (ONNX Runtime, one thread, interleaved):
    the latencies and the sentences saying which is faster; with `table_path`, the table's prediction for each
    beside its measured inference median (`jetson.layerprof.add_predictions`)."""
    from jetson.bench import compare_lines, run_bench
    from jetson.layerprof import add_predictions, read_table
    from jetson.runtime import load_detector

    models = []
    try:
        for label, path in (("dense", dense), ("pruned", pruned)):
            models.append((label, load_detector(str(path), backend="onnxruntime", threads=1)))
        rep = run_bench(models, iterations=iterations, warmup_s=0.5)
        if table_path:
            add_predictions(rep, models, read_table(table_path), table_path)
    finally:
        for _, det in models:
            det.close()
    lat = {e["label"]: {k: round(e[k]["mean"], 3) for k in ("end_to_end", "infer")} for e in rep["models"]}
    out = {"backend": "onnxruntime", "threads": 1, "iterations": iterations, "latency_ms": lat,
           "speedup_end_to_end": rep["compare"]["speedup_end_to_end_mean"],
           "speedup_infer": rep["compare"]["speedup_infer_mean"], "summary": compare_lines(rep)}
    if table_path:
        out["latency_table"] = {"file": str(table_path), "key": rep["latency_table"]["key"]}
        out["predicted"] = {e["label"]: e["predicted"] for e in rep["models"]}
    return out


def stage_report(run: RunDir) -> dict[str, Any]:
    from .report import write_report

    path = write_report(run)
    run.log(f"[report] {path}")
    return {"report": str(path)}
