"""`jetson.postprocess.postprocess` on torch tensors, for host evaluation on the model's device.

The same steps in the same order as the device's numpy reference (objectness filter, best class, score
filter, top `max_candidates`, class-aware NMS, first `max_detections`), with torchvision's compiled NMS instead
of the greedy Python loop. Classes are separated by the reference's coordinate offset (class id x (max
coordinate + 1)) followed by `torchvision.ops.nms` — what `torchvision.ops.batched_nms` does for up to 1,000
boxes; above that it loops over classes, whose IoUs round differently from the offset boxes'. On CPU both
pipelines give the same detections (tests/train/test_metrics.py); on CUDA, IoUs can round differently
exactly at the threshold.
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import nms

from jetson.postprocess import DECODED_LAYOUTS


def _xywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    half = b[:, 2:4] / 2
    return torch.cat((b[:, :2] - half, b[:, :2] + half), 1)


def postprocess(pred: torch.Tensor, conf_threshold: float = 0.25, iou_threshold: float = 0.45,
                max_detections: int = 300, class_agnostic: bool = False, max_candidates: int = 30000,
                layout: str = "yolov5_decoded") -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """pred: [B, N, 5+nc] (yolov5_decoded) or [B, N, 4+nc] (anchor_free_decoded), any device. Per image (boxes
    xyxy float32, scores float32, class ids int64) as numpy arrays in network-input pixels — the reference's
    contract."""
    if layout not in DECODED_LAYOUTS:
        raise ValueError(f"unknown output layout {layout!r}; expected one of {DECODED_LAYOUTS}")
    results = []
    for p in pred.float():
        if layout == "anchor_free_decoded":
            cand = p[p[:, 4:].max(1).values > conf_threshold] if p.shape[1] > 4 else p[:0]
            cls_scores = cand[:, 4:]
        else:
            cand = p[p[:, 4] > conf_threshold]
            cls_scores = cand[:, 5:] * cand[:, 4:5]
        scores, class_ids = cls_scores.max(1)
        ok = scores > conf_threshold
        boxes, scores, class_ids = _xywh_to_xyxy(cand[ok, :4]), scores[ok], class_ids[ok]
        if scores.shape[0] > max_candidates:
            top = torch.sort(-scores, stable=True).indices[:max_candidates]
            boxes, scores, class_ids = boxes[top], scores[top], class_ids[top]
        if boxes.shape[0] == 0:
            keep = class_ids
        elif class_agnostic:
            keep = nms(boxes, scores, iou_threshold)
        else:
            offset = class_ids.to(boxes.dtype)[:, None] * (boxes.max() + 1.0)
            keep = nms(boxes + offset, scores, iou_threshold)
        keep = keep[:max_detections]
        results.append((boxes[keep].cpu().numpy(), scores[keep].cpu().numpy(),
                        class_ids[keep].cpu().numpy().astype(np.int64)))
    return results
