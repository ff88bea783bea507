"""FLOPs-targeted vs latency-targeted L1RR ratios (`prune.target=latency`), ONNX Runtime CPU on this machine.

    OMP_NUM_THREADS=1 python benchmarks/latency_target.py --size n --imgsz 256 \\
        --out benchmarks/results/latency_target_n256.json

The dense detector (random weights, BN gammas ~ U(0, 1) as after sparse training, seeded; the classes and the
solver's validation images from a small synthetic dataset) is exported to a bundle and profiled as
`edgeprune bench --profile-layers` does (the table). Then the ratio solver runs
- with the FLOPs target (`sparse.flops_target`, the tolerance made tiny so the target binds), and
- with the latency target at a budget equal to the FLOPs arm's predicted latency share (equal predicted latency)
  and at each `--budgets` value;
each solved model is pruned, exported and measured alternately with the dense bundle (the table's clock and
statistic). Reported per arm: FLOPs kept, predicted and measured latency (ms and share of dense), the error of
the prediction, and for the latency arms the measured share against the budget. Latency does not depend on the
weights' values; which channels the solver keeps does, so the accuracy of these models is not measured here.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgeprune.config import make_config  # noqa: E402
from edgeprune.data.dataset import load_dataset  # noqa: E402
from edgeprune.data.synth import ensure_synthetic  # noqa: E402
from edgeprune.errors import run_script  # noqa: E402
from edgeprune.export.bundle import write_bundle  # noqa: E402
from edgeprune.export.onnx_export import export_onnx  # noqa: E402
from edgeprune.fsio import atomic_write_json  # noqa: E402
from edgeprune.models.spec import new_spec, with_widths  # noqa: E402
from edgeprune.models.yolo import build_model  # noqa: E402
from edgeprune.prune.apply import prune_from_ratios  # noqa: E402
from edgeprune.prune.latency import predict_model  # noqa: E402
from edgeprune.sparsity.ratios import solve_ratios  # noqa: E402
from edgeprune.sparsity.run import val_batches  # noqa: E402
from jetson.layerprof import STATISTICS, OrtLayerTimer, machine_note, profile_bundle, whole_model_sampler  # noqa: E402
from jetson.runtime import load_detector  # noqa: E402


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S', time.gmtime())}] {msg}", file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="n")
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--flops-target", type=float, default=0.65)
    ap.add_argument("--budgets", default="0.5", help="further latency budgets (fractions of dense), comma-separated")
    ap.add_argument("--attention-tol", type=float, default=1e-12,
                    help="sparse.attention_tol: tiny, so the target binds (a random-weight model's attention barely "
                         "moves when channels are masked: at the default 0.05, or even 1e-6, every layer would be "
                         "cut to its minimum whatever the target)")
    ap.add_argument("--ratio-grid", type=int, default=8,
                    help="sparse.ratio_grid: candidate keep ratios per layer (the solve's forwards grow with it)")
    ap.add_argument("--solver-images", type=int, default=4,
                    help="validation images in the solver's batch (each candidate mask costs a forward of them)")
    ap.add_argument("--iterations", type=int, default=20, help="per grid point; measured calls per model = 4x")
    ap.add_argument("--statistic", choices=("median", "min"), default="median")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="cpu",
                    help="cpu (default): this process's CPU time with one ORT thread, what a shared machine can "
                         "measure; wall: what a dedicated machine sees")
    ap.add_argument("--work", default=None, help="folder for the bundles (default: a temporary one, removed)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = args.work or tempfile.mkdtemp(prefix="latency_target-")
    t0 = time.time()
    load_before = machine_note()

    cfg = make_config("default", {"model": {"size": args.size, "imgsz": args.imgsz},
                                  "sparse": {"attention_tol": args.attention_tol, "flops_target": args.flops_target,
                                             "ratio_batches": 1, "ratio_grid": args.ratio_grid}})
    data = load_dataset(ensure_synthetic(Path(work) / "synth", 32, 8, 256, seed=0, progress=False))
    batches = val_batches(data, cfg, batch=args.solver_images)
    torch.manual_seed(0)
    spec = new_spec(len(data.names), list(data.names), size=args.size)
    dense = build_model(spec)
    with torch.no_grad():
        for m in dense.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0, 1)
                m.bias.normal_(0, 0.1)
    dense.eval()

    def bundle(model: torch.nn.Module, name: str) -> str:
        exp = export_onnx(model, args.imgsz)
        out = os.path.join(work, name)
        write_bundle(out, with_widths(spec, model.conv_widths()), exp, exp.model)
        return out

    def open_(path: str):
        return load_detector(path, backend="onnxruntime", threads=1)

    bundles = {"dense": bundle(dense, "dense")}
    det = open_(bundles["dense"])
    try:
        table = profile_bundle(det, OrtLayerTimer(threads=1, clock=args.clock), "host", iterations=args.iterations,
                               statistic=args.statistic, log=_log)
    finally:
        det.close()
    atomic_write_json(os.path.join(bundles["dense"], "latency_table.json"), table)
    dense_pred = predict_model(table, dense, args.imgsz)["total_ms"]
    _log(f"table: whole {table['whole_model_ms']:.2f} ms = blocks {table['layers_dense_ms']:.2f} + rest "
         f"{table['rest_ms']:.2f}")

    arms: dict[str, dict] = {}

    def solve(name: str, prune_cfg, note: str) -> None:
        s = time.time()
        doc = solve_ratios(dense, batches, cfg.sparse, prune_cfg, table=(table, "benchmark table")
                           if prune_cfg.target == "latency" else None)
        solve_s = time.time() - s
        model = prune_from_ratios(copy.deepcopy(dense), doc, prune_cfg, imgsz=args.imgsz).model
        pred = predict_model(table, model, args.imgsz)["total_ms"]
        arms[name] = {"note": note, "target": prune_cfg.target, "flops_share_kept": round(1 - doc["flops_reduction"], 4),
                      "predicted_ms": round(pred, 3), "predicted_share": round(pred / dense_pred, 4),
                      "solve_s": round(solve_s, 1), "tau": doc["tau"], "latency": doc.get("latency"),
                      "widths": {n: len(e.get("group_keep_idx", e["keep_idx"])) for n, e in doc["layers"].items()}}
        bundles[name] = bundle(model, name)
        _log(f"{name}: FLOPs kept {arms[name]['flops_share_kept']:.3f}, predicted {pred:.2f} ms "
             f"({pred / dense_pred:.3f} of dense), solved in {solve_s:.0f} s")

    solve("flops", cfg.prune, f"sparse.flops_target {args.flops_target}")
    budgets = [("latency_eq", arms["flops"]["predicted_share"], "budget = the FLOPs arm's predicted share")]
    budgets += [(f"latency_{b}", float(b), f"budget {b}") for b in args.budgets.split(",") if b]
    for name, budget, note in budgets:
        solve(name, dataclasses.replace(cfg.prune, target="latency", latency_budget=budget), note)
        arms[name]["budget"] = budget

    # measure: each pruned bundle alternated with the dense one, in rounds of 5 calls (the table's clock/statistic)
    for name in arms:
        models = [("dense", open_(bundles["dense"])), (name, open_(bundles[name]))]
        samples: dict[str, list[float]] = {"dense": [], name: []}
        try:
            for r in range(max(2, args.iterations * 4 // 5)):
                for label, d in (models if r % 2 == 0 else models[::-1]):
                    samples[label].extend(whole_model_sampler(d, args.clock, warmup=1)(5))
        finally:
            for _, d in models:
                d.close()
        reduce = STATISTICS[args.statistic]
        md, mp = float(reduce(samples["dense"])), float(reduce(samples[name]))
        a = arms[name]
        a.update({"measured_dense_ms": round(md, 3), "measured_ms": round(mp, 3), "measured_share": round(mp / md, 4),
                  "prediction_error_pct": round(100.0 * (a["predicted_ms"] - mp) / mp, 1),
                  "dense_prediction_error_pct": round(100.0 * (dense_pred - md) / md, 1),
                  "load_after": machine_note()["loadavg"]})
        if "budget" in a:
            a["measured_vs_budget_pct"] = round(100.0 * (a["measured_share"] - a["budget"]) / a["budget"], 1)
        _log(f"{name}: measured {mp:.2f} ms vs dense {md:.2f} ms ({mp / md:.3f}); predicted {a['predicted_ms']:.2f} ms")

    result = {"benchmark": "latency_target", "size": args.size, "imgsz": args.imgsz, "threads": 1,
              "iterations": args.iterations, "statistic": args.statistic, "clock": args.clock,
              "backend": table["ran_on"], "flops_target": args.flops_target, "ratio_grid": args.ratio_grid,
              "solver_images": args.solver_images,
              "table": {"whole_model_ms": table["whole_model_ms"], "layers_dense_ms": table["layers_dense_ms"],
                        "rest_ms": table["rest_ms"], "layers": len(table["layers"]), "wall_s": round(table["wall_s"], 1)},
              "dense_predicted_ms": round(dense_pred, 3), "arms": arms,
              "machine": {"before": load_before, "after": machine_note(), "python": platform.python_version(),
                          "torch": torch.__version__},
              "wall_s": round(time.time() - t0, 1)}
    atomic_write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "arms"}, indent=2))
    if not args.work:
        import shutil
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    run_script(main)
