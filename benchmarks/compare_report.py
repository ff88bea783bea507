"""Results of compare_pruners.py: the Markdown table and the Pareto plot (mAP50 vs FLOPs)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeprune.fsio import AtomicFile, atomic_write_text


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _num(x: float | None, fmt: str = "{:.3f}") -> str:
    return "–" if x is None else fmt.format(x)


def markdown_table(doc: dict[str, Any]) -> str:
    d, c = doc["dense"], doc.get("control")
    vs = " | Δ vs control" if c else ""           # the fair reference: as many epochs as the arms, no pruning
    lines = ["| arm | FLOPs target | FLOPs −% | params −% | GFLOPs | params | mAP50 (Δ pts) | mAP50 after prune, "
             f"before FT | mAP50-95 | AP_small | ORT ms (dense ms) | speed-up{vs} |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if c else "")]

    def lat(row: dict[str, Any]) -> tuple[str, str]:
        la = row.get("latency")
        if not la:
            return "–", "–"
        return f"{la['infer_median_ms']:.2f} ({la['dense_infer_median_ms']:.2f})", f"{la['speedup_infer_median']:.2f}×"

    dense_lat = d.get("latency") or {}
    lines.append(f"| dense | – | 0 | 0 | {d['flops'] / 1e9:.3f} | {d['params']:,} | {d['map50']:.3f} | – | "
                 f"{d['map']:.3f} | {_num(d.get('ap_small'))} | "
                 f"{_num(dense_lat.get('infer_median_ms'), '{:.2f}')} | 1.00× |" + (" – |" if c else ""))
    if c:
        lines.append(f"| dense + {c['epochs']} epochs, not pruned (control) | – | 0 | 0 | {c['flops'] / 1e9:.3f} | "
                     f"{c['params']:,} | {c['map50']:.3f} ({100 * (c['map50'] - d['map50']):+.1f}) | – | {c['map']:.3f} | "
                     f"{_num(c.get('ap_small'))} | – | – | 0 |")
    for r in doc["arms"]:
        ms, sp = lat(r)
        delta = 100 * (r["map50"] - d["map50"])
        vs_control = f" {100 * (r['map50'] - c['map50']):+.1f} |" if c else ""
        off = " (off-target)" if r.get("off_target") else ""      # not an equal-FLOPs comparison
        lines.append(f"| {r['arm']} | −{100 * r['target']:.0f} % | {_pct(r['flops_reduction'])}{off} | "
                     f"{_pct(r['params_reduction'])} | {r['flops'] / 1e9:.3f} | {r['params']:,} | "
                     f"{r['map50']:.3f} ({delta:+.1f}) | {_num(r.get('map50_pruned'))} | {r['map']:.3f} | "
                     f"{_num(r.get('ap_small'))} | {ms} | {sp} |" + vs_control)
    return "\n".join(lines) + "\n"


def write_markdown(doc: dict[str, Any], path: str | Path) -> None:
    atomic_write_text(path, markdown_table(doc))


FAMILY_STYLE = {"slimming": ("tab:orange", "s"), "tp_bnscale": ("tab:green", "^"),
                "tp_groupnorm": ("tab:olive", "v"), "l1rr": ("tab:blue", "o")}


def plot_pareto(doc: dict[str, Any], path: str | Path) -> None:
    """mAP50 against GFLOPs: one line per arm across its FLOPs targets, the dense model as a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    by_arm: dict[str, list[dict[str, Any]]] = {}
    for r in doc["arms"]:
        by_arm.setdefault(r["arm"], []).append(r)
    for arm, rows in sorted(by_arm.items()):
        rows = sorted(rows, key=lambda r: r["flops"])
        color, marker = FAMILY_STYLE.get(arm, ("tab:gray", "x"))
        ax.plot([r["flops"] / 1e9 for r in rows], [r["map50"] for r in rows], marker=marker, color=color,
                linestyle="-" if len(rows) > 1 else "none", label=arm, alpha=1.0 if arm in FAMILY_STYLE else 0.7)
        if arm not in FAMILY_STYLE:      # ablations / rules: label the point itself
            for r in rows:
                ax.annotate(arm.replace("l1rr_", ""), (r["flops"] / 1e9, r["map50"]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
    d = doc["dense"]
    ax.plot([d["flops"] / 1e9], [d["map50"]], marker="*", markersize=14, color="black", linestyle="none",
            label="dense")
    c = doc.get("control")
    if c:
        ax.plot([c["flops"] / 1e9], [c["map50"]], marker="*", markersize=14, color="tab:red", linestyle="none",
                label=f"dense + {c['epochs']} epochs (control)")
    ax.set_xlabel("GFLOPs per image (2·MACs)")
    ax.set_ylabel("mAP50 (val)")
    s = doc["settings"]
    ax.set_title(f"Pruners at equal fine-tuning budget — {s.get('model_family', 'yolov5')} "
                 f"{s['model_size']}-size, {s['imgsz']} px, "
                 f"{s['dataset_name']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with AtomicFile(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
