"""COCO-style box mAP by faster-coco-eval (pycocotools as the fallback). We never reimplement COCO eval:
this module only converts arrays into COCO dicts and reads the evaluator's results back."""
from __future__ import annotations

import contextlib
import io
import logging
from typing import Any, Sequence

import numpy as np

# (boxes xyxy (K,4) in image pixels, scores (K,), class ids (K,)) per image
Detections = tuple[np.ndarray, np.ndarray, np.ndarray]
# (boxes xyxy (N,4), class ids (N,)) per image
GroundTruth = tuple[np.ndarray, np.ndarray]


def _backend(name: str):
    if name in ("auto", "faster-coco-eval"):
        try:
            from faster_coco_eval import COCO, COCOeval_faster
            return COCO, COCOeval_faster
        except ImportError:
            if name != "auto":
                raise
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    return COCO, COCOeval


def to_coco(gts: Sequence[GroundTruth], dets: Sequence[Detections], names: Sequence[str],
            image_sizes: Sequence[tuple[int, int]] | None = None) -> tuple[dict, list[dict]]:
    """Ground truth as a COCO dataset dict and detections as a COCO result list (ids start at 1)."""
    images, anns, results = [], [], []
    for i, (boxes, classes) in enumerate(gts):
        h, w = image_sizes[i] if image_sizes else (0, 0)
        images.append({"id": i + 1, "width": int(w), "height": int(h)})
        for b, c in zip(np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes).reshape(-1)):
            bw, bh = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c) + 1, "iscrowd": 0,
                         "bbox": [float(b[0]), float(b[1]), bw, bh], "area": bw * bh})
    for i, (boxes, scores, classes) in enumerate(dets):
        for b, s, c in zip(np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores).reshape(-1),
                           np.asarray(classes).reshape(-1)):
            results.append({"image_id": i + 1, "category_id": int(c) + 1, "score": float(s),
                            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(names)]
    return {"images": images, "annotations": anns, "categories": cats}, results


def coco_map(gts: Sequence[GroundTruth], dets: Sequence[Detections], names: Sequence[str],
             image_sizes: Sequence[tuple[int, int]] | None = None, backend: str = "auto") -> dict[str, Any]:
    """{"map50", "map" (50:95), "ap_small" (area < 32^2), "per_class": {name: {"ap50", "ap"}}}.
    COCO's convention is kept: -1 where a value is undefined (no ground truth of that class / size)."""
    gt_dict, results = to_coco(gts, dets, names, image_sizes)
    empty = {"map50": 0.0, "map": 0.0, "ap_small": 0.0,
             "per_class": {n: {"ap50": 0.0, "ap": 0.0} for n in names}}
    if not gt_dict["annotations"]:
        return {**empty, "ap_small": -1.0, "per_class": {n: {"ap50": -1.0, "ap": -1.0} for n in names}}
    if not results:   # both libraries refuse an empty result list; nothing detected = AP 0
        return empty
    COCO, COCOeval = _backend(backend)
    quiet = io.StringIO()
    logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)
    with contextlib.redirect_stdout(quiet):
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = np.asarray(ev.stats, dtype=np.float64)
    precision = np.asarray(ev.eval["precision"])        # [iou thr, recall, class, area range, max dets]
    per_class = {}
    for k, name in enumerate(names):
        p = precision[:, :, k, 0, -1]
        p50 = p[0]
        per_class[name] = {"ap50": float(p50[p50 > -1].mean()) if (p50 > -1).any() else -1.0,
                           "ap": float(p[p > -1].mean()) if (p > -1).any() else -1.0}
    return {"map50": float(stats[1]), "map": float(stats[0]), "ap_small": float(stats[3]), "per_class": per_class}


def resampled_map50(gts: Sequence[GroundTruth], dets: Sequence[Detections], names: Sequence[str],
                    image_sizes: Sequence[tuple[int, int]], samples: np.ndarray) -> np.ndarray:
    """mAP50 on each resample of the images: `samples` is an (n, k) array of image indices (a bootstrap draws
    them with replacement; an image drawn twice counts as two images). Give every model the same `samples`
    for a paired comparison: the spread of the per-resample differences is the sampling noise of the images."""
    out = np.empty(len(samples))
    for r, idx in enumerate(np.asarray(samples)):
        out[r] = coco_map([gts[i] for i in idx], [dets[i] for i in idx], names,
                          [image_sizes[i] for i in idx])["map50"]
    return out
