"""COCO-style mAP of detections against boxes (faster-coco-eval, pycocotools API), used for the parity and
INT8 accuracy checks. Boxes are xyxy in one common pixel frame."""
from __future__ import annotations

import contextlib
import io

import numpy as np

Detections = list[tuple[np.ndarray, np.ndarray, np.ndarray]]   # per image: boxes (K,4), scores (K,), classes (K,)
Truth = list[tuple[np.ndarray, np.ndarray]]                      # per image: boxes (M,4), classes (M,)


def coco_map(dets: Detections, truth: Truth, num_classes: int, size: tuple[int, int]) -> dict[str, float]:
    """{"map50", "map"} in 0..1. Images without any detection or truth still count."""
    from faster_coco_eval import COCO, COCOeval_faster

    h, w = size
    images = [{"id": i + 1, "width": w, "height": h} for i in range(len(truth))]
    anns, results = [], []
    for i, (boxes, classes) in enumerate(truth):
        for b, c in zip(boxes, classes):
            bw, bh = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c) + 1, "iscrowd": 0,
                         "bbox": [float(b[0]), float(b[1]), bw, bh], "area": bw * bh})
    for i, (boxes, scores, classes) in enumerate(dets):
        for b, s, c in zip(boxes, scores, classes):
            results.append({"image_id": i + 1, "category_id": int(c) + 1, "score": float(s),
                            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    if not anns:
        return {"map50": 0.0, "map": 0.0}
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if not results:
            return {"map50": 0.0, "map": 0.0}
        dt = gt.loadRes(results)
        ev = COCOeval_faster(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"map50": max(float(ev.stats[1]), 0.0), "map": max(float(ev.stats[0]), 0.0)}
