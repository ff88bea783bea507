"""Detection metrics: `evaluate` (COCO mAP of a model on samples) and `complexity` (params, FLOPs, latency).

`evaluate` pre- and post-processes exactly as the device does (jetson.preprocess, and metrics/postprocess.py:
jetson.postprocess's steps on the model's device with torchvision's NMS, tested to give the same detections),
so the host's mAP is the mAP of the deployed pipeline up to the backend's numerics.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from jetson.postprocess import scale_boxes
from jetson.preprocess import preprocess

from ..data.samples import read_image
from .coco import coco_map
from .postprocess import postprocess

__all__ = ["evaluate", "coco_map", "predict"]


@torch.no_grad()
def predict(model: torch.nn.Module, images: Sequence[Path], imgsz: int, conf: float = 0.001, iou: float = 0.6,
            batch: int = 16, max_det: int = 300, progress: bool = False):
    """Detections per image, in source-image pixels: list of (boxes xyxy, scores, class ids), and image shapes."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    dets, shapes = [], []
    try:
        for start in tqdm(range(0, len(images), batch), desc="eval", disable=not progress, leave=False):
            xs, metas = [], []
            for path in images[start:start + batch]:
                img = read_image(Path(path))
                x, meta = preprocess(img, imgsz)
                xs.append(x)
                metas.append(meta)
                shapes.append(meta["orig_shape"])
            pred = model(torch.from_numpy(np.concatenate(xs)).to(device))
            layout = getattr(model, "output_layout", "yolov5_decoded")
            for (boxes, scores, classes), meta in zip(postprocess(pred, conf, iou, max_det, layout=layout), metas):
                dets.append((scale_boxes(boxes, meta), scores, classes))
    finally:
        model.train(was_training)
    return dets, shapes


def evaluate(model: torch.nn.Module, samples: Sequence, names: Sequence[str], imgsz: int, conf: float = 0.001,
             iou: float = 0.6, batch: int = 16, progress: bool = False) -> dict[str, Any]:
    """COCO-style evaluation of `model` on `samples` (data.Sample: image path, xyxy boxes, classes).
    Returns {"map50", "map", "ap_small", "per_class": {name: {"ap50", "ap"}}} (-1 where undefined)."""
    dets, shapes = predict(model, [s.image for s in samples], imgsz, conf, iou, batch, progress=progress)
    gts = [(np.asarray(s.boxes, np.float32).reshape(-1, 4), np.asarray(s.classes).reshape(-1)) for s in samples]
    return coco_map(gts, dets, list(names), shapes)


def evaluate_bundle(bundle: str | Path, samples: Sequence, names: Sequence[str], precision: str = "fp32",
                    backend: str = "onnxruntime", conf: float = 0.001, iou: float = 0.6, max_det: int = 300,
                    progress: bool = False) -> dict[str, Any]:
    """COCO-style evaluation of a deploy bundle through the device runtime (the exact device pre/post-processing),
    e.g. its INT8 QDQ model (`precision="int8"`) against its FP32 one. Same result keys as `evaluate`."""
    from jetson.runtime import load_detector

    detector = load_detector(str(bundle), backend=backend, precision=precision)
    try:
        dets, shapes = [], []
        for s in tqdm(samples, desc=f"eval {precision}", disable=not progress, leave=False):
            img = read_image(s.image)
            found = detector.detect(img, conf, iou, max_det)
            dets.append((np.asarray([d["box"] for d in found], np.float32).reshape(-1, 4),
                         np.asarray([d["score"] for d in found], np.float32),
                         np.asarray([d["class_id"] for d in found], np.int64)))
            shapes.append(img.shape[:2])
    finally:
        detector.close()
    gts = [(np.asarray(s.boxes, np.float32).reshape(-1, 4), np.asarray(s.classes).reshape(-1)) for s in samples]
    return coco_map(gts, dets, list(names), shapes)
