"""ONNX Runtime vs PyTorch parity on real images: raw decoded outputs and post-NMS detections.

Both paths use the one numpy pre/post-processing in jetson/ (letterbox, NMS), so any difference is the graph.
The raw outputs (before NMS) must agree within `atol`. NMS is discontinuous: two graphs that agree to 1e-6 can
still keep different boxes where a decision sits on a tie (a score at the threshold, two overlapping boxes of
equal score, an IoU at the NMS threshold, the max-detections cut). `compare_detections` pairs the detections of
both sides and excuses an unpaired one only when such a near-tie explains it, so equal graphs pass and a real
difference does not. With ground truth, the mAP through ORT must equal the mAP through torch within `map_tol`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from tqdm import tqdm

from jetson.imageio import IMAGE_EXTS, list_images
from jetson.postprocess import box_iou, postprocess, scale_boxes
from jetson.preprocess import preprocess

from ..data.samples import read_image
from ..errors import DataError, ExportError
from ..models.yolo import Detector
from . import ort_run
from ..metrics.coco import Detections as ImageDetections
from ..metrics.coco import GroundTruth, coco_map

Detections = list[ImageDetections]   # per image: boxes (K,4) xyxy, scores (K,), classes (K,)
Truth = list[GroundTruth]            # per image: boxes (M,4) xyxy, classes (M,)

MAX_DET = 300
# NMS decisions this close to a threshold may flip between two numerically equal graphs.
SCORE_TOL = 1e-3
IOU_TOL = 0.01


def load_images(folder: str | Path, limit: int) -> list[np.ndarray]:
    """Up to `limit` images of a folder (sorted names) as HxWx3 uint8 RGB."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found (pass --images DIR with a few validation images)")
    files = list_images(folder)[:limit]
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_EXTS)}) found")
    return [read_image(p) for p in files]


def _column_name(col: int, layout: str = "yolov5_decoded") -> str:
    head = ("cx", "cy", "w", "h") + (("objectness",) if layout == "yolov5_decoded" else ())
    return head[col] if col < len(head) else f"class {col - len(head)} probability"


def _unpaired(ref, test, iou_min: float, score_tol: float) -> tuple[int, np.ndarray, np.ndarray]:
    """Pair one image's detections (same class, IoU >= iou_min, scores within score_tol) as many as possible
    (a maximum bipartite matching: equal-score detections come out of NMS in either order, and a first-fit
    pairing can then leave two of them unpaired): (pairs, unpaired-ref mask, unpaired-test mask)."""
    (rb, rs, rc), (tb, ts, tc) = ref, test
    ious = box_iou(rb, tb) if len(rs) and len(ts) else np.zeros((len(rs), len(ts)))
    ok = (ious >= iou_min) & (rc[:, None] == tc[None, :]) & (np.abs(rs[:, None] - ts[None, :]) <= score_tol)
    owner = np.full(len(ts), -1)                    # test j -> the ref detection it is paired with

    def augment(i: int, seen: np.ndarray) -> bool:  # Kuhn's augmenting path; chains are short here
        for j in np.flatnonzero(ok[i] & ~seen):
            seen[j] = True
            if owner[j] < 0 or augment(int(owner[j]), seen):
                owner[j] = i
                return True
        return False

    pairs = sum(augment(i, np.zeros(len(ts), bool)) for i in range(len(rs)))
    free_t = owner < 0
    free_r = np.ones(len(rs), bool)
    free_r[owner[~free_t]] = False
    return int(pairs), free_r, free_t


def match_detections(ref: Detections, test: Detections, iou_min: float = 0.99, score_tol: float = SCORE_TOL) -> float:
    """Share of reference detections that `test` reproduces (same class, IoU >= iou_min, score within tol),
    taken over both directions so extra test detections also count against it. Ties are not excused."""
    hits, total = 0, 0
    for r, t in zip(ref, test):
        total += max(len(r[1]), len(t[1]))
        hits += _unpaired(r, t, iou_min, score_tol)[0]
    return 1.0 if total == 0 else hits / total


def _near_ties(ref, test, free_r: np.ndarray, free_t: np.ndarray, conf: float, iou: float,
               max_det: int, score_tol: float, iou_tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Which unpaired detections of one image a near-tie of NMS explains (masks over ref and test)."""
    if not (free_r.any() or free_t.any()):
        return free_r, free_t
    (rb, rs, rc), (tb, ts, tc) = ref, test
    boxes, scores = np.concatenate([rb, tb]), np.concatenate([rs, ts])
    classes = np.concatenate([rc, tc])
    side = np.r_[np.zeros(len(rs), bool), np.ones(len(ts), bool)]
    free = np.r_[free_r, free_t]
    all_iou = box_iou(boxes, boxes)
    same = classes[:, None] == classes[None, :]
    cross = side[:, None] != side[None, :]
    close = np.abs(scores[:, None] - scores[None, :]) <= score_tol
    root = free & (np.abs(scores - conf) <= score_tol)                        # at the score threshold
    root |= free & (same & (np.abs(all_iou - iou) <= iou_tol)).any(1)       # an IoU at the NMS threshold
    both = free[:, None] & free[None, :] & cross & close
    root |= (both & same & (all_iou > iou - iou_tol)).any(1)                # equal scores: NMS order flips
    root |= (both & ~same & (all_iou >= 0.99)).any(1)                       # equal class probabilities
    for s, n in ((False, len(rs)), (True, len(ts))):                        # the max-detections cut
        if n >= max_det:
            root |= free & (side == s) & (scores <= scores[side == s].min() + score_tol)
    # a flipped decision changes what the flipped box suppresses: spread along overlaps of unpaired boxes
    link = free[:, None] & free[None, :] & same & (all_iou > iou - iou_tol)
    tie = root.copy()
    while True:
        grown = tie | (link & tie[None, :]).any(1)
        if (grown == tie).all():
            break
        tie = grown
    return tie[:len(rs)] & free_r, tie[len(rs):] & free_t


def compare_detections(ref: Detections, test: Detections, conf: float, iou: float, max_det: int = MAX_DET,
                       iou_min: float = 0.99, score_tol: float = SCORE_TOL, iou_tol: float = IOU_TOL,
                       names: tuple[str, str] = ("torch", "ORT")) -> dict[str, Any]:
    """Pair post-NMS detections of two numerically close models and explain what does not pair.
    `agreement` = (paired + near-tie detections) / all detections of both sides; `unexplained` lists the
    first few detections that neither pair nor sit on a tie (image, side, class, score, box)."""
    paired = ties = total = 0
    unexplained: list[dict[str, Any]] = []
    for k, (r, t) in enumerate(zip(ref, test)):
        pairs, free_r, free_t = _unpaired(r, t, iou_min, score_tol)
        tie_r, tie_t = _near_ties(r, t, free_r, free_t, conf, iou, max_det, score_tol, iou_tol)
        paired += 2 * pairs
        ties += int(tie_r.sum() + tie_t.sum())
        total += len(r[1]) + len(t[1])
        for name, (b, sc, c), bad in ((names[0], r, free_r & ~tie_r), (names[1], t, free_t & ~tie_t)):
            for i in np.flatnonzero(bad)[:max(0, 5 - len(unexplained))]:
                unexplained.append({"image": k, "only_in": name, "class": int(c[i]), "score": round(float(sc[i]), 5),
                                    "box": [round(float(v), 1) for v in b[i]]})
    return {"agreement": 1.0 if total == 0 else (paired + ties) / total, "paired": paired, "near_ties": ties,
            "detections": total, "unexplained": unexplained}


def run_parity(model: Detector, graph: onnx.ModelProto | str | Path, images: list[np.ndarray],
               imgsz: int, truth: Truth | None = None, conf: float = 0.001, iou: float = 0.6,
               atol: float = 1e-3, map_tol: float = 0.001, min_match: float = 0.99,
               raise_on_fail: bool = True, layout: str | None = None) -> dict[str, Any]:
    """Compare ORT and torch on `images`; raise ExportError when outside the tolerances (or report `ok: false`).
    The error says what differed and where, and which export option relaxes it. `layout`: the output layout
    (default: the model's `output_layout`)."""
    if not images:
        raise ExportError("parity needs at least one image")
    sess = ort_run.session(graph)
    model = model.eval()
    raw: tuple[list[Any], list[Any]] = ([], [])       # per image, in network-input pixels: NMS's own view
    scaled: tuple[list[Any], list[Any]] = ([], [])    # in source-image pixels, for mAP
    max_diff, where = 0.0, ""
    layout = layout or getattr(model, "output_layout", "yolov5_decoded")
    for k, img in enumerate(tqdm(images, desc="parity", leave=False, disable=len(images) < 8)):
        x, meta = preprocess(img, imgsz)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        out = ort_run.run(sess, x)
        if out.shape != ref.shape:
            raise ExportError(f"ONNX output shape {out.shape} != torch output shape {ref.shape}")
        diff = np.abs(out - ref)
        if float(diff.max()) > max_diff or k == 0:
            _, row, col = np.unravel_index(int(diff.argmax()), diff.shape)
            max_diff = float(diff.max())
            where = (f"image {k}, output row {row} of {ref.shape[1]}, {_column_name(int(col), layout)}: "
                     f"torch {ref[0, row, col]:.6g} vs ORT {out[0, row, col]:.6g}")
        for dets, pred in zip(raw, (ref, out)):
            dets.append(postprocess(pred, conf, iou, MAX_DET, layout=layout)[0])
        for dets, (b, sc, c) in zip(scaled, (raw[0][-1], raw[1][-1])):
            dets.append((scale_boxes(b, meta), sc, c))
    agree = compare_detections(raw[0], raw[1], conf, iou)
    report: dict[str, Any] = {"images": len(images), "imgsz": imgsz, "max_abs_diff": max_diff, "max_abs_diff_at": where,
                              "atol": atol, "detections_torch": int(sum(len(d[1]) for d in raw[0])),
                              "detections_ort": int(sum(len(d[1]) for d in raw[1])),
                              "detection_match": match_detections(raw[0], raw[1]),
                              "detection_agreement": agree["agreement"], "near_ties": agree["near_ties"],
                              "min_match": min_match, "conf": conf, "iou": iou}
    problems = []
    if max_diff > atol:
        problems.append(f"max |ORT - torch| = {max_diff:.3g} > {atol:g} before NMS (at {where}); "
                        "--parity-atol (export.parity_atol) relaxes it")
    if agree["agreement"] < min_match:
        first = "; ".join(f"image {u['image']}: {u['only_in']} alone has class {u['class']} score {u['score']} "
                          f"box {u['box']}" for u in agree["unexplained"][:3])
        problems.append(f"only {agree['agreement']:.1%} of post-NMS detections agree (need {min_match:.0%}; "
                        f"{agree['near_ties']} near-ties excused; max raw diff {max_diff:.3g} at {where}; "
                        f"unexplained: {first}); --parity-min-match (export.parity_min_match) relaxes it")
    if truth is not None:
        size = images[0].shape[:2]
        names, sizes = [str(c) for c in range(model.num_classes)], [size] * len(images)
        m_t = {k: coco_map(truth, scaled[0], names, sizes)[k] for k in ("map50", "map")}
        m_o = {k: coco_map(truth, scaled[1], names, sizes)[k] for k in ("map50", "map")}
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
