"""Prune every torchvision classifier (and the backbones of torchvision's detectors) at ratio 0.5 with
edgeprune and with Torch-Pruning, side by side: ok / exact / FLOPs cut / rel. error / time.

    OMP_NUM_THREADS=1 python benchmarks/prune_zoo.py --out benchmarks/results/prune_zoo.json
    python benchmarks/prune_zoo.py --models resnet18,mobilenet_v3_small --imgsz 64

Random weights (seeded) with random BN statistics, so a wrongly removed channel shows in the outputs.
edgeprune: each gate (BN, or the producer's weight rows where there is no BN) keeps its best half by
importance; default rule/round_to/min_channels, fold=False; exact = the pruned model matches the masked
dense model (removed channels zeroed) to rel. error <= 1e-4, the check of tests/prune/test_exact.py.
Run once strict (an unsupported op raises PruneError) and, where that fails, with skip_unsupported.
Torch-Pruning: MetaPruner + MagnitudeImportance(p=2), pruning_ratio 0.5, the classifier / detector
head ignored; ok = it pruned and the pruned model runs with the dense output shape. Torch-Pruning has no
masked reference, so its exactness is not measured (its rel. error is against the dense model, shown
for scale only).
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgeprune.errors import PruneError, run_script  # noqa: E402
from edgeprune.fsio import atomic_write_json  # noqa: E402
from edgeprune.metrics.complexity import count  # noqa: E402
from edgeprune.prune.apply import masked_model, output_rel_err, prune_model, random_bn_stats  # noqa: E402
from edgeprune.prune.graph import build_graph  # noqa: E402
from edgeprune.prune.recombine import keep_per_gate  # noqa: E402

EXACT = 1e-4


def model_names() -> list[str]:
    names = [f"cls:{n}" for n in torchvision.models.list_models(module=torchvision.models)]
    return names + [f"det:{n}" for n in torchvision.models.list_models(module=torchvision.models.detection)]


def build(name: str, imgsz: int) -> nn.Module:
    kind, arch = name.split(":", 1)
    torch.manual_seed(0)
    if kind == "cls":
        kw: dict[str, Any] = {"weights": None, "num_classes": 10}
        if arch.startswith("vit_"):
            kw["image_size"] = imgsz
        if arch in ("googlenet", "inception_v3"):
            kw.update(aux_logits=False, init_weights=False)
        model = torchvision.models.get_model(arch, **kw)
    else:
        model = torchvision.models.get_model(arch, weights=None, weights_backbone=None, num_classes=3).backbone
    return random_bn_stats(model, seed=1).eval()


def run_edgeprune(model: nn.Module, x: torch.Tensor, skip: bool) -> dict[str, Any]:
    dense = copy.deepcopy(model)
    t0 = time.perf_counter()
    graph = build_graph(model, x, skip_unsupported=skip)
    res = prune_model(model, keep_per_gate(graph, 0.5), example_input=x, fold=False, skip_unsupported=skip)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        err = output_rel_err(masked_model(dense, res.plan).eval()(x), model.eval()(x))
    s = res.stats
    return {"ok": True, "exact": err is not None and err <= EXACT, "rel_err": err, "seconds": round(seconds, 3),
            "flops_cut": round(1 - s["flops_after"] / s["flops_before"], 4),
            "frozen": sorted({f"{f['module']}: {f['op']}: {f['reason']}" for f in s["frozen"]})[:8]}


def run_tp(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    import torch_pruning as tp
    dense = copy.deepcopy(model)
    with torch.no_grad():
        ref = dense(x)
    heads = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == 10]
    flops_before = count(model, tuple(x.shape[-2:]))["flops"]
    t0 = time.perf_counter()
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5,
                                  ignored_layers=heads)
    pruner.step()
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        err = output_rel_err(ref, model(x))
    if err is None:
        raise RuntimeError("the pruned model's output shape changed")
    return {"ok": True, "rel_err_vs_dense": err, "seconds": round(seconds, 3),
            "flops_cut": round(1 - count(model, tuple(x.shape[-2:]))["flops"] / flops_before, 4)}


def attempt(fn, *args) -> dict[str, Any]:
    try:
        return fn(*args)
    except PruneError as exc:
        return {"ok": False, "error": f"PruneError: {str(exc)[:400]}"}
    except Exception as exc:  # a third-party tool or model: record whatever it raises
        return {"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}


def one(name: str, imgsz: int, max_params: float, tp: bool) -> dict[str, Any]:
    """The row of one model (run in a child process: see main)."""
    row: dict[str, Any] = {"model": name}
    # the smallest input each family accepts: fixed-size attention windows, SSD's extra layers
    size = {"maxvit_t": 224, "inception_v3": 96, "ssd300_vgg16": 300}.get(name.split(":")[1], imgsz)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    row["imgsz"] = size
    try:
        model = build(name, size)
    except Exception as exc:
        row["skipped"] = f"cannot build: {type(exc).__name__}: {exc}"
        return row
    params = sum(p.numel() for p in model.parameters())
    row["params"] = params
    if params > max_params:
        row["skipped"] = f"{params / 1e6:.0f}M parameters > --max-params"
        return row
    row["has_bn_or_conv"] = any(isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Conv2d)) for m in model.modules())
    row["edgeprune"] = attempt(run_edgeprune, copy.deepcopy(model), x, False)
    if not row["edgeprune"]["ok"]:
        row["edgeprune_skip_unsupported"] = attempt(run_edgeprune, copy.deepcopy(model), x, True)
    if tp:
        row["torch_pruning"] = attempt(run_tp, copy.deepcopy(model), x)
    return row


def _child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one model in a child process with a memory cap and a timeout, so that one huge graph (of
    either pruner) cannot take the shared machine down; a crash is recorded as the row's error."""
    cmd = [sys.executable, __file__, "--one", name, "--imgsz", str(args.imgsz), "--max-params", str(args.max_params)]
    cmd += ["--no-tp"] if args.no_tp else []
    cap = int(args.mem_gb * 2 ** 30)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, preexec_fn=limit)
    except subprocess.TimeoutExpired:
        return {"model": name, "error": f"timed out after {args.timeout} s (both pruners together)"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
        return {"model": name, "error": f"child exited {proc.returncode} (memory cap {args.mem_gb} GB?): {tail}"}
    return json.loads(lines[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", help="comma-separated names (resnet18 or det:fcos_resnet50_fpn); default: all")
    ap.add_argument("--imgsz", type=int, default=64)
    ap.add_argument("--max-params", type=float, default=100e6, help="skip larger models (this machine's memory)")
    ap.add_argument("--mem-gb", type=float, default=6.0, help="memory cap of each model's child process")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per model (both pruners)")
    ap.add_argument("--no-tp", action="store_true", help="leave out Torch-Pruning")
    ap.add_argument("--resume", action="store_true", help="keep the rows already in --out, run the others")
    ap.add_argument("--table", action="store_true", help="print --out as a markdown table and exit")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="benchmarks/results/prune_zoo.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.table:
        print(table(json.loads(Path(args.out).read_text())))
        return 0
    if args.one:
        print(json.dumps(one(args.one, args.imgsz, args.max_params, not args.no_tp)), flush=True)
        return 0
    names = model_names()
    if args.models:
        wanted = [m if ":" in m else f"cls:{m}" for m in args.models.split(",")]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise PruneError(f"unknown models {unknown}; names look like resnet18, det:fcos_resnet50_fpn")
        names = wanted
    rows = json.loads(Path(args.out).read_text())["rows"] if args.resume and Path(args.out).exists() else []
    done = {r["model"] for r in rows}
    for name in [n for n in names if n not in done]:
        rows.append(_child(name, args))
        print(_line(rows[-1]), flush=True)
        atomic_write_json(args.out, _doc(args, rows))
    return 0


def table(doc: dict[str, Any]) -> str:
    """The BENCHMARKS.md table of a result file."""
    def cell(r: dict[str, Any], key: str) -> str:
        if not r:
            return "-"
        if not r.get("ok"):
            return "fails: " + r.get("error", "?").split(":")[0]
        err = r.get("rel_err", r.get("rel_err_vs_dense"))
        exact = {True: "exact", False: "NOT exact"}.get(r.get("exact"), "")
        return f"{r['flops_cut']:.0%} cut, {exact + ', ' if exact else ''}err {err:.0e}, {r['seconds']:.1f} s"

    lines = ["| model | input | edgeprune (strict) | edgeprune (skip_unsupported) | Torch-Pruning |",
             "|---|---|---|---|---|"]
    for r in doc["rows"]:
        if "skipped" in r or "error" in r:
            lines.append(f"| {r['model']} | | {r.get('skipped') or r['error']} | | |")
            continue
        lines.append(f"| {r['model']} | {r['imgsz']} | {cell(r.get('edgeprune', {}), 'e')} | "
                     f"{cell(r.get('edgeprune_skip_unsupported', {}), 's')} | {cell(r.get('torch_pruning', {}), 't')} |")
    return "\n".join(lines)


def _ours(row: dict[str, Any]) -> dict[str, Any]:
    r = row.get("edgeprune", {})
    return r if r.get("ok") else row.get("edgeprune_skip_unsupported", r)


def _line(row: dict[str, Any]) -> str:
    if "skipped" in row or "error" in row:
        return f"{row['model']:<40} {row.get('skipped') or row['error']}"
    e, t = _ours(row), row.get("torch_pruning", {})
    ours = (f"ok exact={e['exact']} cut={e['flops_cut']:.0%} err={e['rel_err']:.1e} {e['seconds']}s"
            if e.get("ok") else e.get("error", "")[:90])
    theirs = f"ok cut={t['flops_cut']:.0%} {t['seconds']}s" if t.get("ok") else t.get("error", "-")[:60]
    return f"{row['model']:<40} edgeprune: {ours} | tp: {theirs}"


def _doc(args: argparse.Namespace, rows: list[dict[str, Any]]) -> dict[str, Any]:
    ran = [r for r in rows if "skipped" not in r and "error" not in r]
    good = [r for r in ran if _ours(r).get("ok") and _ours(r).get("exact") and _ours(r)["flops_cut"] >= 0.3]
    return {"command": " ".join(sys.argv), "imgsz": args.imgsz, "ratio": 0.5,
            "note": "rows of every run of this command with --resume are kept (one file, several sittings)",
            "machine": f"{platform.machine()} {platform.processor() or ''} shared 2-core CPU, 1 thread",
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "summary": {"models": len(rows), "ran": len(ran), "crashed": [r["model"] for r in rows if "error" in r],
                        "edgeprune_strict_ok": sum(bool(r.get("edgeprune", {}).get("ok")) for r in ran),
                        "edgeprune_ok": sum(bool(_ours(r).get("ok")) for r in ran),
                        "edgeprune_exact_cut30": len(good),
                        "torch_pruning_ok": sum(bool(r.get("torch_pruning", {}).get("ok")) for r in ran)},
            "rows": rows}


if __name__ == "__main__":
    run_script(main)
