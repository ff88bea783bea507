"""`edgeprune sparse`: L1RR sparse training + per-layer ratios. Python 3.6 compatible: declares arguments
only; the handler imports torch and the trainer lazily (edgeprune/sparsity/commands.py)."""
import argparse


def _sparse(args):
    from .commands import sparse_command
    return sparse_command(args)


def register(subparsers):
    p = subparsers.add_parser(
        "sparse", help="L1RR sparse training of a dense checkpoint, then per-layer pruning ratios (ratios.json)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: edgeprune sparse runs/default/dense/best.pt --data runs/default/data/dataset --out runs/sparse "
               "--target 0.65\n"
               "         edgeprune sparse runs/default/dense/best.pt --data runs/default/data/dataset --out runs/slim "
               "--method slimming\n"
               "         edgeprune sparse runs/default/dense/best.pt --data runs/default/data/dataset --out runs/abl "
               "--no-reweight --json\n"
               "(runs/default/ is what `edgeprune compress` writes; data/dataset links to the dataset it used)")
    p.add_argument("checkpoint", help="the dense checkpoint (.pt) written by `edgeprune train`")
    p.add_argument("--data", default="synthetic", help="dataset path or 'synthetic' (default)")
    p.add_argument("--data-root", default="runs/data/synthetic", help="cache folder of the synthetic dataset")
    p.add_argument("--out", required=True,
                   help="output folder: sparse.pt, ratios.json, sparsity.json, PNG plots, train/ (resumable)")
    p.add_argument("--method", choices=("l1rr", "slimming"), default=None,
                   help="l1rr (default) or slimming (plain network slimming baseline, global threshold)")
    p.add_argument("--no-reweight", action="store_true", help="ablation: plain (unweighted) L1 per channel")
    p.add_argument("--no-dynamic", action="store_true", help="ablation: constant strength s(t) = lam")
    p.add_argument("--no-adaptive", action="store_true", help="ablation: the same lambda for every layer")
    p.add_argument("--no-attention", action="store_true", help="ablation: no feature attention loss in training")
    p.add_argument("--target", type=float, default=None, help="target share of BN scales below zero_threshold")
    p.add_argument("--flops-target", type=float, default=None, help="global FLOPs reduction the ratios must reach")
    p.add_argument("--epochs", type=int, default=None, help="sparse training epochs (sparse.epochs)")
    p.add_argument("--preset", default="default", help="config preset: default | quick | benchmark")
    p.add_argument("--config", default=None, help="YAML config file (overrides the preset)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable (e.g. --set sparse.lam=0.002)")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming OUT/train/last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=_sparse)
