"""INT8 (ORT static QDQ) vs FP32 on the host: COCO mAP on a dataset's val split and ORT CPU latency.

example:
  python benchmarks/int8_host.py --ckpt runs/default/finetune/best.pt --data <dataset dir or data.yaml> \
      --imgsz 256 --calib-images 128 --val-images 200 --out benchmarks/int8_host.json

`--truth fp32` scores every path against FP32's 5 best detections per image instead of the labels: a fidelity
measure for models whose mAP is too low to compare (e.g. untrained ones). Calibration images come from the train split (preprocessed like the bundle, written as .npy batches in the
format `edgeprune calib build` uses), evaluation images from the val split. Writes one JSON document.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--calib-images", type=int, default=128)
    ap.add_argument("--val-images", type=int, default=200)
    ap.add_argument("--method", default="percentile", choices=["minmax", "entropy", "percentile"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quantize-head", action="store_true", help="quantize the detect head's Convs too")
    ap.add_argument("--truth", default="labels", choices=["labels", "fp32"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch

    from edgeprune.data.dataset import load_dataset
    from edgeprune.data.samples import read_image
    from edgeprune.export import ort_run
    from edgeprune.metrics.coco import coco_map
    from edgeprune.export.onnx_export import export_onnx
    from edgeprune.export.bundler import ort_latency_ms
    from edgeprune.export.quantize import head_nodes, quantize_int8
    from edgeprune.fsio import atomic_write_json, sha256_file
    from edgeprune.models.io import model_from_checkpoint
    from jetson.postprocess import postprocess, scale_boxes
    from jetson.preprocess import preprocess

    torch.set_num_threads(args.threads)
    ds = load_dataset(args.data)
    model = model_from_checkpoint(args.ckpt).eval()
    exp = export_onnx(model, args.imgsz)
    fp32 = exp.model
    float_nodes = [] if args.quantize_head else head_nodes(exp.conv_nodes)


    with tempfile.TemporaryDirectory() as calib:
        batches = []
        train = ds.splits["train"][: args.calib_images]
        for b in range(0, len(train), 8):
            x = np.concatenate([preprocess(read_image(s.image), args.imgsz)[0] for s in train[b:b + 8]])
            name = f"batch_{b // 8:05d}.npy"
            np.save(Path(calib) / name, x)
            batches.append({"file": name, "sha256": sha256_file(Path(calib) / name)})
        (Path(calib) / "manifest.json").write_text(json.dumps({"version": 1, "batches": batches}))
        t = time.time()
        int8, info = quantize_int8(fp32, calib, max_images=args.calib_images, method=args.method,
                                   float_nodes=float_nodes)
        info["quantize_s"] = time.time() - t

    val = ds.splits["val"][: args.val_images]
    truth = [(np.asarray(s.boxes, np.float32).reshape(-1, 4), np.asarray(s.classes, np.int64)) for s in val]
    sessions = {"fp32": ort_run.session(fp32, args.threads), "int8": ort_run.session(int8, args.threads)}
    dets: dict[str, list] = {"torch": [], "fp32": [], "int8": []}
    for s in val:
        x, meta = preprocess(read_image(s.image), args.imgsz)
        with torch.no_grad():
            outs = {"torch": model(torch.from_numpy(x)).numpy()}
        outs.update({k: ort_run.run(sess, x) for k, sess in sessions.items()})
        for k, out in outs.items():
            boxes, scores, classes = postprocess(out, 0.001, 0.6)[0]
            dets[k].append((scale_boxes(boxes, meta), scores, classes))
    if args.truth == "fp32":
        truth = [(boxes[:5], classes[:5]) for boxes, _, classes in dets["fp32"]]
    size = tuple(read_image(val[0].image).shape[:2])
    maps = {k: coco_map(truth, d, ds.names, [size] * len(truth)) for k, d in dets.items()}
    x, _ = preprocess(read_image(val[0].image), args.imgsz)
    latency = {k: ort_latency_ms(sess, x, warmup=5, iters=50) for k, sess in sessions.items()}
    result = {"ckpt": str(args.ckpt), "data": str(args.data), "imgsz": args.imgsz, "val_images": len(val),
              "threads": args.threads, "truth": args.truth, "quantization": info, "map": maps,
              "map50_drop_points": 100 * (maps["fp32"]["map50"] - maps["int8"]["map50"]),
              "map_drop_points": 100 * (maps["fp32"]["map"] - maps["int8"]["map"]),
              "ort_cpu_latency_ms": latency,
              "speedup": latency["fp32"]["p50"] / latency["int8"]["p50"]}
    text = json.dumps(result, indent=2)
    if args.out:
        atomic_write_json(args.out, result)
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
