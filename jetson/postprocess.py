"""Post-processing: the one implementation shared by host evaluation and device inference.
Python 3.6 compatible, numpy only.

Input: the model's decoded output, in one of the manifest's `output_layout`s:
- "yolov5_decoded" (anchor-based, edgeprune/models/yolo.py): [B, N, 5+nc] = (cx, cy, w, h) in
  network-input pixels, objectness, per-class probabilities; score = objectness * class probability;
- "anchor_free_decoded" (edgeprune/models/yolov8.py): [B, N, 4+nc] = (cx, cy, w, h), per-class
  probabilities; score = class probability.
All values already sigmoid-activated. Output per image: boxes (K,4) xyxy, scores (K,), class ids (K,).
"""
import numpy as np


def xywh_to_xyxy(b):
    out = np.empty_like(b)
    out[:, 0] = b[:, 0] - b[:, 2] / 2
    out[:, 1] = b[:, 1] - b[:, 3] / 2
    out[:, 2] = b[:, 0] + b[:, 2] / 2
    out[:, 3] = b[:, 1] + b[:, 3] / 2
    return out


def box_iou(a, b):
    """IoU matrix between (N,4) and (M,4) xyxy boxes."""
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(boxes, scores, iou_threshold):
    """Greedy NMS; returns kept indices sorted by descending score."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        if order.size == 1:
            break
        ious = box_iou(boxes[i:i + 1], boxes[order[1:]])[0]
        order = order[1:][ious <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes, scores, classes, iou_threshold):
    """Class-aware NMS: boxes of different classes never suppress each other (coordinate offset trick)."""
    if boxes.shape[0] == 0:
        return np.zeros((0,), dtype=np.int64)
    offset = classes.astype(np.float32)[:, None] * (float(boxes.max()) + 1.0)
    return nms(boxes + offset, scores, iou_threshold)


DECODED_LAYOUTS = ("yolov5_decoded", "anchor_free_decoded")


def _candidates(p, conf_threshold, layout):
    """-> (boxes cxcywh, per-class scores) of the rows that may pass `conf_threshold`."""
    if layout == "anchor_free_decoded":
        cand = p[p[:, 4:].max(1) > conf_threshold] if p.shape[1] > 4 else p[:0]
        return cand[:, :4], cand[:, 4:]
    if layout != "yolov5_decoded":
        raise ValueError("unknown output layout {!r}; expected one of {}".format(layout, DECODED_LAYOUTS))
    cand = p[p[:, 4] > conf_threshold]
    return cand[:, :4], cand[:, 5:] * cand[:, 4:5]


def postprocess(pred, conf_threshold=0.25, iou_threshold=0.45, max_detections=300,
                class_agnostic=False, max_candidates=30000, layout="yolov5_decoded"):
    """pred: [B, N, 5+nc] or [B, N, 4+nc] decoded (see `layout` above). Returns a list (per image) of
    (boxes xyxy, scores, class_ids) in network-input pixels (best class per box)."""
    results = []
    for p in pred:
        xywh, cls_scores = _candidates(p, conf_threshold, layout)
        if xywh.shape[0] == 0:
            results.append((np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64)))
            continue
        class_ids = cls_scores.argmax(1)
        scores = cls_scores[np.arange(cls_scores.shape[0]), class_ids]
        ok = scores > conf_threshold
        boxes, scores, class_ids = xywh_to_xyxy(xywh[ok]), scores[ok], class_ids[ok]
        if scores.shape[0] > max_candidates:
            top = np.argsort(-scores, kind="stable")[:max_candidates]
            boxes, scores, class_ids = boxes[top], scores[top], class_ids[top]
        if class_agnostic:
            keep = nms(boxes, scores, iou_threshold)
        else:
            keep = batched_nms(boxes, scores, class_ids, iou_threshold)
        keep = keep[:max_detections]
        results.append((boxes[keep].astype(np.float32), scores[keep].astype(np.float32), class_ids[keep].astype(np.int64)))
    return results


def scale_boxes(boxes, meta):
    """Map xyxy boxes from network-input pixels back to the source image (undo letterbox), clipped."""
    pad_x, pad_y = meta["pad"]
    out = boxes.copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - pad_x) / meta["scale"]
    out[:, [1, 3]] = (out[:, [1, 3]] - pad_y) / meta["scale"]
    h, w = meta["orig_shape"]
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h)
    return out


def from_efficient_nms(outputs, conf_threshold=0.0, max_detections=None):
    """The four EfficientNMS_TRT outputs (num_detections [B,1], boxes [B,K,4] xyxy, scores [B,K], classes [B,K])
    -> the same per-image (boxes, scores, class_ids) tuples as `postprocess` (NMS already done in the engine)."""
    num, boxes, scores, classes = outputs
    results = []
    for b in range(boxes.shape[0]):
        n = int(np.asarray(num[b]).reshape(-1)[0])
        bx = boxes[b, :n].astype(np.float32)
        sc = scores[b, :n].astype(np.float32)
        cl = classes[b, :n].astype(np.int64)
        keep = sc >= conf_threshold
        bx, sc, cl = bx[keep], sc[keep], cl[keep]
        if max_detections is not None:
            bx, sc, cl = bx[:max_detections], sc[:max_detections], cl[:max_detections]
        results.append((bx, sc, cl))
    return results
