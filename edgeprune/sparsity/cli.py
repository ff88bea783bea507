"""`edgeprune sparse`: L1RR sparse training + per-layer ratios. Python 3.6 compatible: declares arguments
only; the handler imports torch and the trainer lazily (edgeprune/sparsity/commands.py)."""
from ..cliconfig import DATA_ROOT_HELP, ConfigHelpFormatter, config_flag


def _sparse(args):
    from .commands import sparse_command
    return sparse_command(args)


def register(subparsers):
    p = subparsers.add_parser(
        "sparse", help="L1RR sparse training of a dense checkpoint, then per-layer pruning ratios (ratios.json)",
        formatter_class=ConfigHelpFormatter,
        epilog="example: edgeprune sparse runs/default/dense/best.pt --data runs/default/data/dataset --out runs/sparse "
               "--target 0.65\n"
               "         edgeprune sparse runs/default/dense/best.pt --data runs/default/data/dataset --out runs/slim "
               "--method slimming\n"
               "         edgeprune sparse runs/default/dense/best.pt --data runs/default/data/dataset --out runs/abl "
               "--no-reweight --json\n"
               "(runs/default/ is what `edgeprune compress` writes; data/dataset links to the dataset it used)")
    p.add_argument("checkpoint", help="the dense checkpoint (.pt) written by `edgeprune train`")
    config_flag(p, "--data", "data.source", help="dataset path or 'synthetic'")
    p.add_argument("--data-root", default=None, help=DATA_ROOT_HELP)
    p.add_argument("--out", required=True,
                   help="output folder: sparse.pt, ratios.json, sparsity.json, PNG plots, train/ (resumable)")
    config_flag(p, "--method", "sparse.method", choices=("l1rr", "slimming"),
                help="l1rr or slimming (plain network slimming baseline, global threshold)")
    config_flag(p, "--no-reweight", "sparse.reweight", False, help="ablation: plain (unweighted) L1 per channel")
    config_flag(p, "--no-dynamic", "sparse.dynamic", False, help="ablation: constant strength s(t) = lam")
    config_flag(p, "--no-adaptive", "sparse.adaptive", False, help="ablation: the same lambda for every layer")
    config_flag(p, "--no-attention", "sparse.attention", False, help="ablation: no feature attention loss in training")
    config_flag(p, "--target", "sparse.target", type=float, help="target share of BN scales below zero_threshold")
    config_flag(p, "--flops-target", "sparse.flops_target", type=float,
                help="global FLOPs reduction the ratios must reach")
    config_flag(p, "--epochs", "sparse.epochs", type=int, help="sparse training epochs")
    p.add_argument("--preset", default=None, help="config preset: default | quick | benchmark (default: default)")
    p.add_argument("--config", default=None, help="YAML config file (overrides the preset)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable (e.g. --set sparse.lam=0.002)")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming OUT/train/last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=_sparse)
