"""Anchors fitted to a dataset: best-possible recall (BPR) of a set of anchors, and k-means anchors.

The metric is YOLOv5's shape match: a box fits an anchor when max(w/aw, aw/w, h/ah, ah/h) < thr
(thr = the loss's anchor_t, 4). BPR is the share of boxes that fit at least one anchor. The synthetic
targets are small (8-100 px) and YOLOv5's COCO anchors fit them badly, so new models get k-means
anchors whenever the defaults' BPR is below 0.98. Because the 4x ratio rule is loose, BPR alone rarely
flags anchors that are merely poor (COCO's P5 anchors of 116-373 px against 8-100 px boxes still give BPR 1),
so the anchors are also replaced when k-means improves the fitness (mean best ratio per box, 0 for a box
no anchor matches) by more than `min_gain` (5 %).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import DataError


def box_sizes(samples: Iterable, imgsz: int) -> np.ndarray:
    """(N, 2) box w, h in network-input pixels: the letterbox scales each image by imgsz / max(h, w)."""
    from PIL import Image

    sizes: list[np.ndarray] = []
    shapes: dict[Path, tuple[int, int]] = {}
    for s in samples:
        if len(s.boxes) == 0:
            continue
        path = Path(s.image)
        if path not in shapes:
            try:
                with Image.open(path) as im:      # reads the header only
                    shapes[path] = im.size
            except OSError as exc:
                raise DataError(f"{path}: cannot read the image size for anchor fitting ({exc})") from None
        w, h = shapes[path]
        b = np.asarray(s.boxes, dtype=np.float64).reshape(-1, 4)
        sizes.append((b[:, 2:4] - b[:, 0:2]) * (imgsz / max(w, h)))
    if not sizes:
        return np.zeros((0, 2))
    wh = np.concatenate(sizes)
    return wh[(wh >= 2.0).all(1)]          # sub-2-pixel boxes carry no shape information


def _fit(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """[N, K] best-side ratio in (0, 1]: min over (w, h) of min(r, 1/r)."""
    r = wh[:, None, :] / anchors[None, :, :]
    return np.minimum(r, 1.0 / r).min(2)


def best_possible_recall(wh: np.ndarray, anchors: np.ndarray | list, thr: float = 4.0) -> float:
    """Share of boxes matching at least one anchor (anchors: (K,2) or YOLO's per-level flat lists)."""
    if len(wh) == 0:
        return 1.0
    a = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    return float((_fit(wh, a).max(1) > 1.0 / thr).mean())


def anchor_fitness(wh: np.ndarray, anchors: np.ndarray | list, thr: float = 4.0) -> float:
    """Mean over boxes of the best anchor's side ratio (1 = a perfectly shaped anchor), 0 if none matches."""
    if len(wh) == 0:
        return 1.0
    best = _fit(wh, np.asarray(anchors, dtype=np.float64).reshape(-1, 2)).max(1)
    return float((best * (best > 1.0 / thr)).mean())


def kmeans_anchors(wh: np.ndarray, n: int = 9, seed: int = 0, iters: int = 100) -> np.ndarray:
    """k-means in log(w, h) space (a ratio-aware distance, like the w/h-ratio match), k-means++ seeding.
    Returns (n, 2) anchors sorted by area."""
    if len(wh) < n:
        raise DataError(f"anchor fitting needs at least {n} boxes, the dataset has {len(wh)}; "
                        "keep the default anchors or add labelled images")
    rng = np.random.default_rng(seed)
    x = np.log(wh)
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, n):
        d = np.min(((x[:, None] - np.asarray(centres)[None]) ** 2).sum(2), 1)
        centres.append(x[rng.choice(len(x), p=d / d.sum())] if d.sum() > 0 else x[rng.integers(len(x))])
    c = np.asarray(centres)
    for _ in range(iters):
        assign = ((x[:, None] - c[None]) ** 2).sum(2).argmin(1)
        new = np.array([x[assign == k].mean(0) if (assign == k).any() else c[k] for k in range(n)])
        if np.allclose(new, c):
            break
        c = new
    anchors = np.exp(c)
    return anchors[np.argsort(anchors.prod(1))]


def auto_anchors(samples: Iterable, imgsz: int, current: list[list[float]], thr: float = 4.0,
                 min_bpr: float = 0.98, min_gain: float = 0.05, seed: int = 0) -> tuple[list[list[float]], dict]:
    """Anchors to use for a new model: k-means anchors (3 per level, small to large) when `current` has
    BPR < min_bpr or k-means improves the fitness by more than min_gain (relative); else `current`.
    Returns (anchors as 3 lists of 6, report dict)."""
    wh = box_sizes(samples, imgsz)
    bpr, fit = best_possible_recall(wh, current, thr), anchor_fitness(wh, current, thr)
    report = {"boxes": int(len(wh)), "bpr_before": bpr, "bpr_after": bpr, "fitness_before": fit,
              "fitness_after": fit, "changed": False}
    keep = [list(map(float, a)) for a in current]
    if len(wh) < 9:
        return keep, report
    new = kmeans_anchors(wh, 9, seed)
    new_bpr, new_fit = best_possible_recall(wh, new, thr), anchor_fitness(wh, new, thr)
    better = new_bpr >= bpr and (bpr < min_bpr or new_fit > fit * (1 + min_gain))
    if not better:
        return keep, report
    levels = [[round(float(v), 2) for v in new[3 * i:3 * i + 3].reshape(-1)] for i in range(3)]
    report.update(bpr_after=new_bpr, fitness_after=new_fit, changed=True, anchors=levels)
    return levels, report
