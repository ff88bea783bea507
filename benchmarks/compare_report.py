"""Results of compare_pruners.py: the Markdown table, the Pareto plot (mAP50 vs FLOPs) and the claim check
(issue 21's targets on held-out images, per seed)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeprune.fsio import AtomicFile, atomic_write_json, atomic_write_text


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


# ------------------------------------------------------------------------------------------------ claim
# Issue 21's targets, checked on held-out images per training seed: at -65 % FLOPs L1RR within 1.0 mAP50 point
# of the dense model and of the control, with params -75 % or more; at -65 % and -75 % it beats each peer at
# equal FLOPs by 2 points or more. `met` reads the point estimate, `met_by_ci` the 95 % interval's worse end.
CLAIM_TARGETS = {"within": 0.01, "beats": 0.02, "params": 0.75, "headline": 65, "beat_targets": (65, 75)}
PEERS = ("slimming", "tp_bnscale", "tp_groupnorm")


def _check(what: str, cmp: dict[str, Any] | None, threshold: float) -> dict[str, Any] | None:
    """A held-out difference (heldout_eval.compare) against a threshold it must reach."""
    if not cmp:
        return None
    ci = cmp.get("ci95")
    return {"what": what, "delta": cmp["delta_map50"], "ci95": ci, "threshold": threshold,
            "met": cmp["delta_map50"] >= threshold, "met_by_ci": None if not ci else ci[0] >= threshold}


def claim_summary(claims: list[dict[str, Any]], targets: list[float]) -> dict[str, Any]:
    """Per seed: the dense model (where it stopped), whether it had converged (control - dense on held-out
    images), and every claim check that the folder's arms allow."""
    ct = CLAIM_TARGETS
    seeds = []
    for c in claims:
        ho = {m["label"]: m for m in c["heldout"]["models"]}
        pairs = {(p["a"], p["b"]): p for p in c["heldout"]["pairs"]}
        arms = {f"{r['arm']}@{round(100 * r['target']):02d}": r for r in c["results"]["arms"]}
        dense = c["results"]["dense"]
        checks = []
        ctrl = ho.get("control")
        if ctrl:   # converged: training on without pruning gains less than a point
            gain = ctrl["vs_dense"]
            checks.append({"what": "dense converged: control - dense <= +1.0", "delta": gain["delta_map50"],
                           "ci95": gain["ci95"], "threshold": ct["within"], "met": gain["delta_map50"] <= ct["within"],
                           "met_by_ci": None if not gain["ci95"] else gain["ci95"][1] <= ct["within"]})
        h = f"l1rr@{ct['headline']}"
        if h in ho:
            checks.append(_check(f"{h} - dense >= -1.0", ho[h].get("vs_dense"), -ct["within"]))
            checks.append(_check(f"{h} - control >= -1.0", ho[h].get("vs_control"), -ct["within"]))
        for t in ct["beat_targets"]:
            for peer in PEERS:
                checks.append(_check(f"l1rr@{t} - {peer}@{t} >= +2.0", pairs.get((f"l1rr@{t}", f"{peer}@{t}")),
                                     ct["beats"]))
        l1 = arms.get(h, {})
        seeds.append({
            "seed": c["seed"], "folder": c["folder"], "heldout": c["heldout"]["heldout"],
            "dense": {k: dense.get(k) for k in ("map50", "epochs_run", "epochs_max", "best_epoch", "stopped_early",
                                                "patience", "source")} | {"heldout_map50": ho["dense"]["map50"]},
            "control_heldout_map50": ctrl["map50"] if ctrl else None,
            "l1rr_headline": {"flops_reduction": l1.get("flops_reduction"), "params_reduction": l1.get("params_reduction"),
                              "params_ok": None if not l1 else l1["params_reduction"] >= ct["params"],
                              "ort_speedup": (l1.get("latency") or {}).get("speedup_infer_median"),
                              "heldout_map50": ho[h]["map50"] if h in ho else None},
            "checks": [x for x in checks if x]})
    return {"version": 1, "targets": ct, "flops_targets": targets, "seeds": seeds,
            "all_met": bool(seeds) and all(x["met"] for s in seeds for x in s["checks"])
            and all(s["l1rr_headline"]["params_ok"] for s in seeds)}


def claim_markdown(doc: dict[str, Any]) -> str:
    lines = []
    for s in doc["seeds"]:
        d, l1 = s["dense"], s["l1rr_headline"]
        stop = (f"stopped at epoch {d['epochs_run']} of at most {d['epochs_max']} (best {d['best_epoch']}, "
                f"patience {d['patience']})" if d.get("stopped_early") else
                f"{d.get('epochs_run') or '?'} epochs, no early stop" if d.get("epochs_max") else f"given ({d['source']})")
        lines += [f"**Seed {s['seed']}** ({s['folder']}; held-out: {s['heldout']['name']}, {s['heldout']['images']} "
                  f"images). Dense: {stop}; val mAP50 {d['map50']:.3f}, held-out {d['heldout_map50']:.3f}"
                  + (f"; control held-out {s['control_heldout_map50']:.3f}" if s["control_heldout_map50"] is not None
                     else "") + ".", ""]
        if l1["flops_reduction"] is not None:
            sp = "–" if l1["ort_speedup"] is None else f"{l1['ort_speedup']:.2f}×"
            lines += [f"L1RR at the headline target: FLOPs −{100 * l1['flops_reduction']:.1f} %, params "
                      f"−{100 * l1['params_reduction']:.1f} % ({'meets' if l1['params_ok'] else 'misses'} −75 %), "
                      f"ORT CPU speed-up {sp}.", ""]
        lines += ["| check | Δ mAP50 (pts) [95 % CI] | met (point) | met (whole CI) |", "|---|---|---|---|"]
        for x in s["checks"]:
            ci = f" [{100 * x['ci95'][0]:+.1f}, {100 * x['ci95'][1]:+.1f}]" if x["ci95"] else ""
            by_ci = "–" if x["met_by_ci"] is None else ("yes" if x["met_by_ci"] else "no")
            lines.append(f"| {x['what']} | {100 * x['delta']:+.1f}{ci} | {'yes' if x['met'] else 'no'} | {by_ci} |")
        lines.append("")
    lines.append(f"All checks met on every seed (point estimates): {'yes' if doc['all_met'] else 'no'}.")
    return "\n".join(lines) + "\n"


def write_claim(doc: dict[str, Any], json_path: str | Path, md_path: str | Path) -> None:
    atomic_write_json(json_path, doc)
    atomic_write_text(md_path, claim_markdown(doc))
