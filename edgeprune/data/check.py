"""Dataset validation report: problems, per-class counts per split, box-size bands, and a PNG histogram.

Size bands follow COCO's area bands with an extra "tiny" band for remote sensing: an object is tiny when
its area < 16², small < 32², medium < 96², large otherwise.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..fsio import AtomicFile
from .dataset import load_dataset
from .samples import Dataset

BANDS = (("tiny", 16.0), ("small", 32.0), ("medium", 96.0), ("large", float("inf")))


def size_band(side: np.ndarray) -> np.ndarray:
    """Band index (0 tiny .. 3 large) of boxes whose sqrt(area) is `side`."""
    return np.searchsorted(np.array([b[1] for b in BANDS[:-1]]), side, side="right")


def _sides(ds: Dataset, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    samples = ds.splits[split] if split else ds.all_samples()
    boxes = [s.boxes for s in samples if len(s.boxes)]
    cls = [s.classes for s in samples if len(s.classes)]
    if not boxes:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    b = np.concatenate(boxes)
    return np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])), np.concatenate(cls)


def report(ds: Dataset) -> dict[str, Any]:
    """JSON-able summary: splits, per-class counts, size bands, sqrt(area) quantiles, problems."""
    out: dict[str, Any] = {"format": ds.format, "root": str(ds.root), "names": list(ds.names), "splits": {},
                           "skipped": ds.skipped, "problems": list(ds.problems)}
    for split, samples in ds.splits.items():
        sides, cls = _sides(ds, split)
        bands = size_band(sides)
        per_class = {}
        for k, name in enumerate(ds.names):
            m = cls == k
            per_class[name] = {"boxes": int(m.sum()),
                               **{b[0]: int((bands[m] == j).sum()) for j, b in enumerate(BANDS)}}
        out["splits"][split] = {
            "images": len(samples),
            "empty_images": sum(1 for s in samples if not len(s.boxes)),
            "boxes": int(len(sides)),
            "bands": {b[0]: int((bands == j).sum()) for j, b in enumerate(BANDS)},
            "side_px": ({"min": float(sides.min()), "p10": float(np.percentile(sides, 10)),
                         "median": float(np.median(sides)), "p90": float(np.percentile(sides, 90)),
                         "max": float(sides.max())} if len(sides) else {}),
            "per_class": per_class,
        }
    return out


def format_report(rep: dict[str, Any]) -> str:
    lines = [f"dataset {rep['root']} ({rep['format']}, {len(rep['names'])} classes)"]
    for split, r in rep["splits"].items():
        side = r["side_px"]
        lines.append(f"[{split}] {r['images']} images ({r['empty_images']} without objects), {r['boxes']} boxes; "
                     + ", ".join(f"{k} {v}" for k, v in r["bands"].items())
                     + (f"; sqrt(area) px min {side['min']:.1f} median {side['median']:.1f} max {side['max']:.1f}"
                        if side else ""))
        width = max([len(n) for n in r["per_class"]] + [5])
        lines.append(f"  {'class':<{width}} {'boxes':>6} " + " ".join(f"{b[0]:>6}" for b in BANDS))
        for name, c in r["per_class"].items():
            lines.append(f"  {name:<{width}} {c['boxes']:>6} " + " ".join(f"{c[b[0]]:>6}" for b in BANDS))
    if rep["skipped"]:
        lines.append(f"{rep['skipped']} bad sample(s), left out of the counts above; a run stops at the first "
                     "one unless given --set data.skip_bad=true, which leaves them out:")
        lines += [f"  {p}" for p in rep["problems"]]
    else:
        lines.append("no problems found")
    return "\n".join(lines)


def plot(ds: Dataset, out_png: str | Path) -> Path:
    """Histogram of box sizes (sqrt(area), log bins) per class with the band limits, plus counts per class."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sides, cls = _sides(ds)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    hi = max(float(sides.max()) if len(sides) else 128.0, 128.0)
    bins = np.geomspace(2, hi * 1.05, 40)
    data = [sides[cls == k] for k in range(len(ds.names))]
    ax1.hist(data, bins=bins, stacked=True, label=ds.names)
    for name, limit in BANDS[:-1]:
        ax1.axvline(limit, color="k", ls="--", lw=0.8)
        ax1.text(limit, ax1.get_ylim()[1] * 0.95, f" {name} <", fontsize=8, ha="right")
    ax1.set_xscale("log")
    ax1.set_xlabel("box size sqrt(w*h) [px]")
    ax1.set_ylabel("boxes")
    ax1.set_title("box sizes by class")
    ax1.legend(fontsize=7)
    x = np.arange(len(ds.names))
    splits = list(ds.splits)
    for j, split in enumerate(splits):
        _, c = _sides(ds, split)
        ax2.bar(x + j * 0.8 / len(splits), np.bincount(c, minlength=len(ds.names))[:len(ds.names)],
                0.8 / len(splits), label=split)
    ax2.set_xticks(x + 0.4 - 0.4 / max(1, len(splits)))
    ax2.set_xticklabels(ds.names, rotation=30, ha="right", fontsize=8)
    ax2.set_title("boxes per class")
    ax2.legend()
    fig.tight_layout()
    with AtomicFile(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return Path(out_png)


def check(path: str | Path, format: str = "auto") -> tuple[Dataset, dict[str, Any]]:
    """Load with skip_bad=True so that every problem is listed, not only the first, and decode every image
    in full (a truncated JPEG has an intact header)."""
    ds = load_dataset(path, format, skip_bad=True, decode=True)
    return ds, report(ds)
