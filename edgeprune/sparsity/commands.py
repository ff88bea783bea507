"""Handler of `edgeprune sparse` (host side; imported lazily by sparsity/cli.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import config_from_args, dump_config
from ..errors import UsageError
from ..fsio import atomic_write_text


def sparse_command(args: Any) -> int:
    from ..data.dataset import load_data
    from .run import sparse_train

    cfg = config_from_args(args)
    if not Path(args.checkpoint).is_file():
        raise UsageError(f"{args.checkpoint}: dense checkpoint not found (train one with `edgeprune train`)")
    out = Path(args.out)
    data = load_data(cfg.data, args.data_root)
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
