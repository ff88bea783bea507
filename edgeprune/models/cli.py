"""`edgeprune import`: a trained YOLOv5 / ultralytics detector -> an edgeprune checkpoint. Python 3.6
compatible; the handler imports torch lazily."""
import argparse
import json
import sys

EPILOG = """examples:
  edgeprune import path/to/yolov5s.pt --out path/to/model.pt        # a yolov5-repository checkpoint (v6.0+)
  edgeprune import path/to/yolov8n.pt --out path/to/model.pt --json  # an ultralytics detection checkpoint
  edgeprune import path/to/weights.pt --yaml path/to/yolov5s.yaml --out path/to/model.pt   # state_dict + YAML
  edgeprune compress --model path/to/model.pt --data path/to/NWPU_VHR-10   # prune it from there

The file is read without executing anything in it (a pickle that asks to run code is refused) and
without yolov5 or ultralytics installed. The result is an edgeprune checkpoint: a JSON spec + a
state_dict, loadable with torch.load(weights_only=True)."""


def register(subparsers):
    p = subparsers.add_parser("import", help="import a trained YOLOv5 / YOLOv8 / YOLO11 detector checkpoint",
                              description="Turn a yolov5-repository or ultralytics detection checkpoint (or a "
                                          "state_dict + its YAML) into an edgeprune checkpoint.",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CKPT", help="the trained model (.pt)")
    p.add_argument("--out", required=True, metavar="PT", help="edgeprune checkpoint to write")
    p.add_argument("--yaml", default=None, metavar="YAML",
                   help="the model's architecture YAML (needed for a plain state_dict)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=_run)


def _run(args):
    from .importer import import_checkpoint

    result = import_checkpoint(args.checkpoint, args.out, args.yaml)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("imported {} ({} checkpoint): {} {} with {} classes, {:,} parameters{}\nwrote {}\n".format(
            result["source"], result["format"], result["family"], result["size"], result["num_classes"],
            result["params"], ", {} per-layer widths".format(result["custom_widths"]) if result["custom_widths"] else "",
            result["out"]))
    return 0
