"""`edgeprune train` and `edgeprune eval`. Python 3.6 compatible: declares arguments only; the handlers
import torch and the trainer lazily (edgeprune/train/commands.py)."""
from ..cliconfig import DATA_ROOT_HELP, ConfigHelpFormatter, config_flag


def _train(args):
    from .commands import train_command
    return train_command(args)


def _eval(args):
    from .commands import eval_command
    return eval_command(args)


def register(subparsers):
    p = subparsers.add_parser(
        "train", help="train a dense detector (YOLOv5- or YOLOv8/YOLO11-style, EMA, cosine LR, resumable)",
        formatter_class=ConfigHelpFormatter,
        epilog="example: edgeprune train --data synthetic --size n --imgsz 256 --epochs 30 --out runs/dense\n"
               "         edgeprune train --data synthetic --family yolov8 --out runs/dense-v8   (anchor-free head)\n"
               "         edgeprune train --data synthetic --out runs/dense --resume   (continue from last.pt)\n"
               "         edgeprune train --data runs/default/data/dataset --set train.lr0=0.02 --set train.mosaic=1.0 "
               "--out runs/lr002\n"
               "(runs/default/data/dataset links to the dataset `edgeprune compress` used)")
    config_flag(p, "--data", "data.source", help="dataset path (YOLO dir/data.yaml, COCO json, VOC, NWPU) or 'synthetic'")
    p.add_argument("--data-root", default=None, help=DATA_ROOT_HELP)
    p.add_argument("--preset", default=None, help="config preset: default | quick | benchmark (default: default)")
    p.add_argument("--config", default=None, help="YAML config file (overrides the preset)")
    config_flag(p, "--size", "model.size", choices=("n", "s", "m"), help="model size")
    config_flag(p, "--family", "model.family", choices=("yolov5", "yolov8", "yolo11"),
                help="model family: yolov5 anchors + objectness, yolov8/yolo11 anchor-free")
    config_flag(p, "--imgsz", "model.imgsz", type=int, help="network input side, multiple of 32")
    config_flag(p, "--epochs", "train.epochs", type=int, help="training epochs")
    p.add_argument("--out", required=True, help="output folder: last.pt, best.pt, log.csv, log.json, curves.png")
    p.add_argument("--resume", action="store_true", help="continue exactly from OUT/last.pt")
    p.add_argument("--no-autoanchor", action="store_true", help="keep YOLOv5's COCO anchors")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable (e.g. --set train.lr0=0.02)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    p.set_defaults(handler=_train)

    e = subparsers.add_parser(
        "eval", help="mAP50, mAP50-95, AP_small, per-class AP, params, FLOPs and CPU latency of a checkpoint",
        formatter_class=ConfigHelpFormatter,
        epilog="example: edgeprune eval runs/default/dense/best.pt --data runs/default/data/dataset --json\n"
               "         edgeprune eval runs/default/bundle --data runs/default/data/dataset   (a deploy bundle via "
               "ONNX Runtime; --precision int8 for its QDQ model)")
    e.add_argument("checkpoint", help="a checkpoint (.pt) written by edgeprune, or a deploy bundle folder")
    e.add_argument("--precision", default="fp32", choices=("fp32", "int8"),
                   help="bundles only: fp32 (model.onnx) or int8 (the bundle's QDQ model.int8.onnx)")
    e.add_argument("--backend", default="onnxruntime", help="bundles only: device runtime backend (default onnxruntime)")
    config_flag(e, "--data", "data.source", help="dataset path or 'synthetic'")
    e.add_argument("--data-root", default=None, help=DATA_ROOT_HELP)
    e.add_argument("--preset", default=None, help="config preset the synthetic data comes from (default: default)")
    e.add_argument("--split", default="val", help="split to evaluate (default val)")
    e.add_argument("--imgsz", type=int, default=None, help="input side (default: the one it was trained at)")
    e.add_argument("--conf", type=float, default=0.001, help="score threshold for mAP (default 0.001)")
    e.add_argument("--iou", type=float, default=0.6, help="NMS IoU threshold (default 0.6)")
    e.add_argument("--latency-iters", type=int, default=20, help="CPU latency runs after 5 warm-ups (0 = skip)")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(handler=_eval)
