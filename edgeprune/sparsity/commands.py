"""Handler of `edgeprune sparse` (host side; imported lazily by sparsity/cli.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import Config, dump_config, load_config, make_config, parse_set
from ..errors import UsageError
from ..fsio import atomic_write_text


def _config(args: Any) -> Config:
    overrides = parse_set(args.set)
    sparse = overrides.setdefault("sparse", {})
    for key, value in (("method", args.method), ("target", args.target), ("flops_target", args.flops_target),
                       ("epochs", args.epochs)):
        if value is not None:
            sparse[key] = value
    for flag in ("reweight", "dynamic", "adaptive", "attention"):
        if getattr(args, "no_" + flag):
            sparse[flag] = False
    if args.config:
        return load_config(args.config, overrides)
    return make_config(args.preset, overrides)


def load_data(source: str, cfg: Config, root: str | Path):
    """--data: 'synthetic' (generated once into `root`, cached) or a dataset path."""
    from ..data.dataset import load_dataset
    if source == "synthetic":
        from ..data.synth import ensure_synthetic
        d = cfg.data
        return load_dataset(ensure_synthetic(Path(root), d.synth_train, d.synth_val, d.synth_size, d.seed),
                            "auto", d.skip_bad)
    return load_dataset(source, cfg.data.format, cfg.data.skip_bad)


def sparse_command(args: Any) -> int:
    from .run import sparse_train

    cfg = _config(args)
    if not Path(args.checkpoint).is_file():
        raise UsageError(f"{args.checkpoint}: dense checkpoint not found (train one with `edgeprune train`)")
    out = Path(args.out)
    data = load_data(args.data, cfg, args.data_root)
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    summary = sparse_train(args.checkpoint, data, cfg, out, resume=not args.fresh, progress=not args.quiet)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"sparse training ({summary['method']}) -> {out}/sparse.pt, {out}/ratios.json")
        for key in ("zero_share", "map50_dense", "map50_sparse", "map50_drop_points", "flops_reduction"):
            if summary.get(key) is not None:
                print(f"{key:>18}: {summary[key]:.4f}")
    return 0
