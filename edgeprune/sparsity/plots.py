"""PNG plots of a sparse run: |gamma| histograms over epochs, s(t) with the zero share, per-layer kept ratios."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..fsio import AtomicFile  # noqa: E402


def _save(fig: Any, path: str | Path) -> None:
    with AtomicFile(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def plot_gamma_hist(log: dict[str, Any], path: str | Path) -> None:
    """One log10|gamma| histogram line per epoch, dark = early, bright = late (should turn bimodal).

    The first bin also holds every |gamma| below its edge (the histogram clips to 1e-5), above all the channels
    the proximal L1 step set to exactly 0: it is drawn apart, as dots labelled so, not as a spike of the curve."""
    edges = log["hist_edges_log10"]
    mids = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
    epochs = log["epochs"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    cmap = plt.get_cmap("viridis")
    for i, e in enumerate(epochs):
        label = "before" if e["epoch"] < 0 else f"epoch {e['epoch'] + 1}"
        show = i in (0, len(epochs) - 1) or len(epochs) <= 8
        color = cmap(i / max(1, len(epochs) - 1))
        ax.plot(mids[1:], e["hist"][1:], color=color, lw=1.2, label=label if show else None)
        ax.plot([edges[0]], [e["hist"][0]], "o", color=color, ms=4)
    last = epochs[-1]["hist"][0] if epochs else 0
    ax.annotate(f"|gamma| < {10 ** edges[1]:.2g}\n(zeroed channels: {last})", (edges[0], last),
                xytext=(8, 8), textcoords="offset points", fontsize=7)
    ax.axvline(math.log10(log["zero_threshold"]), color="red", ls="--", lw=1,
               label=f"zero threshold {log['zero_threshold']:g}")
    ax.set_xlabel("log10 |BN gamma|")
    ax.set_ylabel("channels")
    ax.set_title("BN scale distribution during sparse training")
    ax.legend(fontsize=8, loc="upper center")
    _save(fig, path)


def plot_strength(log: dict[str, Any], path: str | Path) -> None:
    """s(t) (log scale) and the share of |gamma| below the zero threshold, per step."""
    steps = log["steps"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if steps:
        t = [r[0] for r in steps]
        ax.semilogy(t, [max(r[1], 1e-12) for r in steps], color="tab:blue", label="s(t)")
        ax2 = ax.twinx()
        ax2.plot(t, [r[2] for r in steps], color="tab:orange", label="share |gamma| < thr")
        ax2.axhline(log["target"], color="tab:orange", ls="--", lw=1, label="target")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("zero share")
        ax2.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("step")
    ax.set_ylabel("sparsity strength s(t)")
    ax.set_title("dynamic sparsity strength")
    ax.legend(loc="upper left", fontsize=8)
    _save(fig, path)


def plot_kept(ratios: dict[str, Any], path: str | Path) -> None:
    """Per-layer kept share (bars) from a ratios.json document."""
    from ..prune.io import short_layer_name

    names = list(ratios["layers"])
    kept = [len(ratios["layers"][n].get("group_keep_idx", ratios["layers"][n]["keep_idx"]))
            / ratios["layers"][n]["channels"] for n in names]
    fig, ax = plt.subplots(figsize=(7.5, max(3.0, 0.19 * len(names) + 1.0)))
    ax.barh(range(len(names)), kept, color="tab:green")
    for y, k in enumerate(kept):
        ax.text(k, y, f" {k:.2f}", va="center", fontsize=6)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels([short_layer_name(n) for n in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("kept share of channels")
    ax.set_title(f"per-layer kept ratio ({ratios.get('mode')}), FLOPs -{ratios['flops_reduction'] * 100:.1f}%")
    fig.tight_layout()
    _save(fig, path)
