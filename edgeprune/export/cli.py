"""`edgeprune export` and `edgeprune verify`. Python 3.6 compatible: declares arguments only; the handlers
import the torch/onnx side lazily."""
import argparse
import json
import sys

from ..cliconfig import ConfigHelpFormatter, config_flag

EXPORT_EPILOG = """example:
  edgeprune export runs/default/finetune/model --out runs/bundle320 --imgsz 320 --images runs/default/data/dataset/images/val
  edgeprune export runs/default/dense/best.pt --out runs/dense_bundle --json
  edgeprune export runs/default/finetune/model --out runs/bundle_int8 --nms-plugin --int8 --calib runs/default/bundle/calib
  (the last one after `edgeprune calib build`, which writes runs/default/bundle/calib)
  edgeprune export runs/pruned_m --out runs/bundle_m --names car,truck    (after `edgeprune prune --model ...`)
  edgeprune export --model mypkg.nets:build --weights path/to/net.pt --out runs/bundle_dense_m --names car,truck

MODEL_DIR_OR_CKPT is a pruned model folder (arch.json + weights.pt [+ recombination.json, metrics.json]),
a folder of `edgeprune prune --model` (model.json + weights.pt) or an edgeprune checkpoint; --model PKG.MOD:FN
with --weights instead exports your dense model. A --model detector's eval forward must return one decoded
tensor: [B, N, 4+nc] (anchor_free_decoded: cx, cy, w, h in input pixels, class probabilities) or [B, N, 5+nc]
(yolov5_decoded: an objectness before the classes); declare its classes/layout/strides with the flags, in
model.json (keys names, output_layout, strides) or as model attributes of those names. The graph is simplified (onnxsim), checked, verified against the arch spec
and recombination map, and compared with PyTorch through ONNX Runtime before the bundle is written."""

VERIFY_EPILOG = """example:
  edgeprune verify runs/default/bundle --json

Re-checks the manifest and the sha256 of the model files, runs the graphsurgeon verification pass
against the bundle's arch.json / onnx_map.json / recombination.json and an ONNX Runtime smoke run."""


def register(subparsers):
    p = subparsers.add_parser("export", help="export a model to a verified ONNX deploy bundle",
                              epilog=EXPORT_EPILOG, formatter_class=ConfigHelpFormatter)
    p.add_argument("source", metavar="MODEL_DIR_OR_CKPT", nargs="?", help="pruned model folder or .pt checkpoint")
    p.add_argument("--model", metavar="PKG.MOD:FN", help="a callable that builds your (dense) detector; alone with "
                                                         "--weights, or with a model.json folder to rebuild it")
    p.add_argument("--weights", metavar="PT", help="with --model and no folder: its state_dict (weights_only)")
    p.add_argument("--names", metavar="A,B,..|FILE", help="--model: class names (comma list or one per line)")
    p.add_argument("--output-layout", choices=("anchor_free_decoded", "yolov5_decoded"), default=None,
                   help="--model: its output layout (default: from --names and the output's width)")
    p.add_argument("--strides", metavar="S,S,..", default=None,
                   help="--model: its head's strides (input sides must be multiples of the largest)")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--imgsz", type=int, default=None, help="input side (default: --config's model.imgsz when given, else the checkpoint's)")
    config_flag(p, "--opset", "export.opset", type=int, help="ONNX opset (13: TensorRT 8.0/8.2 on JetPack 4.6)")
    config_flag(p, "--dynamic-batch", "export.dynamic_batch", True, help="symbolic batch dimension")
    config_flag(p, "--no-simplify", "export.simplify", False, help="skip onnxsim (debugging)")
    config_flag(p, "--nms-plugin", "export.nms_plugin", True, help="append TensorRT's EfficientNMS_TRT to the graph")
    p.add_argument("--int8", action="store_true", help="also write model.int8.onnx (QDQ) calibrated on --calib")
    p.add_argument("--calib", default=None, help="folder of .npy NCHW float32 calibration batches")
    p.add_argument("--images", default=None, help="folder of images for the ORT/PyTorch parity check")
    config_flag(p, "--parity-images", "export.parity_images", type=int, help="how many images the parity check uses")
    config_flag(p, "--parity-atol", "export.parity_atol", type=float, metavar="ATOL",
                help="largest |ORT - torch| allowed in the raw outputs before NMS; raise it only when you know "
                     "why they differ (the error says where)")
    config_flag(p, "--parity-min-match", "export.parity_min_match", type=float, metavar="SHARE",
                help="share of post-NMS detections that must agree, near-ties excused")
    p.add_argument("--conf", type=float, default=0.25, help="score threshold written to the manifest / NMS plugin")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=300, help="detections kept per image")
    p.add_argument("--config", default=None, help="YAML config file whose export section to use (e.g. a run's "
                                                   "config.yaml); flags win over it")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable (e.g. --set export.opset=17)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_export)

    v = subparsers.add_parser("verify", help="re-check a deploy bundle (sha256, graph verification, ORT smoke run)",
                              epilog=VERIFY_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("bundle", metavar="BUNDLE", help="bundle folder written by `edgeprune export`")
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.set_defaults(handler=_verify)


def _export(args):
    from ..config import config_from_args
    from ..errors import UsageError
    from .bundler import export_bundle

    try:
        strides = [int(v) for v in args.strides.split(",")] if args.strides else None
    except ValueError:
        raise UsageError("--strides: comma-separated integers, e.g. 8,16,32") from None
    if args.source is None and args.model is None:
        raise UsageError("give MODEL_DIR_OR_CKPT or --model PKG.MOD:FN")
    cfg = config_from_args(args)
    res = export_bundle(args.source, args.out, cfg.export, model_factory=args.model, weights=args.weights,
                        names=args.names, output_layout=args.output_layout, strides=strides,
                        imgsz=args.imgsz or (cfg.model.imgsz if args.config else None), int8=args.int8,
                        calib=args.calib, images=args.images, conf=args.conf, iou=args.iou, max_det=args.max_det)
    if args.json:
        sys.stdout.write(json.dumps(res, indent=2) + "\n")
    else:
        m = res["manifest"]
        sys.stdout.write("bundle {}: {} ({} nodes, opset {}, nms {}), verified {} convs / {} adds / {} concats, "
                         "parity max|diff| {:.2e} on {} images{}\n".format(
                             res["bundle"], m["model"]["file"], res["graph"]["nodes"], m["model"]["opset"],
                             m["model"]["nms"], res["verify"]["conv"], res["verify"]["add"], res["verify"]["concat"],
                             res["parity"]["max_abs_diff"], res["parity"]["images"],
                             ", int8: " + m["extra_files"]["int8_model"] if "int8_model" in m["extra_files"] else ""))
    return 0


def _verify(args):
    from .bundler import verify_bundle

    res = verify_bundle(args.bundle)
    if args.json:
        sys.stdout.write(json.dumps(res, indent=2) + "\n")
    else:
        sys.stdout.write("bundle {}: sha256 ok, verified {} convs / {} adds / {} concats / {} junctions, smoke {}\n".format(
            res["bundle"], res["verify"]["conv"], res["verify"]["add"], res["verify"]["concat"],
            res["verify"]["junctions"], res["smoke"]))
    return 0
