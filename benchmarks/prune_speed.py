"""Time to prune an s-size detector on this machine (target < 5 s) and the share of residual-junction
channels each rule removes, against plain slimming (which skips every BN tied to a residual add).

    python benchmarks/prune_speed.py --out benchmarks/results/prune_speed.json

Weights are random (seeded): gammas ~ U(0, 1), so a global ratio removes a random-looking channel set.
Wall and CPU (process) seconds per call: on a machine shared with other jobs the wall time mostly
measures the wait for a core; the CPU time is what the pruner costs.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgeprune.fsio import atomic_write_json  # noqa: E402
from edgeprune.models.spec import new_spec  # noqa: E402
from edgeprune.models.yolo import build_model  # noqa: E402
from edgeprune.prune.apply import prune_model  # noqa: E402
from edgeprune.prune.graph import build_graph  # noqa: E402


def _model(size: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(new_spec(10, size=size))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0, 1)
                m.bias.normal_(0, 0.1)
    return model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="s")
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--ratio", type=float, default=0.5, help="global share of channels removed by |gamma|")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/prune_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    x = torch.zeros(1, 3, args.imgsz, args.imgsz)
    base = _model(args.size, 0)
    # slimming's one global |gamma| ranking over every BN (each follows its conv in this detector); computed
    # here, not by the package, so that the same script times older code too (before/after in BENCHMARKS.md)
    gammas = {n: m.weight.detach().abs() for n, m in base.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    flat = torch.cat(list(gammas.values()))
    drop = torch.zeros(flat.numel(), dtype=torch.bool)
    drop[torch.argsort(flat, stable=True)[:int(args.ratio * flat.numel())]] = True
    keep = dict(zip(gammas, (~drop).split([g.numel() for g in gammas.values()])))

    # the first call of the process is timed too: it pays what a CLI run pays (lazy imports, first kernels,
    # a full garbage collection over torch's heap that the imports left pending)
    times, cpu_times, graph_times = [], [], []
    for _ in range(args.repeats):
        model = copy.deepcopy(base)
        t0, c0 = time.perf_counter(), time.process_time()
        prune_model(model, keep, rule="union", example_input=x)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        graph = build_graph(copy.deepcopy(base), x)
        graph_times.append(time.perf_counter() - t0)
    residual = {graph.producer_bn()[p] for j in graph.junctions for p in j.producers}
    slim_keep = {bn: m for bn, m in keep.items() if bn not in residual}  # slimming: residual BNs untouched

    runs = {}
    for name, k, rule in (("slimming", slim_keep, "union"), ("l1rr_union", keep, "union"),
                          ("l1rr_intersection", keep, "intersection"), ("l1rr_topk", keep, "topk")):
        s = prune_model(copy.deepcopy(base), k, rule=rule, example_input=x).stats
        runs[name] = {"rule": rule, "params_after": s["params_after"], "flops_after": s["flops_after"],
                      "junction_channels_before": s["junction_channels_before"],
                      "junction_channels_removed": s["junction_channels_removed"],
                      "junction_share_removed": round(s["junction_channels_removed"] / s["junction_channels_before"], 4),
                      "params_share_kept": round(s["params_after"] / s["params_before"], 4),
                      "flops_share_kept": round(s["flops_after"] / s["flops_before"], 4)}
    result = {"benchmark": "prune_speed", "size": args.size, "imgsz": args.imgsz, "global_ratio": args.ratio,
              "threads": 1, "machine": platform.machine(), "python": platform.python_version(),
              "torch": torch.__version__, "load_avg_1min": os.getloadavg()[0],
              "prune_seconds": [round(t, 3) for t in times], "prune_cpu_seconds": [round(t, 3) for t in cpu_times],
              "prune_seconds_min": round(min(times), 3), "graph_seconds_min": round(min(graph_times), 3),
              "target_seconds": 5.0, "runs": runs}
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
