"""ONNX Runtime vs PyTorch parity on real images: raw decoded outputs and post-NMS detections.

Both paths use the one numpy pre/post-processing in jetson/ (letterbox, NMS), so any difference is the graph.
With ground truth, the mAP through ORT must equal the mAP through torch within `map_tol` (0.1 point).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from tqdm import tqdm

from jetson.postprocess import box_iou, postprocess, scale_boxes
from jetson.preprocess import preprocess

from ..errors import DataError, ExportError
from ..models.yolo import Detector
from . import ort_run
from ..metrics.coco import Detections as ImageDetections
from ..metrics.coco import GroundTruth, coco_map

Detections = list[ImageDetections]   # per image: boxes (K,4) xyxy, scores (K,), classes (K,)
Truth = list[GroundTruth]            # per image: boxes (M,4) xyxy, classes (M,)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def load_images(folder: str | Path, limit: int) -> list[np.ndarray]:
    """Up to `limit` images of a folder (sorted names) as HxWx3 uint8 RGB."""
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found (pass --images DIR with a few validation images)")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    out = []
    for p in files:
        try:
            with Image.open(p) as im:
                out.append(np.asarray(im.convert("RGB")))
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{p}: cannot decode image ({exc})") from None
    return out


def _detections(pred: np.ndarray, meta: dict[str, Any], conf: float, iou: float,
                layout: str = "yolov5_decoded") -> tuple[np.ndarray, ...]:
    boxes, scores, classes = postprocess(pred, conf, iou, layout=layout)[0]
    return scale_boxes(boxes, meta), scores, classes


def match_detections(ref: Detections, test: Detections, iou_min: float = 0.99, score_tol: float = 1e-3) -> float:
    """Share of reference detections that `test` reproduces (same class, IoU >= iou_min, score within tol),
    taken over both directions so extra test detections also count against it."""
    hits, total = 0, 0
    for (rb, rs, rc), (tb, ts, tc) in zip(ref, test):
        total += max(len(rs), len(ts))
        if len(rs) == 0 or len(ts) == 0:
            continue
        ious = box_iou(rb, tb)
        ok = (ious >= iou_min) & (rc[:, None] == tc[None, :]) & (np.abs(rs[:, None] - ts[None, :]) <= score_tol)
        used: set[int] = set()
        for i in range(len(rs)):
            for j in np.flatnonzero(ok[i]):
                if j not in used:
                    used.add(int(j))
                    hits += 1
                    break
    return 1.0 if total == 0 else hits / total


def run_parity(model: Detector, graph: onnx.ModelProto | str | Path, images: list[np.ndarray],
               imgsz: int, truth: Truth | None = None, conf: float = 0.001, iou: float = 0.6,
               atol: float = 1e-3, map_tol: float = 0.001, min_match: float = 0.99,
               raise_on_fail: bool = True) -> dict[str, Any]:
    """Compare ORT and torch on `images`; raise ExportError when outside the tolerances (or report `ok: false`)."""
    if not images:
        raise ExportError("parity needs at least one image")
    sess = ort_run.session(graph)
    model = model.eval()
    torch_dets: Detections = []
    ort_dets: Detections = []
    max_diff = 0.0
    for img in tqdm(images, desc="parity", leave=False, disable=len(images) < 8):
        x, meta = preprocess(img, imgsz)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        out = ort_run.run(sess, x)
        if out.shape != ref.shape:
            raise ExportError(f"ONNX output shape {out.shape} != torch output shape {ref.shape}")
        max_diff = max(max_diff, float(np.abs(out - ref).max()))
        layout = getattr(model, "output_layout", "yolov5_decoded")
        torch_dets.append(_detections(ref, meta, conf, iou, layout))
        ort_dets.append(_detections(out, meta, conf, iou, layout))
    match = match_detections(torch_dets, ort_dets)
    report: dict[str, Any] = {"images": len(images), "imgsz": imgsz, "max_abs_diff": max_diff, "atol": atol,
                              "detections_torch": int(sum(len(d[1]) for d in torch_dets)),
                              "detections_ort": int(sum(len(d[1]) for d in ort_dets)),
                              "detection_match": match, "conf": conf, "iou": iou}
    problems = []
    if max_diff > atol:
        problems.append(f"max |ORT - torch| = {max_diff:.3g} > {atol}")
    if match < min_match:
        problems.append(f"only {match:.1%} of post-NMS detections agree (need {min_match:.0%})")
    if truth is not None:
        size = images[0].shape[:2]
        names, sizes = [str(c) for c in range(model.num_classes)], [size] * len(images)
        m_t = {k: coco_map(truth, torch_dets, names, sizes)[k] for k in ("map50", "map")}
        m_o = {k: coco_map(truth, ort_dets, names, sizes)[k] for k in ("map50", "map")}
        report["map_torch"], report["map_ort"] = m_t, m_o
        if abs(m_t["map50"] - m_o["map50"]) > map_tol or abs(m_t["map"] - m_o["map"]) > map_tol:
            problems.append(f"mAP differs: torch {m_t} vs ORT {m_o} (tolerance {map_tol * 100:.1f} point)")
    report["ok"], report["problems"] = not problems, problems
    if problems and raise_on_fail:
        raise ExportError("ONNX Runtime / PyTorch parity failed: " + "; ".join(problems))
    return report


def synthetic_images(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """Seeded stand-ins when no image folder is given: textured ground with bright rectangles of varied
    aspect (letterboxing is exercised by the non-square shapes)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = int(rng.integers(size // 2, size * 2)), int(rng.integers(size // 2, size * 2))
        img = (rng.normal(100, 25, (h, w, 3))).clip(0, 255).astype(np.uint8)
        for _ in range(int(rng.integers(1, 6))):
            bh, bw = int(rng.integers(4, max(5, h // 3))), int(rng.integers(4, max(5, w // 3)))
            y, x = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
            img[y:y + bh, x:x + bw] = rng.integers(150, 256, 3)
        out.append(img)
    return out
