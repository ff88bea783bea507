"""Training curves (losses and mAP per epoch) as a PNG, written atomically."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..fsio import AtomicFile


def plot_curves(history: Sequence[dict[str, Any]], path: str | Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("loss", "box", "obj", "cls"):
        if any(key in r for r in history):
            ax_loss.plot(epochs, [r.get(key, float("nan")) for r in history], label=key)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("train loss")
    ax_loss.set_yscale("log")
    ax_loss.legend()
    for key in ("map50", "map"):
        pts = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
        if pts:
            ax_map.plot(*zip(*pts), marker="o", label=key)
    ax_map.set_xlabel("epoch")
    ax_map.set_ylabel("val mAP (EMA weights)")
    ax_map.set_ylim(0, 1)
    ax_map.legend()
    fig.tight_layout()
    with AtomicFile(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
