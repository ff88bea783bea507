"""`edgeprune data synth|check|convert`. Python 3.6 compatible: declares arguments only, imports lazily."""
import argparse
import json
import sys

FORMATS = ("auto", "yolo", "coco", "voc", "nwpu")


def register(subparsers):
    p = subparsers.add_parser(
        "data", help="datasets: synthetic scenes, validation, format conversion",
        description="Generate the synthetic aerial dataset, validate a dataset, or convert between formats "
                    "(YOLO txt, COCO json, Pascal VOC xml / DIOR, NWPU VHR-10).",
        epilog="example: edgeprune data synth --out data/synth --images 800 --val 200 --size 320 --seed 0",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    p.set_defaults(handler=_no_action(p))

    s = sub.add_parser(
        "synth", help="generate (or reuse) the cached synthetic aerial-scene dataset",
        epilog="example: edgeprune data synth --out data/synth --images 800 --val 200 --size 320 --seed 0 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--out", required=True, help="cache root; the dataset goes to a sub-folder named by the parameters")
    s.add_argument("--images", type=int, default=800, help="training images (default 800)")
    s.add_argument("--val", type=int, default=200, help="validation images (default 200)")
    s.add_argument("--size", type=int, default=320, help="scene side in pixels (default 320)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--style", choices=("aerial", "simple", "dior"), default="aerial",
                   help="aerial: 6 classes (default); simple: 3 large-object classes; dior: 20 DIOR-like classes, "
                        "mostly tiny objects, quarters of tiles twice --size")
    s.add_argument("--json", action="store_true", help="print a JSON summary")
    s.set_defaults(handler=_synth)

    c = sub.add_parser(
        "check", help="validate a dataset; per-class counts and box-size statistics",
        description="Loads every sample, lists every bad one (file and line), prints per-class counts and "
                    "box-size bands (tiny <16 px, small <32 px, medium <96 px, large, by sqrt(area)). "
                    "Exit code 1 when any sample is bad.",
        epilog="example: edgeprune data check runs/default/data/dataset --plot sizes.png --json\n"
               "(runs/default/data/dataset links to the dataset `edgeprune compress` used)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("path", help="dataset folder, data.yaml or COCO .json")
    c.add_argument("--format", choices=FORMATS, default="auto")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.add_argument("--plot", metavar="PNG", help="write a box-size histogram and per-class counts")
    c.set_defaults(handler=_check)

    v = sub.add_parser(
        "convert", help="convert a dataset to yolo, coco, voc or nwpu (images are copied)",
        epilog="example: edgeprune data convert runs/default/data/dataset data/synth-coco --to coco",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("src", help="source dataset (any supported format)")
    v.add_argument("dst", help="new, empty destination folder")
    v.add_argument("--to", required=True, choices=("yolo", "coco", "voc", "nwpu"))
    v.add_argument("--from", dest="src_format", choices=FORMATS, default="auto", help="source format (default auto)")
    v.add_argument("--skip-bad", action="store_true", help="leave out bad samples instead of failing")
    v.add_argument("--json", action="store_true", help="print a JSON summary")
    v.set_defaults(handler=_convert)


def _no_action(parser):
    def handler(args):
        parser.print_help()
        return 2
    return handler


def _synth(args):
    import time

    from .synth import ensure_synthetic
    t0 = time.time()
    path = ensure_synthetic(args.out, args.images, args.val, args.size, args.seed, progress=not args.json,
                            style=args.style)
    summary = {"path": str(path), "data_yaml": str(path / "data.yaml"), "train": args.images, "val": args.val,
               "size": args.size, "seed": args.seed, "style": args.style, "seconds": round(time.time() - t0, 2)}
    _emit(summary, args.json, "synthetic dataset ready: {} ({:.1f} s)".format(summary["data_yaml"], summary["seconds"]))
    return 0


def _check(args):
    from .check import check, format_report, plot
    ds, rep = check(args.path, args.format)
    if args.plot:
        rep["plot"] = str(plot(ds, args.plot))
    _emit(rep, args.json, format_report(rep) + ("\nplot: " + rep["plot"] if args.plot else ""))
    return 1 if rep["skipped"] else 0


def _convert(args):
    from .convert import convert
    ds, out = convert(args.src, args.dst, args.to, args.src_format, args.skip_bad, progress=not args.json)
    summary = {"src": args.src, "format": ds.format, "to": args.to, "out": str(out),
               "images": {k: len(v) for k, v in ds.splits.items()}, "skipped": ds.skipped, "problems": ds.problems}
    _emit(summary, args.json, "converted {} ({}) -> {} ({}): {}{}".format(
        args.src, ds.format, out, args.to, ", ".join("{} {}".format(k, len(v)) for k, v in ds.splits.items()),
        ", {} bad samples skipped".format(ds.skipped) if ds.skipped else ""))
    return 0


def _emit(obj, as_json, text):
    sys.stdout.write((json.dumps(obj, indent=2) if as_json else text) + "\n")
