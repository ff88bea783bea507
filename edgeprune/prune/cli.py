"""`edgeprune prune`: residual-reconstructed pruning of a checkpoint. Python 3.6 compatible; the
handler imports torch lazily."""
import json
import sys

from ..cliconfig import ConfigHelpFormatter, config_flag

EPILOG = """examples:
  edgeprune prune runs/default/sparse/sparse.pt --ratios runs/default/sparse/ratios.json --out runs/pruned
  edgeprune prune runs/default/sparse/sparse.pt --threshold 0.01 --rule topk --round-to 8 --out runs/pruned_t --json
  edgeprune prune runs/default/sparse/sparse.pt --global-ratio 0.5 --rule intersection --min-channels 16 --out runs/pruned_g
  edgeprune prune --model mypkg.nets:build --weights path/to/net.pt --global-ratio 0.5 --out runs/pruned_m

The output folder holds arch.json (spec with widths), weights.pt (state_dict), recombination.json
and prune_table.json/.txt; load it with edgeprune.prune.io.load_pruned or `edgeprune export`.
With --model (any nn.Module built by a factory) it holds model.json (the factory and every module's
widths) instead of arch.json; load it with edgeprune.prune.anymodel.load."""


def register(subparsers):
    p = subparsers.add_parser("prune", help="prune a sparse checkpoint (residual reconstruction)",
                              description="Physically prune the BN channels chosen by ratios.json, a |gamma| "
                                          "threshold or a global ratio, keeping residual adds consistent.",
                              epilog=EPILOG, formatter_class=ConfigHelpFormatter)
    p.add_argument("checkpoint", metavar="CKPT", nargs="?", help="edgeprune checkpoint (.pt with spec + state_dict)")
    p.add_argument("--model", metavar="PKG.MOD:FN", help="instead of CKPT: a callable that builds your (unpruned) "
                                                         "nn.Module; its package must be on PYTHONPATH")
    p.add_argument("--weights", metavar="PT", help="with --model: its state_dict (.pt, loaded weights_only)")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--ratios", metavar="JSON", help="ratios.json from `edgeprune sparse` (per-layer keep_idx)")
    how.add_argument("--threshold", type=float, metavar="T", help="keep channels with |gamma| > T (slimming; BN-less "
                                                                     "layers keep all)")
    how.add_argument("--global-ratio", type=float, metavar="R", help="remove the R share of least important channels in one ranking: "
                                                              "|gamma| for BN layers, weight-row norm for BN-less ones")
    config_flag(p, "--rule", "prune.rule", choices=("union", "intersection", "topk"),
                help="retained set at residual adds")
    config_flag(p, "--round-to", "prune.round_to", type=int, help="round kept channels up to a multiple")
    config_flag(p, "--min-channels", "prune.min_channels", type=int, help="keep at least this many per group")
    p.add_argument("--no-fold", action="store_true", help="do not fold removed channels' act(beta) into consumers")
    p.add_argument("--imgsz", type=int, default=None, help="example input side for tracing/FLOPs (default: "
                                                            "the checkpoint's imgsz, else config model.imgsz)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--skip-unsupported", action="store_true", help="freeze layers around ops the graph cannot handle")
    p.add_argument("--json", action="store_true", help="print the stats as JSON instead of the table")
    p.set_defaults(handler=_run)


def _run(args):
    from ..config import config_from_args
    from ..errors import UsageError
    cfg = config_from_args(args).prune   # flags not given take the config's defaults (checked there)
    args.rule, args.round_to, args.min_channels = cfg.rule, cfg.round_to, cfg.min_channels
    if (args.checkpoint is None) == (args.model is None):
        raise UsageError("give a checkpoint or --model PKG.MOD:FN (one of them)")
    if args.weights and not args.model:
        raise UsageError("--weights goes with --model")
    from .run import prune_checkpoint, prune_factory

    common = dict(out_dir=args.out, threshold=args.threshold, global_ratio=args.global_ratio, rule=args.rule,
                  round_to=args.round_to, min_channels=args.min_channels, fold=not args.no_fold, imgsz=args.imgsz,
                  skip_unsupported=args.skip_unsupported)
    if args.model:
        if args.ratios:
            raise UsageError("--ratios is for edgeprune checkpoints; with --model use --threshold or --global-ratio")
        result = prune_factory(args.model, args.weights, **common)
    else:
        result = prune_checkpoint(args.checkpoint, ratios=args.ratios, **common)
    if args.json:
        json.dump(result["stats"], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(result["text"] + "\n")
        sys.stdout.write("wrote {}\n".format(args.out))
    return 0
