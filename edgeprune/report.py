"""`runs/<name>/report.md`: what the run did, in numbers and plots, from the stages' done-markers."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .fsio import AtomicFile, atomic_write_text
from .rundir import RunDir

ROWS = (("dense", "dense"), ("sparse", "L1RR sparse (unpruned)"), ("prune", "pruned (before fine-tune)"),
        ("finetune", "pruned + fine-tuned"))


def _pct(new: float, old: float) -> str:
    return f"{100.0 * (new - old) / old:+.1f} %" if old else "n/a"


def _metrics_table(run: RunDir) -> tuple[list[str], dict[str, dict[str, Any]]]:
    found = {stage: run.outputs(stage).get("metrics", {}) for stage, _ in ROWS if run.marker(stage)}
    predicted = any("predicted_latency_ms" in m for m in found.values())
    lines = ["| model | params | FLOPs | mAP50 | mAP50-95 | AP small | CPU latency (ms, batch 1) |"
             + (" predicted on the target (ms) |" if predicted else ""),
             "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if predicted else "")]
    for stage, label in ROWS:
        m = found.get(stage)
        if not m:
            continue
        row = (f"| {label} | {m.get('params', 0):,} | {m.get('flops', 0) / 1e9:.3f} G | {m.get('map50', 0):.3f} | "
               f"{m.get('map', 0):.3f} | {m.get('ap_small', 0):.3f} | {m.get('cpu_latency_ms', 0):.1f} |")
        if predicted:
            p = m.get("predicted_latency_ms")
            row += f" {p:.2f} |" if p is not None else " – |"
        lines.append(row)
    return lines, found


def _latency_note(run: RunDir) -> list[str]:
    """Which target the predicted column is for (the table's key), and where measured target numbers come from."""
    path = run.cfg.prune.latency_table
    if not path:
        return []
    try:
        from jetson.layerprof import read_table
        k = read_table(path)["key"]
    except Exception as exc:  # the report still renders; the column says what it can
        return [f"Predicted latency: `{path}` could not be read ({exc}).", ""]
    return [f"Predicted latency: sum of per-layer lookups in `{path}` ({k['device_profile']}, {k['backend']} "
            f"{k['precision']}, batch {k['batch']}, {k['input_size'][0]}x{k['input_size'][1]}) plus its measured "
            "rest; measure the bundles on that target with `edgeprune bench BUNDLE --compare OTHER "
            f"--latency-table {path}`, which prints the prediction beside the measurement.", ""]


def _target_note(run: RunDir) -> list[str]:
    """What the ratio solver met: the FLOPs floor, or (prune.target=latency) the predicted-latency budget."""
    lat = run.outputs("sparse").get("latency") if run.marker("sparse") else None
    if not lat:
        return []
    return [f"Latency target: the ratio solver kept the predicted latency at {lat['predicted_ms']:.2f} ms = "
            f"{100 * lat['predicted_share']:.1f} % of the dense model's {lat['dense_ms']:.2f} ms (budget "
            f"{100 * lat['budget']:.0f} %, {'met' if lat['met'] else 'NOT met'}), widths on multiples of "
            f"{lat['alignment']}, table: {lat['table']}.", ""]


def _plot_summary(found: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label for stage, label in ROWS if stage in found]
    stages = [stage for stage, _ in ROWS if stage in found]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, key, title, scale, fmt in ((axes[0], "params", "parameters (M)", 1e-6, "{:.2f}"),
                                       (axes[1], "flops", "FLOPs (G)", 1e-9, "{:.3f}"),
                                       (axes[2], "map50", "mAP50", 1.0, "{:.3f}")):
        values = [found[s].get(key, 0) * scale for s in stages]
        bars = ax.bar(range(len(stages)), values, color="#4477aa")
        ax.bar_label(bars, labels=[fmt.format(v) for v in values], fontsize=8, padding=2)
        ax.set_ylim(0, max(values) * 1.18 if max(values) > 0 else 1.0)     # room for the numbers above the bars
        ax.set_xticks(range(len(stages)), [lbl.split(" (")[0] for lbl in labels], rotation=20, fontsize=8)
        ax.set_title(title)
    fig.tight_layout()
    with AtomicFile(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _comparison(run: RunDir, ex: dict[str, Any]) -> list[str]:
    """Dense vs pruned bundle, measured interleaved by the export stage, and the command for the device."""
    if "bench" not in ex:
        return []
    b = ex["bench"]
    lat = b["latency_ms"]
    bundle, dense = (Path(ex["bundle"]), Path(ex["dense_bundle"]))
    return ["### Dense vs pruned", "",
            f"The dense model's bundle is `{dense}`. Measured interleaved through ONNX Runtime ({b['threads']} "
            f"thread, {b['iterations']} iterations each, batch 1, this machine):", "",
            "| bundle | end to end (ms, mean) | inference (ms, mean) |", "|---|---:|---:|",
            f"| dense | {lat['dense']['end_to_end']:.2f} | {lat['dense']['infer']:.2f} |",
            f"| pruned | {lat['pruned']['end_to_end']:.2f} | {lat['pruned']['infer']:.2f} |", "",
            *[f"- {line}" for line in b["summary"]], "", *_predicted_vs_measured(b),
            "On the device (TensorRT), the same comparison: "
            f"`edgeprune bench {bundle} --compare {dense} --device tx2 --precision fp16`.", ""]


def _predicted_vs_measured(bench: dict[str, Any]) -> list[str]:
    """The latency table's prediction beside the measured inference latency of each bundle (stages.compare_bundles)."""
    pred = bench.get("predicted")
    if not pred:
        return []
    k = bench["latency_table"]["key"]
    lines = [f"Predicted from the latency table `{bench['latency_table']['file']}` ({k['device_profile']}, "
             f"{k['backend']} {k['precision']}, batch {k['batch']}) beside the measurement above:", "",
             "| bundle | predicted (ms) | measured inference (ms) | error |", "|---|---:|---:|---:|"]
    notes = []
    for label in ("dense", "pruned"):
        p = pred.get(label) or {}
        if "error" in p:
            lines.append(f"| {label} | – | – | {p['error']} |")
            continue
        lines.append(f"| {label} | {p['ms']:.2f} | {p['measured_ms']:.2f} ({p['statistic']}) | "
                     f"{p['error_pct']:+.1f} % |")
        notes += [m for m in p.get("key_mismatch", []) if m not in notes]
    d, q = pred.get("dense") or {}, pred.get("pruned") or {}
    if "ms" in d and "ms" in q and q["ms"] > 0 and q["measured_ms"] > 0:
        lines += ["", f"Speed-up predicted {d['ms'] / q['ms']:.2f}x, measured {d['measured_ms'] / q['measured_ms']:.2f}x."]
    if notes:
        lines += ["", "The table was measured for another setting than this machine's measurement ("
                  + "; ".join(notes) + "): compare on that target with `edgeprune bench`."]
    return lines + [""]


def _stage_times(run: RunDir) -> list[str]:
    """Wall time of each stage as its done-marker recorded it (the run that actually ran it)."""
    from .stagedefs import STAGES

    rows = [(s, run.marker(s)) for s in STAGES if s != "report"]
    rows = [(s, m) for s, m in rows if m]
    if not rows:
        return []
    total = sum(float(m.get("seconds", 0)) for _, m in rows)
    return ["## Stage times", "", "| stage | seconds | torch threads | finished (UTC) |", "|---|---:|---:|---|",
            *[f"| {s} | {float(m.get('seconds', 0)):.1f} | {m.get('outputs', {}).get('threads', '')} | "
              f"{m.get('finished_at', '')} |" for s, m in rows],
            f"| total | {total:.1f} | | |", "",
            "The same seed and the same torch thread count give the same numbers; another thread count gives "
            "another run (BENCHMARKS.md 0c).", ""]


def write_report(run: RunDir) -> Path:
    cfg = run.cfg
    lines = [f"# edgeprune compress report: `{cfg.name}`", "",
             f"Preset `{cfg.preset}`, " + (f"model `{cfg.model.weights}`" if cfg.model.weights else
                                           f"model size `{cfg.model.size}`") + f" at {cfg.model.imgsz} px, sparsity method "
             f"`{cfg.sparse.method}`, residual rule `{cfg.prune.rule}`, round_to {cfg.prune.round_to}. "
             "Full config: `config.yaml`.", ""]
    data = run.outputs("data")
    lines += [f"Dataset `{data['dataset']}`: {data['train_images']} train / {data['val_images']} val images, "
              f"classes {', '.join(data['names'])}"
              + (f"; {data['skipped']} bad samples skipped (data.skip_bad)." if data["skipped"] else "."),
              "", "## Results", ""]
    table, found = _metrics_table(run)
    lines += table + [""] + _latency_note(run) + _target_note(run)
    if "dense" in found and "finetune" in found:
        d, f = found["dense"], found["finetune"]
        lines += [f"Against dense: parameters {_pct(f['params'], d['params'])}, FLOPs {_pct(f['flops'], d['flops'])}, "
                  f"mAP50 {100 * (f['map50'] - d['map50']):+.1f} points, CPU latency {_pct(f['cpu_latency_ms'], d['cpu_latency_ms'])} "
                  "(PyTorch eager, batch 1, this machine; device numbers come from `edgeprune bench`).", ""]
    if found:
        _plot_summary(found, run.root / "summary.png")
        lines += ["![summary](summary.png)", ""]
    pngs = sorted(p.relative_to(run.root) for p in run.root.glob("*/*.png"))
    if pngs:
        lines += ["## Plots", ""] + [f"- [{p}]({p})" for p in pngs] + [""]
    if run.marker("prune"):
        stats = run.outputs("prune").get("stats", {})
        if stats:
            lines += ["## Pruning", "", "```", *(f"{k}: {v}" for k, v in stats.items()), "```", ""]
    if run.marker("export"):
        ex = run.outputs("export")
        lines += ["## Deploy bundle", "", f"`{ex.get('bundle', run.root / 'bundle')}`: graph verification "
                  f"{ex.get('verify', {}).get('status')}, ONNX Runtime vs PyTorch max abs diff "
                  f"{ex.get('parity', {}).get('max_abs_diff')}.", ""]
        lines += _comparison(run, ex)
    lines += _stage_times(run)
    path = run.root / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
