"""How well a latency table predicts whole-network latency: dense and pruned bundles, ONNX Runtime on this CPU.

    python benchmarks/latency_prediction.py --size n --imgsz 256 --out benchmarks/results/latency_prediction_n256.json
    python benchmarks/latency_prediction.py --size s --imgsz 640 --iterations 10 \\
        --out benchmarks/results/latency_prediction_s640.json

The dense detector (random weights, BN gammas ~ U(0, 1), seeded) is exported to a bundle and profiled with
`jetson.layerprof.profile_bundle` (what `edgeprune bench --profile-layers` runs); each pruned variant
(`keep_from_global_ratio` + `prune_model` at a global ratio and round_to) is exported too, and every bundle is
benchmarked interleaved with the dense one (`jetson.bench.run_bench`) with the table's prediction beside it.
Latency does not depend on the weights' values, so untrained models measure what trained ones would.
The machine's load average is recorded before and after: on a shared machine use --statistic min.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgeprune.errors import run_script  # noqa: E402
from edgeprune.export.bundle import write_bundle  # noqa: E402
from edgeprune.export.onnx_export import export_onnx  # noqa: E402
from edgeprune.fsio import atomic_write_json  # noqa: E402
from edgeprune.models.spec import new_spec, with_widths  # noqa: E402
from edgeprune.models.yolo import build_model  # noqa: E402
from edgeprune.prune.apply import prune_model  # noqa: E402
from edgeprune.prune.graph import build_graph  # noqa: E402
from edgeprune.prune.recombine import keep_from_global_ratio  # noqa: E402
from jetson.bench import run_bench  # noqa: E402
from jetson.layerprof import (STATISTICS, OrtLayerTimer, add_predictions, machine_note, profile_bundle,  # noqa: E402
                              whole_model_sampler)
from jetson.runtime import load_detector  # noqa: E402


def _dense(size: str, seed: int) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(seed)
    spec = new_spec(10, size=size)
    model = build_model(spec)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0, 1)
                m.bias.normal_(0, 0.1)
    return model.eval(), spec


def _bundle(model: torch.nn.Module, spec: dict, imgsz: int, out: str) -> str:
    exp = export_onnx(model, imgsz)
    write_bundle(out, with_widths(spec, model.conv_widths()), exp, exp.model)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="n")
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--variants", default="0.5:8,0.5:1", help="pruned models as ratio:round_to, comma-separated")
    ap.add_argument("--iterations", type=int, default=20, help="per grid point and per benchmarked model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--statistic", choices=("median", "min"), default="median")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="cpu",
                    help="cpu (default): this process's CPU time with one ORT thread, what a shared machine can "
                         "measure; wall: what a dedicated machine sees")
    ap.add_argument("--work", default=None, help="folder for the bundles (default: a temporary one, removed)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = args.work or tempfile.mkdtemp(prefix="latency_prediction-")
    t0 = time.time()
    load_before = machine_note()
    dense, spec = _dense(args.size, 0)
    x = torch.zeros(1, 3, args.imgsz, args.imgsz)
    bundles = {"dense": _bundle(dense, spec, args.imgsz, os.path.join(work, "dense"))}
    graph = build_graph(dense, x)
    flops = {}
    for v in args.variants.split(","):
        ratio, round_to = float(v.split(":")[0]), int(v.split(":")[1])
        model = copy.deepcopy(dense)
        res = prune_model(model, keep_from_global_ratio(graph, ratio), rule="union", round_to=round_to,
                          example_input=x)
        name = f"ratio{ratio}_round{round_to}"
        flops[name] = round(res.stats["flops_after"] / res.stats["flops_before"], 4)
        bundles[name] = _bundle(model, spec, args.imgsz, os.path.join(work, name))

    def open_(path: str):
        return load_detector(path, backend="onnxruntime", threads=args.threads)

    det = open_(bundles["dense"])
    try:
        table = profile_bundle(det, OrtLayerTimer(threads=args.threads, clock=args.clock), "host",
                               iterations=args.iterations,
                               statistic=args.statistic, log=lambda m: print(m, file=sys.stderr))
    finally:
        det.close()
    table_path = os.path.join(bundles["dense"], "latency_table.json")
    atomic_write_json(table_path, table)
    rows = []
    for name, path in bundles.items():
        if name == "dense":
            continue
        models = [("dense", open_(bundles["dense"])), (name, open_(path))]
        try:
            # the table's clock and statistic, the two models alternated ABBA in rounds of 5 calls
            samples: dict[str, list[float]] = {"dense": [], name: []}
            for r in range(max(1, args.iterations // 5)):
                for label, d in (models if r % 2 == 0 else models[::-1]):
                    samples[label].extend(whole_model_sampler(d, args.clock, warmup=1)(5))
            rep = run_bench(models, iterations=args.iterations, warmup_s=0.5)  # wall clock, for reference
            add_predictions(rep, models, table, table_path)
        finally:
            for _, d in models:
                d.close()
        for e in rep["models"]:
            p = e["predicted"]
            measured = float(STATISTICS[args.statistic](samples[e["label"]]))
            rows.append({"model": e["label"], "pair": name, "flops_share_kept": flops.get(e["label"], 1.0),
                         "measured_ms": round(measured, 3), "predicted_ms": round(p["ms"], 3),
                         "error_pct": round(100.0 * (p["ms"] - measured) / measured, 1),
                         "wall_infer_median_ms": round(e["infer"]["median"], 3),
                         "wall_infer_min_ms": round(e["infer"]["min"], 3)})
        rows.append({"pair": name, "measured_speedup": round(rows[-2]["measured_ms"] / rows[-1]["measured_ms"], 3),
                     "predicted_speedup": round(rows[-2]["predicted_ms"] / rows[-1]["predicted_ms"], 3)})
    result = {"benchmark": "latency_prediction", "size": args.size, "imgsz": args.imgsz, "threads": args.threads,
              "iterations": args.iterations, "statistic": args.statistic, "clock": args.clock,
              "backend": table["ran_on"],
              "table": {"whole_model_ms": table["whole_model_ms"], "layers_dense_ms": table["layers_dense_ms"],
                        "rest_ms": table["rest_ms"], "layers": len(table["layers"]), "wall_s": round(table["wall_s"], 1)},
              "rows": rows, "machine": {"before": load_before, "after": machine_note(),
                                        "python": platform.python_version(), "torch": torch.__version__},
              "wall_s": round(time.time() - t0, 1)}
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))
    if not args.work:
        import shutil
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    run_script(main)
