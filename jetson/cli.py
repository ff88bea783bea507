"""Device subcommands: detect, bench, build-engine (+ serve, registered from jetson/serve_cli.py when present).
Python 3.6; declares arguments only, handlers import the real code lazily."""
import argparse
import importlib
import json
import sys

from edgeprune.errors import UsageError

from .backends import BACKENDS
from .profiles import PRECISIONS, PROFILES

DEVICES = tuple(PROFILES)


def _common(p, precision_default="fp32"):
    p.add_argument("bundle", metavar="BUNDLE", help="deploy bundle folder (manifest.json + model.onnx)")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto = TensorRT when importable, else onnxruntime (default: auto)")
    p.add_argument("--device", choices=DEVICES, default="host", help="device profile (default: host)")
    p.add_argument("--precision", choices=PRECISIONS, default=precision_default,
                   help="engine precision for TensorRT (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime CPU threads (default: all cores)")
    p.add_argument("--cache-dir", default=None,
                   help="engine cache folder (default: BUNDLE/engines or $EDGEPRUNE_ENGINE_CACHE)")


def _positive(kind):
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError("not a number: {!r}".format(text))
        if v <= 0:
            raise argparse.ArgumentTypeError("must be > 0, got {}".format(text))
        return v
    return parse


def _unit(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: {!r}".format(text))
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError("must be in [0, 1], got {}".format(text))
    return v


def register(subparsers):
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "detect", help="detect objects in an image, a folder or a video with a bundle", formatter_class=fmt,
        description="Run a deploy bundle on images/video; write annotated images and JSON lines of boxes.",
        epilog="example: edgeprune detect runs/default/bundle --source runs/default/data/dataset/images/val "
               "--out detections/ --conf 0.3\n"
               "         (without --out the JSON lines go to stdout)")
    _common(p)
    p.add_argument("--source", required=True, help="image file, folder of images, or video (needs OpenCV)")
    p.add_argument("--out", default=None, help="folder for annotated images + detections.jsonl")
    p.add_argument("--conf", type=_unit, default=None, help="score threshold (default: the manifest's)")
    p.add_argument("--iou", type=_unit, default=None, help="NMS IoU threshold (default: the manifest's)")
    p.add_argument("--max-det", type=_positive(int), default=None, help="max boxes per image")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=_detect)

    p = subparsers.add_parser(
        "bench", help="latency statistics of a bundle (optionally vs another, interleaved)", formatter_class=fmt,
        description="trtexec-style benchmark: warm-up, fixed iterations or duration, mean/min/max/median/p90/p95/p99, "
                    "throughput, end-to-end vs inference-only split (H2D/compute/D2H with TensorRT).",
        epilog="example: edgeprune bench runs/default/bundle --compare runs/default/bundle_dense --duration 10\n"
               "         edgeprune bench runs/default/bundle --compare runs/default/bundle_dense --device tx2 "
               "--precision fp16 --json > bench.json   (on the TX2)\n"
               "         edgeprune bench runs/default/bundle_dense --profile-layers --device orin-nano --precision fp16\n"
               "         (writes runs/default/bundle_dense/latency_table.json: every conv block timed at a grid of\n"
               "          widths; later bench runs print the table's prediction beside the measured latency)")
    _common(p)
    p.add_argument("--compare", default=None, metavar="OTHER_BUNDLE", help="a second bundle measured interleaved")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--iterations", type=_positive(int), default=None, help="measured iterations per model")
    g.add_argument("--duration", type=_positive(float), default=None, help="seconds to measure (default 3)")
    p.add_argument("--warmup", type=float, default=0.2, help="warm-up seconds (default 0.2, as trtexec)")
    p.add_argument("--image", default=None, help="benchmark on this image (default: a synthetic 640x480 scene)")
    p.add_argument("--out", default=None, help="also write the JSON report to this file")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    p.add_argument("--profile-layers", action="store_true",
                   help="measure a latency table instead: every conv block of the bundle at a grid of channel counts "
                        "(written to --out, default BUNDLE/latency_table.json)")
    p.add_argument("--min-channels", type=_positive(int), default=8,
                   help="--profile-layers: smallest channel count of the grid (default 8, as prune.min_channels)")
    p.add_argument("--statistic", choices=("median", "min"), default="median",
                   help="--profile-layers: what each table entry keeps (min on a machine shared with other jobs, "
                        "where preemption inflates medians; bench compares its own same statistic)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="--profile-layers with onnxruntime: wall time, or this process's CPU time (with --threads 1, "
                        "on a machine shared with other jobs)")
    p.add_argument("--latency-table", default=None, metavar="FILE",
                   help="predict each bundle's latency from this table beside the measurement "
                        "(default: BUNDLE/latency_table.json when it exists)")
    p.set_defaults(handler=_bench)

    p = subparsers.add_parser(
        "build-engine", help="build (or reuse from the cache) a TensorRT engine for a device", formatter_class=fmt,
        description="Build an FP32/FP16/INT8 TensorRT engine for a bundle and cache it, keyed by ONNX sha256, "
                    "precision, input shape, TensorRT version, GPU compute capability and workspace.",
        epilog="example: edgeprune build-engine runs/default/bundle --device tx2 --precision fp16 --json")
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("--device", choices=DEVICES, default="host")
    p.add_argument("--precision", choices=PRECISIONS, default="fp16")
    p.add_argument("--workspace-mb", type=_positive(int), default=None, help="builder workspace (default: profile's)")
    p.add_argument("--dla-core", type=int, default=None, help="build for this DLA core (Xavier/AGX Orin)")
    p.add_argument("--calibrator", choices=("entropy", "minmax"), default="entropy", help="INT8 calibrator (TRT < 10.1)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--force", action="store_true", help="rebuild even when a valid cached engine exists")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_build_engine)

    # `edgeprune serve` lives in jetson/serve_cli.py (the serve engineer's module); absent in a trimmed tree
    try:
        serve_cli = importlib.import_module(__package__ + ".serve_cli")
    except ModuleNotFoundError as exc:
        if exc.name != __package__ + ".serve_cli":
            raise
        serve_cli = None
    if serve_cli is not None:
        serve_cli.register_serve(subparsers)


def _log(msg):
    sys.stderr.write("edgeprune: {}\n".format(msg))


def _open(args, bundle):
    from .runtime import load_detector
    return load_detector(bundle, backend=args.backend, device=args.device, precision=args.precision,
                         threads=args.threads, cache_dir=args.cache_dir, log=_log)


def _detect(args):
    import warnings

    from .detect import run_detect
    warnings.simplefilter("default")
    det = _open(args, args.bundle)
    try:
        emit = None if args.out else (lambda line: sys.stdout.write(line + "\n"))
        summary = run_detect(det, args.source, args.out, args.conf, args.iou, args.max_det, emit=emit)
    finally:
        det.close()
    if args.json:
        # without --out, stdout carries the JSON lines of boxes, so the summary goes to stderr
        (sys.stdout if args.out else sys.stderr).write(json.dumps(summary) + "\n")
    else:
        for err in summary.get("errors", []):
            _log("failed: {}".format(err["error"]))
        _log("{} image(s), {} detection(s), {} failed on {}{}".format(
            summary["images"], summary["detections"], summary["failed"], summary["backend"],
            "; wrote " + args.out if args.out else ""))
    return 1 if summary["failed"] else 0


def _profile_layers(args):
    import os

    from edgeprune.fsio import atomic_write_json

    from .layerprof import OrtLayerTimer, TrtLayerTimer, format_table_summary, profile_bundle
    from .profiles import get_profile
    if args.compare:
        raise UsageError("--profile-layers profiles one bundle; drop --compare")
    if args.duration:
        raise UsageError("--profile-layers times each block --iterations times (default 20); drop --duration")
    det = _open(args, args.bundle)
    timer = None
    try:
        if det.backend_name == "tensorrt":
            timer = TrtLayerTimer(get_profile(args.device), det.precision, log=_log)
        else:
            timer = OrtLayerTimer(threads=args.threads, clock=args.clock)
            if det.precision != timer.precision:
                raise UsageError("--profile-layers with onnxruntime times fp32 blocks; this bundle runs {} here: "
                                 "profile with --precision fp32".format(det.precision))
        table = profile_bundle(det, timer, args.device, min_channels=args.min_channels,
                               iterations=args.iterations or 20, warmup=3, log=_log, statistic=args.statistic)
    finally:
        det.close()
        if hasattr(timer, "close"):
            timer.close()
    out = args.out or os.path.join(args.bundle, "latency_table.json")
    atomic_write_json(out, table)
    sys.stdout.write((json.dumps(table, indent=2) if args.json else format_table_summary(table, out)) + "\n")
    return 0


def _bench(args):
    if args.profile_layers:
        return _profile_layers(args)
    import os

    from .bench import format_report, run_bench
    from .imageio import decode_image
    image = decode_image(args.image) if args.image else None
    models = []
    try:
        models.append((args.bundle, _open(args, args.bundle)))     # labels: the paths, as the user wrote them
        if args.compare:
            models.append((args.compare, _open(args, args.compare)))
        report = run_bench(models, image=image, iterations=args.iterations, duration=args.duration,
                           warmup_s=args.warmup)
        table_path = args.latency_table or os.path.join(args.bundle, "latency_table.json")
        if args.latency_table or os.path.isfile(table_path):
            from .layerprof import add_predictions, read_table
            add_predictions(report, models, read_table(table_path), table_path)
    finally:
        for _, det in models:
            det.close()
    if args.out:
        from edgeprune.fsio import atomic_write_json
        atomic_write_json(args.out, report)
    sys.stdout.write((json.dumps(report, indent=2) if args.json else format_report(report)) + "\n")
    return 0


def _build_engine(args):
    from .bundle import load_bundle
    from .engine import get_engine
    from .profiles import get_profile
    m = load_bundle(args.bundle)
    path, prec = get_engine(m, get_profile(args.device), args.precision, cache_dir=args.cache_dir,
                            workspace_mb=args.workspace_mb, dla_core=args.dla_core, calib_kind=args.calibrator,
                            log=_log, force=args.force)
    info = {"engine": path, "precision": prec, "device": args.device, "bundle": m["_root"]}
    sys.stdout.write((json.dumps(info) if args.json else "engine: {} ({})".format(path, prec)) + "\n")
    return 0
