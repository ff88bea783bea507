"""`edgeprune bench`: trtexec-style latency statistics for one bundle, or two measured interleaved.

Per iteration and model: pre-processing, inference and post-processing are timed separately, so the
report splits end-to-end (pre+infer+post) from inference only, and with TensorRT inference further into
H2D / compute / D2H (CUDA events). With --compare both models run in the same loop in ABBA order (A B, B A,
...) so drift (thermal throttling, other load) hits both alike; the speed-up is latency(BUNDLE) /
latency(OTHER): > 1 means OTHER is faster. The text report says it in words ("runs/x/bundle is 1.45x faster
than runs/x/bundle_dense"). Python 3.6, numpy only.
"""
import platform
import time

import numpy as np

from edgeprune import __version__

from .stats import faster_phrase, speedup, summarize

PHASES = ("preprocess", "infer", "postprocess", "end_to_end")
TRT_PHASES = ("h2d", "compute", "d2h")
MIN_ITERATIONS = 10  # like trtexec: a duration run still times at least this many iterations


def synthetic_image(h=480, w=640, seed=0):
    """Deterministic aerial-ish test scene (noise + bright rectangles) when no --image is given."""
    rng = np.random.RandomState(seed)
    img = rng.randint(40, 90, size=(h, w, 3)).astype(np.uint8)
    for _ in range(30):
        y, x = rng.randint(0, h - 24), rng.randint(0, w - 24)
        img[y:y + rng.randint(6, 24), x:x + rng.randint(6, 24)] = rng.randint(120, 255, size=3)
    return img


def _one(det, img, rec):
    t0 = time.perf_counter()
    x, meta = det.preprocess(img)
    t1 = time.perf_counter()
    out = det.infer(x)
    t2 = time.perf_counter()
    det.postprocess(out, [meta])
    t3 = time.perf_counter()
    rec["preprocess"].append((t1 - t0) * 1e3)
    rec["infer"].append((t2 - t1) * 1e3)
    rec["postprocess"].append((t3 - t2) * 1e3)
    rec["end_to_end"].append((t3 - t0) * 1e3)
    split = det.backend.last_split
    if split:
        for k in TRT_PHASES:
            rec.setdefault(k, []).append(split[k])


def _empty():
    return dict((k, []) for k in PHASES)


def run_bench(models, image=None, iterations=None, duration=None, warmup_s=0.2, clock=time.perf_counter):
    """models: [(label, detector)] (1 or 2). Exactly one of iterations / duration (seconds); default 3 s
    like trtexec. Returns the JSON-able report."""
    if iterations is not None and duration is not None:
        raise ValueError("give iterations or duration, not both")
    if iterations is None and duration is None:
        duration = 3.0
    img = synthetic_image() if image is None else image
    warm = [_empty() for _ in models]
    t_end = clock() + max(float(warmup_s), 0.0)
    n_warm = 0
    while n_warm == 0 or clock() < t_end:
        for (_, det), rec in zip(models, warm):
            _one(det, img, rec)
        n_warm += 1
    recs = [_empty() for _ in models]
    start = clock()
    it = 0
    while True:
        if iterations is not None and it >= iterations:
            break
        if duration is not None and it >= MIN_ITERATIONS and clock() - start >= duration:
            break
        order = list(range(len(models)))
        if it % 2:
            order.reverse()
        for i in order:
            _one(models[i][1], img, recs[i])
        it += 1
    wall = clock() - start
    report = {"tool": "edgeprune bench", "edgeprune": __version__,
              "mode": {"iterations": iterations, "duration_s": duration, "warmup_s": warmup_s,
                       "warmup_iterations": n_warm, "measured_iterations": it, "wall_s": wall,
                       "interleaved": len(models) > 1, "image_shape": list(img.shape)},
              "host": {"python": platform.python_version(), "machine": platform.machine(),
                       "system": platform.system(), "numpy": np.__version__},
              "models": []}
    for (label, det), rec in zip(models, recs):
        entry = {"label": label, "bundle": det.manifest["_root"], "backend": det.backend_name,
                 "ran_on": det.description, "device_profile": det.device, "precision": det.precision,
                 "input_shape": det.input_shape}
        for k, v in rec.items():
            entry[k] = summarize(v)
        entry["throughput_ips"] = entry["end_to_end"]["throughput"]
        entry["note"] = ran_on_note(det)
        report["models"].append(entry)
    if len(models) == 2:
        a, b = report["models"]
        report["compare"] = {"baseline": a["label"], "other": b["label"],
                             "speedup_end_to_end_mean": speedup(a["end_to_end"], b["end_to_end"], "mean"),
                             "speedup_end_to_end_median": speedup(a["end_to_end"], b["end_to_end"], "median"),
                             "speedup_infer_mean": speedup(a["infer"], b["infer"], "mean"),
                             "speedup_infer_median": speedup(a["infer"], b["infer"], "median"),
                             "meaning": "latency(baseline) / latency(other); > 1 means other is faster"}
    return report


def ran_on_note(det):
    """Say plainly what ran, and that a Jetson --device without TensorRT is only a profile."""
    if det.backend_name != "tensorrt" and det.device != "host":
        return ("--device {} only selected a profile: TensorRT is not present, so this is {} on this machine, "
                "not a {} measurement".format(det.device, det.description, det.device))
    return det.description


def format_report(report):
    from .stats import format_row
    lines = []
    m = report["mode"]
    lines.append("edgeprune bench: {} measured iterations{} after {} warm-up ({:.1f} s wall)".format(
        m["measured_iterations"], " per model, interleaved ABBA" if m["interleaved"] else "", m["warmup_iterations"],
        m["wall_s"]))
    for e in report["models"]:
        lines.append("")
        lines.append("[{}] {}".format(e["label"], e["note"]))
        for k in PHASES + TRT_PHASES:
            if k in e:
                lines.append("  " + format_row(k, e[k]))
        lines.append("  throughput {:.1f} images/s (end to end)".format(e["throughput_ips"]))
    for e in report["models"]:
        p = e.get("predicted")
        if p and "error" in p:
            lines.append("[{}] no prediction: {}".format(e["label"], p["error"]))
        elif p:
            lines.append("[{}] predicted {:.3f} ms from the latency table vs measured {} {} {:.3f} ms ({:+.1f} %){}"
                         .format(e["label"], p["ms"], p["measured_phase"], p["statistic"], p["measured_ms"],
                                 p["error_pct"],
                                 "; table is for " + ", ".join(p["key_mismatch"]) if p["key_mismatch"] else ""))
    if len(report["models"]) == 2:
        lines.append("")
        lines += compare_lines(report)
        pa, pb = [e.get("predicted") or {} for e in report["models"]]
        if "ms" in pa and "ms" in pb and pb["ms"] > 0 and pb["measured_ms"] > 0:
            lines.append("latency table: {} predicted {:.2f}x faster than {}, measured {:.2f}x ({} {})".format(
                report["models"][1]["label"], pa["ms"] / pb["ms"], report["models"][0]["label"],
                pa["measured_ms"] / pb["measured_ms"], pb["measured_phase"], pb["statistic"]))
    return "\n".join(lines)


def compare_lines(report):
    """Two sentences saying which model is faster, and by how much, end to end and inference alone."""
    a, b = report["models"]
    na, nb = a["label"], b["label"]
    out = []
    for phase, what in (("end_to_end", "end to end"), ("infer", "inference alone")):
        out.append("{}: {} (mean {:.2f} vs {:.2f} ms, median {:.2f} vs {:.2f} ms)".format(
            what, faster_phrase(na, a[phase], nb, b[phase]), b[phase]["mean"], a[phase]["mean"],
            b[phase]["median"], a[phase]["median"]))
    return out
