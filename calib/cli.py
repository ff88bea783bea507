"""`edgeprune calib build`: a calibration set inside a bundle. Python 3.6; argparse only, lazy imports."""
import argparse
import json
import sys


def register(subparsers):
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "calib", help="INT8 calibration sets (calib build)", formatter_class=fmt,
        description="Calibration data for INT8 engines and QDQ quantization.",
        epilog="example: edgeprune calib build --data runs/default/data/dataset --bundle runs/default/bundle --n 32")
    sub = p.add_subparsers(dest="calib_command", metavar="ACTION")
    b = sub.add_parser(
        "build", formatter_class=fmt, help="select images and write preprocessed batches into BUNDLE/calib/",
        description="Select N images (stratified: every class and object-size band represented, or random), "
                    "preprocess them exactly like the bundle and write calib/batch_*.npy + calib/manifest.json.",
        epilog="example: edgeprune calib build --data runs/default/data/dataset --bundle runs/default/bundle --n 32 "
               "--strategy stratified --json")
    b.add_argument("--data", required=True,
                   help="YOLO dataset folder (images/<split>/ + labels/<split>/, or images with .txt beside them) "
                        "or a .txt list of image paths")
    b.add_argument("--bundle", required=True, help="deploy bundle to calibrate for (calib/ is written inside it)")
    b.add_argument("--n", type=int, default=500, help="number of images (default 500)")
    b.add_argument("--strategy", choices=("stratified", "random"), default="stratified")
    b.add_argument("--batch-size", type=int, default=8, help="images per .npy batch (default 8)")
    b.add_argument("--split", default="train", help="use DATA/images/SPLIT when it exists (default train)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", action="store_true", help="print the calib manifest summary as JSON")
    b.set_defaults(handler=_build)
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])


def _build(args):
    from calib.build import build_calib
    log = lambda msg: sys.stderr.write("edgeprune: " + msg + "\n")  # noqa: E731
    calib = build_calib(args.data, args.bundle, n=args.n, strategy=args.strategy, batch_size=args.batch_size,
                        seed=args.seed, split=args.split, log=log)
    sel = calib["selection"]
    summary = {"bundle": args.bundle, "images": calib["num_images"], "batches": calib["num_batches"],
               "batch_size": calib["batch_size"], "padded": calib["padded"], "strategy": sel["strategy"],
               "classes": sel["classes"], "bands": sel["bands"], "strata_covered": sel["strata_covered"],
               "strata_total": sel["strata_total"]}
    if args.json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        sys.stdout.write("calib: {} images in {} batches of {} ({} of {} class/size strata) -> {}/calib/\n".format(
            summary["images"], summary["batches"], summary["batch_size"], summary["strata_covered"],
            summary["strata_total"], args.bundle))
    return 0
