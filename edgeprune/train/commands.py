"""Handlers of `edgeprune train` / `edgeprune eval` (host side; imported lazily by train/cli.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ..config import ModelConfig, config_from_args, dump_config
from ..errors import CheckpointError, ModelError, UsageError
from ..fsio import atomic_write_json, atomic_write_text


def train_command(args: Any) -> int:
    from ..data.dataset import load_data
    from ..models.io import load_checkpoint
    from ..models.yolo import build_model
    from .trainer import fit, new_model

    cfg = config_from_args(args)
    out = Path(args.out)
    last = out / "last.pt"
    if last.exists() and not args.resume:
        raise UsageError(f"{last} exists: pass --resume to continue it, or choose another --out")
    data = load_data(cfg.data, args.data_root)
    if args.resume and last.exists():
        model = build_model(load_checkpoint(last)["spec"])     # weights and state come from last.pt in fit
        report: dict[str, Any] = {"resumed": str(last)}
    else:
        model, report = new_model(data, cfg.model.size, cfg.model.imgsz, cfg.train.seed, not args.no_autoanchor,
                                  cfg.model.family)
        atomic_write_text(out / "config.yaml", dump_config(cfg))
        atomic_write_json(out / "anchors.json", report)
    final = fit(model, data, cfg.train, out, resume=args.resume, imgsz=cfg.model.imgsz, progress=not args.quiet)
    result = {"out": str(out), "anchors": report, **final}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        stop = f" (early stop: best val mAP50 at epoch {final['best_epoch']})" if final.get("stopped_early") else ""
        print(f"trained {final.get('epochs', cfg.train.epochs)} epochs{stop} -> {out}/best.pt")
        _print_metrics(final)
    return 0


def _print_metrics(m: dict[str, Any]) -> None:
    for key in ("map50", "map", "ap_small", "best_map50"):
        if key in m:
            print(f"{key:>10}: {m[key]:.4f}")
    for name, ap in (m.get("per_class") or {}).items():
        print(f"{name:>16}: AP50 {ap['ap50']:.4f}  AP {ap['ap']:.4f}")
    for key in ("params", "flops"):
        if key in m:
            print(f"{key:>10}: {m[key]:,}")
    if "latency" in m:
        print(f"{'latency':>10}: {m['latency']['median_ms']:.2f} ms (CPU median, batch 1, "
              f"{m['latency']['threads']} threads)")


def _eval_bundle(args: Any, data: Any) -> int:
    """mAP of a deploy bundle through the device runtime (ONNX Runtime here), e.g. its INT8 QDQ model."""
    from jetson.bundle import load_bundle

    from ..metrics import evaluate_bundle

    manifest = load_bundle(args.checkpoint)
    if manifest["classes"] != list(data.names):
        raise ModelError(f"{args.checkpoint}: the bundle's classes {manifest['classes']} are not the dataset's {data.names}")
    result: dict[str, Any] = evaluate_bundle(args.checkpoint, data.splits[args.split], data.names, args.precision,
                                             args.backend, args.conf, args.iou,
                                             progress=not args.json and sys.stderr.isatty())
    result.update(bundle=str(args.checkpoint), precision=args.precision, backend=args.backend, split=args.split,
                  images=len(data.splits[args.split]))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.checkpoint} ({args.precision}, {args.backend}) on {args.split} ({result['images']} images)")
        _print_metrics(result)
    return 0


def eval_command(args: Any) -> int:
    from ..data.dataset import load_data
    from ..metrics import evaluate
    from ..metrics.complexity import count, cpu_latency
    from ..models.io import load_checkpoint, model_from_checkpoint

    if not Path(args.checkpoint).exists():
        raise CheckpointError(f"{args.checkpoint}: not found (give a checkpoint .pt or a deploy bundle folder)")
    cfg = config_from_args(args)
    data = load_data(cfg.data, args.data_root, split=args.split)
    if args.split not in data.splits or not data.splits[args.split]:
        raise UsageError(f"--split {args.split}: the dataset has no such split (has {sorted(data.splits)})")
    if Path(args.checkpoint).is_dir():
        return _eval_bundle(args, data)
    ckpt = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(ckpt)
    imgsz = args.imgsz or ckpt.get("imgsz") or (ckpt.get("train") or {}).get("imgsz") or ModelConfig.imgsz
    if len(data.names) != model.num_classes:
        raise ModelError(f"{args.checkpoint}: the model has {model.num_classes} classes but {cfg.data.source} has "
                         f"{len(data.names)} ({data.names}); evaluate on the dataset it was trained on")
    result: dict[str, Any] = evaluate(model, data.splits[args.split], data.names, imgsz, args.conf, args.iou,
                                      progress=not args.json and sys.stderr.isatty())
    result.update(count(model, imgsz))
    if args.latency_iters > 0:
        result["latency"] = cpu_latency(model, imgsz, iters=args.latency_iters)
    result.update(checkpoint=str(args.checkpoint), split=args.split, imgsz=imgsz, images=len(data.splits[args.split]))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.checkpoint} on {args.split} ({result['images']} images, imgsz {imgsz})")
        _print_metrics(result)
    return 0
