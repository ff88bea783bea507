"""Pick calibration images from a YOLO-labelled dataset. Python 3.6, numpy only (no edgeprune.data: the
device may not have the host side).

stratified (default): every (class, object-size band) present in the data is covered before anything
else is added; the rest is filled in a seeded order, so the set is deterministic for a seed and does not
depend on the file system's listing order. random: a seeded sample.
Size bands use sqrt(w*h) of the normalised box against COCO's 32/96 px limits at 640 px.
"""
import hashlib
import os

import numpy as np

from edgeprune.errors import DataError, UsageError

from jetson.imageio import list_images

SIZE_BANDS = (("small", 32.0 / 640.0), ("medium", 96.0 / 640.0), ("large", float("inf")))
STRATEGIES = ("stratified", "random")


def size_band(w, h):
    side = float(np.sqrt(max(w, 0.0) * max(h, 0.0)))
    for name, limit in SIZE_BANDS:
        if side < limit:
            return name
    return SIZE_BANDS[-1][0]


def label_path_for(image_path):
    """YOLO convention: .../images/<split>/x.jpg -> .../labels/<split>/x.txt, else x.txt next to the image."""
    stem = os.path.splitext(image_path)[0]
    parts = stem.split(os.sep)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            cand = os.sep.join(parts[:i] + ["labels"] + parts[i + 1:]) + ".txt"
            if os.path.exists(cand):
                return cand
            break
    return stem + ".txt"


def read_yolo_labels(path):
    """(classes int64 (N,), widths, heights normalised) from a YOLO txt; DataError names file:line."""
    classes, ws, hs = [], [], []
    if not os.path.exists(path):
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 5:
                raise DataError("{}:{}: expected 'class cx cy w h', got {!r}".format(path, lineno, line.strip()))
            try:
                c = int(fields[0])
                _, _, w, h = [float(v) for v in fields[1:5]]
            except ValueError:
                raise DataError("{}:{}: not numbers: {!r}".format(path, lineno, line.strip()))
            if c < 0 or not (0.0 <= w <= 1.0 and 0.0 <= h <= 1.0):
                raise DataError("{}:{}: class must be >= 0 and w, h normalised to [0, 1]: {!r}"
                                .format(path, lineno, line.strip()))
            classes.append(c)
            ws.append(w)
            hs.append(h)
    return np.asarray(classes, np.int64), np.asarray(ws), np.asarray(hs)


def find_images(data, split="train"):
    """Images of `data`: a folder (its images/<split> part when there is one) or a .txt list of image paths."""
    data = str(data)
    if os.path.isfile(data) and data.endswith(".txt"):
        base = os.path.dirname(os.path.abspath(data))
        with open(data) as f:
            paths = [ln.strip() for ln in f if ln.strip()]
        return base, [p if os.path.isabs(p) else os.path.join(base, p) for p in paths]
    if not os.path.isdir(data):
        raise DataError("--data {}: not a folder or a .txt list of images".format(data))
    sub = os.path.join(data, "images", split)
    root = sub if split and os.path.isdir(sub) else data
    images = list_images(root)
    if not images:
        raise DataError("--data {}: no images found (looked in {})".format(data, root))
    return data, images


def scan_dataset(data, split="train"):
    """Candidates: {"path", "rel", "classes" (sorted unique), "strata" (sorted (class, band) pairs)}."""
    base, images = find_images(data, split)
    cands = []
    for path in images:
        classes, ws, hs = read_yolo_labels(label_path_for(path))
        strata = sorted(set((int(c), size_band(w, h)) for c, w, h in zip(classes, ws, hs)))
        cands.append({"path": path, "rel": os.path.relpath(path, base), "classes": sorted(set(int(c) for c in classes)),
                      "strata": strata})
    return cands


def _order_key(seed, rel):
    return hashlib.sha256("{}:{}".format(seed, rel).encode("utf-8")).hexdigest()


def select_images(cands, n, strategy="stratified", seed=0):
    """Returns (chosen candidates in a deterministic order, report dict)."""
    if strategy not in STRATEGIES:
        raise UsageError("--strategy {!r}: choose one of {}".format(strategy, ", ".join(STRATEGIES)))
    if n < 1:
        raise UsageError("--n must be >= 1, got {}".format(n))
    order = sorted(cands, key=lambda c: _order_key(seed, c["rel"]))
    if strategy == "random":
        chosen = order[:n]
    else:
        chosen = _stratified(order, n)
    all_strata = set(s for c in cands for s in c["strata"])
    got = set(s for c in chosen for s in c["strata"])
    report = {"strategy": strategy, "seed": seed, "requested": n, "selected": len(chosen), "available": len(cands),
              "classes": _count(c for ch in chosen for c in ch["classes"]),
              "bands": _count(b for ch in chosen for _, b in ch["strata"]),
              "strata_total": len(all_strata), "strata_covered": len(got),
              "strata_missing": ["{}/{}".format(c, b) for c, b in sorted(all_strata - got)]}
    return chosen, report


def _stratified(order, n):
    """Greedy coverage: rarest stratum first, take the seeded-first image that covers the most still
    uncovered strata; then fill with the seeded order."""
    holders = {}
    for c in order:
        for s in c["strata"]:
            holders.setdefault(s, []).append(c)
    uncovered = set(holders)
    chosen, taken = [], set()
    for s in sorted(holders, key=lambda s: (len(holders[s]), s)):
        if len(chosen) >= n:
            break
        if s not in uncovered:
            continue
        best = max((c for c in holders[s] if c["rel"] not in taken),
                   key=lambda c: len(uncovered.intersection(c["strata"])), default=None)
        if best is None:
            continue
        chosen.append(best)
        taken.add(best["rel"])
        uncovered.difference_update(best["strata"])
    for c in order:
        if len(chosen) >= n:
            break
        if c["rel"] not in taken:
            chosen.append(c)
            taken.add(c["rel"])
    return chosen


def _count(items):
    out = {}
    for it in items:
        out[str(it)] = out.get(str(it), 0) + 1
    return dict(sorted(out.items()))
