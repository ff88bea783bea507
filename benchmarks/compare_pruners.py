"""Compare pruners from the SAME dense checkpoint with the SAME sparse and fine-tuning budgets (issue 10).

Arms (each at one or more FLOPs-reduction targets):
  slimming          plain L1 on BN gamma (sparse.method=slimming), one global gamma percentile (bisected to the
                    FLOPs target), residual-tied BNs left unpruned like the popular YOLOv5 slimming repos
  tp_bnscale        Torch-Pruning BNScalePruner: its own regulariser in the sparse phase, ratio bisected to FLOPs
  tp_groupnorm      Torch-Pruning GroupNormPruner: likewise (group-lasso regulariser, group L2 importance)
  l1rr              L1RR, default config (attention-solved per-layer ratios, residual rule union)
  l1rr_intersection, l1rr_topk        the same sparse checkpoint pruned with the other residual rules
  l1rr_no_reweight, l1rr_no_dynamic, l1rr_no_adaptive, l1rr_no_attention   ablations (own sparse phase each)
  l1rr_latency      the l1rr arm's sparse checkpoint, ratios solved with prune.target=latency (issue 20) at a budget
                    equal to the l1rr arm's predicted latency share: equal latency, where do the channels go?
  l1rr_latency_fast the same at that budget / 1.2: is a 1.2x faster model as accurate as the FLOPs-targeted one?
                    (table: OUT/latency_table.json: prune.latency_table, else the dense architecture profiled on
                    this host as the sparse stage does it, ONNX Runtime CPU, one thread; predicted vs measured in
                    the row)
  l1rr_scratch      the l1rr arm's pruned architecture initialised afresh and trained like the dense model (as
                    many epochs as it ran, its lr; Liu et al. 2019's Scratch-E): can that width reach the dense
                    accuracy at all, or is a gap to dense a capacity limit rather than a pruning loss?

OUT/ holds everything, cached so an interrupted run resumes:
  settings.json, dense/ (checkpoint, metrics, bundle), sparse/<variant>/ (shared by the arms that differ only
  at prune time; L1RR variants away from --headline: sparse/<variant>@<target>/),
  arms/<arm>@<target>/ (pruned, finetune, model, bundle, result.json, latency.json), results.json, results.md,
  pareto.png

example:
  python benchmarks/compare_pruners.py --quick --out runs/bench_quick
  python benchmarks/compare_pruners.py --out runs/bench --dense runs/default/dense/best.pt --targets 0.5,0.65,0.75
  python benchmarks/compare_pruners.py --preset small --out runs/bench_small
  python benchmarks/compare_pruners.py --preset benchmark --out runs/bench_416          # GPU: 416 px, s, 3000 images
  python benchmarks/compare_pruners.py --data /data/NWPU_VHR-10 --out runs/bench_nwpu --set model.imgsz=416
  python benchmarks/compare_pruners.py --out runs/bench_v8 --set model.family=yolov8 --targets 0.65   # the v8 family
then, on images no setting was chosen on (paired-bootstrap intervals):
  python benchmarks/heldout_eval.py --run runs/bench --out runs/bench/heldout

The converged protocol (issue 21): the dense model trains until its val mAP50 plateaus (train.patience, the
stopping epoch recorded; its best.pt is the dense model), then every arm and the control (dense trained on for
the arms' extra epochs) get the same budget (8 sparse + 48 fine-tune epochs); each training seed in its own
folder OUT/seed<k>/, scored on held-out scenes (or the data set's test split) with paired-bootstrap intervals,
and OUT/claim.{json,md} checks the paper's claim on every seed:
  python benchmarks/compare_pruners.py --converged --seeds 0,1 --heldout 500 --out runs/conv_aerial
  python benchmarks/compare_pruners.py --converged --seeds 0,1 --heldout 500 --data synthetic-dior --out runs/conv_dior
  python benchmarks/compare_pruners.py --converged --seeds 0,1 --heldout 1 --data /data/DIOR --format voc --out runs/conv_real
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from compare_report import claim_summary, plot_pareto, write_claim, write_markdown  # noqa: E402
from compare_tp import TP_ARMS, TPRegularizerHook, prune_to_flops  # noqa: E402

from edgeprune.cliconfig import DATA_ROOT_HELP  # noqa: E402
from edgeprune.config import PRESETS as CONFIG_PRESETS  # noqa: E402
from edgeprune.config import Config, continued, make_config, parse_set  # noqa: E402
from edgeprune.data.synth import cache_dir  # noqa: E402
from edgeprune.errors import UsageError, run_script  # noqa: E402
from edgeprune.fsio import atomic_write_bytes, atomic_write_json  # noqa: E402

# sparse variants: SparseConfig overrides (None = a Torch-Pruning regulariser instead of ours)
SPARSE: dict[str, dict[str, Any] | None] = {
    "slimming": {"method": "slimming"},
    "l1rr": {},
    "l1rr_no_reweight": {"reweight": False},
    "l1rr_no_dynamic": {"dynamic": False},
    "l1rr_no_adaptive": {"adaptive": False},
    "l1rr_no_attention": {"attention": False},
    "tp_bnscale": None,
    "tp_groupnorm": None,
}
# arm -> (sparse variant, residual rule)
ARMS: dict[str, tuple[str, str]] = {
    "slimming": ("slimming", "union"),
    "tp_bnscale": ("tp_bnscale", "union"),
    "tp_groupnorm": ("tp_groupnorm", "union"),
    "l1rr": ("l1rr", "union"),
    "l1rr_intersection": ("l1rr", "intersection"),
    "l1rr_topk": ("l1rr", "topk"),
    "l1rr_no_reweight": ("l1rr_no_reweight", "union"),
    "l1rr_no_dynamic": ("l1rr_no_dynamic", "union"),
    "l1rr_no_adaptive": ("l1rr_no_adaptive", "union"),
    "l1rr_no_attention": ("l1rr_no_attention", "union"),
    "l1rr_latency": ("l1rr", "union"),
    "l1rr_latency_fast": ("l1rr", "union"),
    "l1rr_scratch": ("l1rr", "union"),      # no sparse phase of its own: the l1rr arm's pruned widths, trained afresh
}
# latency arm -> speed-up asked of it over the l1rr arm at the same target (budget = l1rr's predicted share / this)
LATENCY_ARMS = {"l1rr_latency": 1.0, "l1rr_latency_fast": 1.2}
SCRATCH_ARM = "l1rr_scratch"
MAIN_ARMS = ("slimming", "tp_bnscale", "tp_groupnorm", "l1rr")   # run at every target; the rest at --headline


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


# attention_tol ~0 in every preset: the L1RR ratio solver otherwise prunes as far as its attention tolerance
# allows and treats the FLOPs target only as a floor; at ~0 the target binds, so the arms compare at equal FLOPs.
# Sizes. "default": the `compress` default run (800/200 synthetic images at 320 px, n at 256 px, 8 sparse and
# 8 fine-tune epochs; pass --dense runs/<name>/dense/best.pt to reuse its dense model), ~15 min per arm on one
# thread here; "small" fits ~25 min of this shared 2-core machine in all; "quick" < 3 min (the slow test).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {"train": {"eval_every": 1000}, "sparse": {"attention_tol": 1e-6}},
    # the `benchmark` config preset (3000/500 images at 416 px, s at 416 px, 100 dense / 50 sparse / 50 fine-tune
    # epochs): GPU hours, not run on this CPU machine
    "benchmark": {"train": {"eval_every": 1000}, "sparse": {"attention_tol": 1e-6}},
    "small": {"data": {"synth_train": 200, "synth_val": 60, "synth_size": 160},
             "model": {"size": "n", "imgsz": 128},
             "train": {"epochs": 25, "batch": 16, "eval_every": 1000},
             "sparse": {"epochs": 3, "ratio_batches": 1, "ratio_grid": 4, "refresh_every": 10, "attention_tol": 1e-6},
             "finetune": {"epochs": 3}},
    # the `quick` config preset's learnable setting (dense mAP50 ~0.9: arms differ in something), 1 epoch per phase
    "quick": _merge(CONFIG_PRESETS["quick"], {
        "train": {"eval_every": 1000},
        "sparse": {"epochs": 1, "ratio_batches": 1, "ratio_grid": 2, "refresh_every": 2, "attention_tol": 1e-6},
        "finetune": {"epochs": 1}}),
}
# The benchmark's premise is equal FLOPs: an arm whose reduction lands further than this from its target is
# flagged off-target in results.json/results.md (the L1RR ratio solver can overshoot on tiny models).
FLOPS_TOL = 0.03
QUICK_ARMS = ("slimming", "tp_bnscale", "l1rr")
# --data values that name a generated data set instead of a path: the synthetic style each selects (None: the
# preset's own)
SYNTHETIC_DATA = {"synthetic": None, "synthetic-dior": "dior"}
# --converged: dense training runs until the val mAP50 has not improved for `patience` epochs (evaluated every
# epoch), at most `epochs` (the cosine schedule's length); --set train.* overrides each. Every arm fine-tunes 48
# epochs: on a converged dense model 8 left L1RR at -65 % FLOPs 4.3-4.5 mAP50 points below it, 48 closed that to
# 0.5-0.6 (BENCHMARKS.md §1f), so a shorter budget measures the fine-tune, not the pruner
CONVERGED = {"train": {"epochs": 300, "patience": 10, "eval_every": 1}, "finetune": {"epochs": 48}}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _cached(path: Path, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run `fn` unless `path` (its JSON result, written last) exists."""
    if path.is_file():
        return json.loads(path.read_text())
    result = fn()
    atomic_write_json(path, result)
    return result


def _tag(target: float) -> str:
    return f"{round(100 * target):02d}"


# ------------------------------------------------------------------------------------------------ stages
class Bench:
    def __init__(self, cfg: Config, data: Any, out: Path, args: argparse.Namespace):
        self.cfg, self.data, self.out, self.args = cfg, data, out, args
        self.imgsz = cfg.model.imgsz
        self._batches = None
        self.dense: dict[str, Any] = {}

    def batches(self):
        from edgeprune.sparsity.run import val_batches
        if self._batches is None:
            self._batches = val_batches(self.data, self.cfg)
        return self._batches

    def evaluate(self, model: torch.nn.Module) -> dict[str, Any]:
        from edgeprune.metrics import evaluate
        from edgeprune.metrics.complexity import count
        m = evaluate(model, self.data.splits["val"], self.data.names, self.imgsz, progress=False)
        return {"map50": m["map50"], "map": m["map"], "ap_small": m.get("ap_small"), **count(model, self.imgsz)}

    def train_cfg(self, epochs: int, lr0: float, warmup: float | None = None):
        """The dense schedule, or (with `warmup`) the one every arm's sparse and fine-tune phases share:
        edgeprune.config.continued, as the compress stages use."""
        t = dataclasses.replace(self.cfg.train, eval_every=max(epochs, 1))
        if warmup is None:
            return dataclasses.replace(t, epochs=epochs, lr0=lr0)
        return continued(t, epochs, lr0, warmup)

    # dense ------------------------------------------------------------------------------------------
    def run_dense(self) -> dict[str, Any]:
        from edgeprune.models.io import model_from_checkpoint
        from edgeprune.train.trainer import fit, new_model

        d = self.out / "dense"

        def train() -> dict[str, Any]:
            ckpt = d / "dense.pt"
            stop: dict[str, Any] = {}
            if self.args.dense:
                atomic_write_bytes(ckpt, Path(self.args.dense).read_bytes())
                source = str(self.args.dense)
            else:
                t = self.cfg.train
                stopping = t.patience > 0
                log(f"dense: training {t.epochs} epochs" + (f", stopping when val mAP50 has not improved for "
                                                           f"{t.patience}" if stopping else ""))
                model, _ = new_model(self.data, self.cfg.model.size, self.imgsz, t.seed, family=self.cfg.model.family)
                # early stopping needs its evaluations; otherwise evaluate once, at the end
                tcfg = t if stopping else self.train_cfg(t.epochs, t.lr0)
                final = fit(model, self.data, tcfg, d / "train", imgsz=self.imgsz, progress=False)
                # a plateaued run's dense model is its best evaluation (the arms and the control start there);
                # a fixed schedule's is its last epoch
                atomic_write_bytes(ckpt, (d / "train" / ("best.pt" if stopping else "last.pt")).read_bytes())
                source = "trained here"
                stop = {"epochs_max": t.epochs, "epochs_run": final.get("epochs"), "patience": t.patience,
                        "stopped_early": final.get("stopped_early"), "best_epoch": final.get("best_epoch"),
                        "checkpoint_from": "best.pt" if stopping else "last.pt"}
            return {"checkpoint": str(ckpt), "source": source,
                    "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(),
                    **stop,
                    **self.evaluate(model_from_checkpoint(ckpt))}

        self.dense = _cached(d / "result.json", train)
        stopped = f" (stopped at epoch {self.dense['epochs_run']}, best {self.dense['best_epoch']})" \
            if self.dense.get("stopped_early") else ""
        log(f"dense: mAP50 {self.dense['map50']:.3f}  FLOPs {self.dense['flops'] / 1e9:.3f} G{stopped}")
        return self.dense

    def run_control(self) -> dict[str, Any]:
        """The dense model trained on for sparse.epochs + finetune.epochs with the fine-tune schedule and no
        pruning: every arm gets that much extra training, so this (not the dense checkpoint) is what pruning
        has to match."""
        from edgeprune.models.io import model_from_checkpoint
        from edgeprune.train.trainer import fit

        d = self.out / "control"
        sc, fc = self.cfg.sparse, self.cfg.finetune

        def train() -> dict[str, Any]:
            log(f"control: dense + {sc.epochs + fc.epochs} epochs, no pruning")
            model = model_from_checkpoint(self.dense["checkpoint"])
            fit(model, self.data, self.train_cfg(sc.epochs + fc.epochs, fc.lr0, fc.warmup_epochs), d / "train",
                imgsz=self.imgsz, progress=False)
            return {"epochs": sc.epochs + fc.epochs, **self.evaluate(model_from_checkpoint(d / "train" / "last.pt"))}

        return _cached(d / "result.json", train)

    # sparse -----------------------------------------------------------------------------------------
    def sparse_cfg(self, variant: str, target: float) -> Config:
        cfg = copy.deepcopy(self.cfg)
        for k, v in (SPARSE[variant] or {}).items():
            setattr(cfg.sparse, k, v)
        # L1RR's sparse phase is told the target: its controller drives the zero share to it, offset by the
        # config's sparse.target - sparse.flops_target (-0.10 by default, as `compress` runs it); slimming's
        # plain L1 uses neither.
        offset = cfg.sparse.target - cfg.sparse.flops_target
        cfg.sparse.flops_target = target
        cfg.sparse.target = min(max(target + offset, 0.01), 0.99)
        return cfg

    def sparse_dir(self, variant: str, target: float) -> Path:
        """One sparse phase per variant; an L1RR variant gets its own per target (its phase depends on it)."""
        aims = SPARSE[variant] is not None and variant != "slimming"
        name = variant if not aims or abs(target - self.args.headline) < 1e-9 else f"{variant}@{_tag(target)}"
        return self.out / "sparse" / name

    def run_sparse(self, variant: str, target: float) -> dict[str, Any]:
        d = self.sparse_dir(variant, target)

        def train() -> dict[str, Any]:
            t0 = time.time()
            log(f"sparse {d.name}: {self.cfg.sparse.epochs} epochs")
            if SPARSE[variant] is None:
                res = self._tp_sparse(variant, d)
            else:
                from edgeprune.sparsity.run import sparse_train
                res = sparse_train(self.dense["checkpoint"], self.data, self.sparse_cfg(variant, target), d,
                                   progress=False)
                res = {"checkpoint": res["sparse_ckpt"], "ratios": res["ratios"], "summary": res}
            return {**res, "seconds": round(time.time() - t0, 1)}

        return _cached(d / "result.json", train)

    def _tp_sparse(self, variant: str, d: Path) -> dict[str, Any]:
        from edgeprune.models.io import model_from_checkpoint, save_checkpoint
        from edgeprune.train.trainer import fit

        model = model_from_checkpoint(self.dense["checkpoint"])
        sc = self.cfg.sparse
        final = fit(model, self.data, self.train_cfg(sc.epochs, sc.lr0, sc.warmup_epochs), d / "train",
                    hooks=[TPRegularizerHook(variant, self.imgsz)], imgsz=self.imgsz, progress=False)
        sparse = model_from_checkpoint(d / "train" / "last.pt")
        save_checkpoint(d / "sparse.pt", sparse, method=variant)
        return {"checkpoint": str(d / "sparse.pt"), "summary": {"method": variant, "map50_sparse": final.get("map50")}}

    # prune ------------------------------------------------------------------------------------------
    def slimming_keep(self, model: torch.nn.Module, target: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """Bisect the global gamma percentile until the (analytic) FLOPs reduction reaches the target."""
        from edgeprune.prune.io import keep_from_ratios
        from edgeprune.sparsity.ratios import solve_ratios

        sc = copy.deepcopy(self.cfg.sparse)
        sc.method = "slimming"
        lo, hi, best, trail = 0.01, 0.99, None, []
        for _ in range(12):
            sc.target = (lo + hi) / 2
            doc = solve_ratios(model, self.batches()[:1], sc, self.cfg.prune, mode="threshold")
            red = doc["flops_reduction"]
            trail.append({"percentile": round(sc.target, 4), "flops_reduction": round(red, 4)})
            if best is None or abs(red - target) < abs(best["flops_reduction"] - target):
                best = doc
            if abs(red - target) <= 0.005:
                break
            lo, hi = (sc.target, hi) if red < target else (lo, sc.target)
        return keep_from_ratios(best, model), {"threshold": best["threshold"], "search": trail}

    def run_arm(self, arm: str, target: float) -> dict[str, Any]:
        d = self.out / "arms" / f"{arm}@{_tag(target)}"
        variant, rule = ARMS[arm]
        return _cached(d / "result.json", lambda: self._arm(arm, variant, rule, target, d))

    def _arm(self, arm: str, variant: str, rule: str, target: float, d: Path) -> dict[str, Any]:
        from edgeprune.models.io import model_from_checkpoint
        from edgeprune.prune.apply import prune_model
        from edgeprune.prune.io import (keep_from_ratios, load_pruned, read_ratios, save_pruned, save_pruned_model,
                                        spec_from_pruned)
        from edgeprune.sparsity.hook import distill_args
        from edgeprune.train.trainer import fit

        t0 = time.time()
        if arm == SCRATCH_ARM:
            return self._scratch(target, d, t0)
        sparse = self.run_sparse(variant, target)
        model = model_from_checkpoint(sparse["checkpoint"])
        dense_spec = {**model.spec, "widths": {}}
        pc = self.cfg.prune
        log(f"arm {arm} @ -{100 * target:.0f}% FLOPs: pruning")
        info: dict[str, Any] = {}
        if variant in TP_ARMS:
            model, table, stats = prune_to_flops(variant, model, self.imgsz, target)
            rec = {"version": 1, "rule": None, "junctions": []}
            save_pruned(d / "pruned", model, model.spec, rec, table, stats)
            info = {k: stats[k] for k in ("pruning_ratio", "search")}
        else:
            if variant == "slimming":
                keep, info = self.slimming_keep(model, target)
            elif arm in LATENCY_ARMS:
                ratios, info = self.latency_ratios(model, sparse["ratios"], target, LATENCY_ARMS[arm], d)
                keep = keep_from_ratios(ratios, model, str(d / "ratios.json"))
            else:
                ratios = sparse["ratios"]           # solved by sparse_train at this arm's target
                keep = keep_from_ratios(read_ratios(ratios), model, ratios)
                info = {"ratios": ratios}
            res = prune_model(model, keep, rule=rule, round_to=pc.round_to, min_channels=pc.min_channels,
                              example_input=torch.zeros(1, 3, self.imgsz, self.imgsz), fold=pc.fold,
                              skip_unsupported=pc.skip_unsupported)
            save_pruned(d / "pruned", res.model, spec_from_pruned(res.model, dense_spec), res.recombination_map,
                        res.table, res.stats)
            model = load_pruned(d / "pruned").model      # carries the pruned spec (checkpoints need it)
            stats = res.stats
        info["junction_channels_removed"] = stats["junction_channels_removed"]
        info["junction_channels_before"] = stats["junction_channels_before"]
        pre = self.evaluate(model)
        fc = self.cfg.finetune
        if fc.epochs > 0:
            log(f"arm {arm} @ -{100 * target:.0f}%: fine-tuning {fc.epochs} epochs")
            fit(model, self.data, self.train_cfg(fc.epochs, fc.lr0, fc.warmup_epochs), d / "finetune",
                imgsz=self.imgsz, progress=False, **distill_args(self.cfg, self.dense["checkpoint"]))
            model = model_from_checkpoint(d / "finetune" / "last.pt")
        save_pruned_model(d / "model", model, d / "pruned")
        return self._row(arm, variant, rule if variant not in TP_ARMS else None, target, model, d, t0,
                         map50_pruned=pre["map50"], map50_sparse=sparse["summary"].get("map50_sparse"),
                         prune_info=info)

    def _row(self, arm: str, variant: str, rule: str | None, target: float, model: torch.nn.Module, d: Path,
             t0: float, **extra: Any) -> dict[str, Any]:
        m = self.evaluate(model)
        return {"arm": arm, "sparse": variant, "rule": rule, "target": target, **m, **extra,
                "flops_reduction": 1.0 - m["flops"] / self.dense["flops"],
                "params_reduction": 1.0 - m["params"] / self.dense["params"],
                "model_dir": str(d / "model"), "seconds": round(time.time() - t0, 1)}

    def _scratch(self, target: float, d: Path, t0: float) -> dict[str, Any]:
        """The l1rr arm's pruned architecture at `target`, initialised afresh (train.seed) and trained with the
        dense schedule for as many epochs as the dense model ran (train.epochs for a --dense checkpoint)."""
        from edgeprune.models.io import model_from_checkpoint
        from edgeprune.models.spec import load_spec
        from edgeprune.models.yolo import build_model
        from edgeprune.prune.io import save_pruned_model
        from edgeprune.train.trainer import fit, seed_everything

        pruned = Path(self.run_arm("l1rr", target)["model_dir"]).parent / "pruned"
        t = self.cfg.train
        epochs = self.dense.get("epochs_run") or t.epochs
        seed_everything(t.seed)
        model = build_model(load_spec(pruned / "arch.json"))     # the architecture only: its weights are not read
        log(f"arm {SCRATCH_ARM} @ -{100 * target:.0f}%: l1rr's architecture from scratch, {epochs} epochs, lr0 {t.lr0}")
        fit(model, self.data, self.train_cfg(epochs, t.lr0), d / "train", imgsz=self.imgsz, progress=False)
        model = model_from_checkpoint(d / "train" / "last.pt")
        save_pruned_model(d / "model", model, pruned)
        return self._row(SCRATCH_ARM, "none (from scratch)", None, target, model, d, t0, map50_pruned=None,
                         map50_sparse=None, prune_info={"architecture": str(pruned), "epochs": epochs})

    def latency_table(self, model: torch.nn.Module) -> tuple[dict[str, Any], str]:
        """The dense architecture's latency table, obtained once per folder as the sparse stage obtains it
        (`sparsity.latency.solver_table`: prune.latency_table, else measured here with ONNX Runtime CPU, one
        thread, CPU time)."""
        from edgeprune.sparsity.latency import solver_table
        path = self.out / "latency_table.json"
        if not path.is_file():
            atomic_write_json(path, solver_table(model, self.cfg.prune, self.imgsz, log=log)[0])
        return json.loads(path.read_text()), str(path)

    def latency_ratios(self, model: torch.nn.Module, flops_ratios: str, target: float, speedup: float,
                       d: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """Ratios for a latency arm: the budget is the FLOPs-targeted l1rr model's predicted share of dense
        (pruned from the same sparse checkpoint's ratios.json) divided by `speedup`."""
        from edgeprune.prune.apply import prune_from_ratios
        from edgeprune.prune.latency import predict_model
        from edgeprune.sparsity.ratios import save_ratios, solve_ratios

        table, source = self.latency_table(model)
        pc = self.cfg.prune
        dense_ms = predict_model(table, model, self.imgsz)["total_ms"]
        flops_model = prune_from_ratios(copy.deepcopy(model), flops_ratios, pc, imgsz=self.imgsz).model
        share = predict_model(table, flops_model, self.imgsz)["total_ms"] / dense_ms
        budget = share / speedup
        log(f"latency arm: l1rr's predicted share {share:.3f}, budget {budget:.3f} of dense ({dense_ms:.2f} ms)")
        lat = dataclasses.replace(pc, target="latency", latency_budget=budget)
        doc = solve_ratios(model, self.batches(), self.sparse_cfg("l1rr", target).sparse, lat, table=(table, source))
        save_ratios(doc, d / "ratios.json")
        return doc, {"budget": round(budget, 4), "speedup_asked": speedup, "flops_arm_predicted_share": round(share, 4),
                     "table_dense_ms": round(dense_ms, 3), "latency": doc.get("latency"),
                     "flops_reduction_solved": doc["flops_reduction"]}

    # latency ----------------------------------------------------------------------------------------
    def _bundle(self, source: Path, out: Path) -> Path:
        from edgeprune.config import ExportConfig
        from edgeprune.export.bundler import export_bundle
        if not (out / "manifest.json").is_file():
            val = self.args._val_images
            export_bundle(source, out, ExportConfig(parity_images=2), imgsz=self.imgsz, images=val)
        return out

    def latency(self, row: dict[str, Any], dense_bundle: Path, redo: bool) -> dict[str, Any]:
        """ORT CPU latency of the arm and of the dense model, measured interleaved in one bench run."""
        from jetson.bench import run_bench
        from jetson.runtime import load_detector

        d = Path(row["model_dir"]).parent
        path = d / "latency.json"
        if path.is_file() and not redo:
            return json.loads(path.read_text())
        bundle = self._bundle(Path(row["model_dir"]), d / "bundle")
        a = self.args
        dets = [load_detector(str(b), backend="onnxruntime", threads=a.ort_threads) for b in (dense_bundle, bundle)]
        try:
            rep = run_bench([("dense", dets[0]), (row["arm"], dets[1])], iterations=a.latency_iters, warmup_s=0.5)
        finally:
            for det in dets:
                det.close()
        dm, am = rep["models"]
        out = {"infer_median_ms": am["infer"]["median"], "dense_infer_median_ms": dm["infer"]["median"],
               "e2e_median_ms": am["end_to_end"]["median"], "dense_e2e_median_ms": dm["end_to_end"]["median"],
               "speedup_infer_median": rep["compare"]["speedup_infer_median"],
               "speedup_e2e_median": rep["compare"]["speedup_end_to_end_median"],
               "iterations": rep["mode"]["measured_iterations"], "ort_threads": a.ort_threads,
               "measured_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "loadavg_1min": round(os.getloadavg()[0], 2)}
        atomic_write_json(path, out)
        return out


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (resumes what is cached there)")
    ap.add_argument("--quick", action="store_true", help="tiny synthetic set, 1 epoch per phase, 1 target, 3 arms")
    ap.add_argument("--preset", choices=("default", "small", "benchmark"), default="default",
                    help="default: the compress default run's data, model and budgets; small: n at 128 px, 200 "
                         "images; benchmark: the `benchmark` config preset (3000 images at 416 px, s, GPU hours)")
    ap.add_argument("--data", help="dataset path (YOLO/COCO/VOC/DIOR/NWPU VHR-10), or a generated set: synthetic "
                                   "(default; the aerial scenes) or synthetic-dior (20 DIOR-like classes, mostly tiny "
                                   "objects, docs/data.md)")
    ap.add_argument("--format", default="auto", help="dataset format for --data (auto|yolo|coco|voc|nwpu)")
    ap.add_argument("--dense", help="use this dense checkpoint instead of training one (must fit the dataset)")
    ap.add_argument("--targets", help="FLOPs reductions, comma-separated (default 0.5,0.65,0.75; quick: 0.5)")
    ap.add_argument("--headline", type=float,
                    help="target for the ablation/rule arms (default 0.65; quick: the first target)")
    ap.add_argument("--arms", help=f"comma-separated subset of {','.join(ARMS)}")
    ap.add_argument("--all-targets", action="store_true", help="run every arm at every target")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. finetune.epochs=5")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared 2-core machine)")
    ap.add_argument("--control", action="store_true",
                    help="also train the dense model on for the arms' extra epochs without pruning (the fair reference)")
    ap.add_argument("--no-latency", action="store_true", help="skip export + ORT latency (measure later)")
    ap.add_argument("--cached-only", action="store_true",
                    help="report only the arm@target pairs this folder already finished (no training of arms)")
    ap.add_argument("--redo-latency", action="store_true", help="measure latency again even when cached")
    ap.add_argument("--latency-iters", type=int, default=100)
    ap.add_argument("--ort-threads", type=int, default=1)
    ap.add_argument("--synth-root", default=str(cache_dir()), help=DATA_ROOT_HELP)
    ap.add_argument("--converged", action="store_true",
                    help="train the dense model until its val mAP50 plateaus (train.patience 10, at most "
                         "train.epochs 300, evaluated every epoch), fine-tune every arm 48 epochs (--set "
                         "overrides each) and run the control")
    ap.add_argument("--seeds", help="training seeds, comma-separated: one folder OUT/seed<k>/ each (train.seed=k; "
                                    "default: one run in OUT with the config's seed); with --heldout, OUT/claim.md "
                                    "also sums up the seed folders earlier invocations finished with these settings")
    ap.add_argument("--heldout", type=int, default=0, metavar="N",
                    help="after the arms, score every model on N held-out synthetic scenes (a path's test split: "
                         "any N > 0) with paired-bootstrap intervals (heldout_eval.py), and write OUT/claim.*")
    ap.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for --heldout")
    ap.add_argument("--jobs", type=int, default=1, help="processes for the --heldout bootstrap")
    args = ap.parse_args(argv)
    q = args.quick
    args.targets = [float(t) for t in (args.targets or ("0.5" if q else "0.5,0.65,0.75")).split(",")]
    if any(not 0.0 < t < 1.0 for t in args.targets):
        ap.error("--targets: each must lie strictly between 0 and 1")
    if args.headline is None:
        args.headline = args.targets[0] if q else 0.65
    arms = (args.arms or ",".join(QUICK_ARMS if q else ARMS)).split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        ap.error(f"--arms: unknown {unknown}; known: {', '.join(ARMS)}")
    args.arms = arms
    try:
        args.seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else None
    except ValueError:
        ap.error(f"--seeds {args.seeds!r}: give integers separated by commas, e.g. 0,1")
    if args.heldout < 0 or args.bootstrap < 0:
        ap.error("--heldout and --bootstrap must be >= 0")
    return args


def machine() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime
    import torch_pruning
    return {"cpu": model, "cores": os.cpu_count(), "gpu": torch.cuda.is_available(),
            "python": platform.python_version(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "torch_pruning": getattr(torch_pruning, "__version__", "?")}


def bench_config(args: argparse.Namespace) -> Config:
    """The config preset (`benchmark` for --preset benchmark, else `default`) + this script's preset (+ the
    converged protocol's dense schedule) + --data + --set."""
    preset = "quick" if args.quick else args.preset
    over = _merge(PRESETS[preset], CONVERGED) if args.converged else PRESETS[preset]
    if args.data in SYNTHETIC_DATA:
        if SYNTHETIC_DATA[args.data]:
            over = _merge(over, {"data": {"synth_style": SYNTHETIC_DATA[args.data]}})
    elif args.data:
        over = _merge(over, {"data": {"source": args.data, "format": args.format}})
    return make_config("benchmark" if preset == "benchmark" else "default", _merge(over, parse_set(args.set)))


def folder_settings(args: argparse.Namespace, cfg: Config, path: Path) -> dict[str, Any]:
    """What a result folder was made with; a folder is refused to other settings."""
    return {"config": cfg.to_dict(), "dataset": str(path), "dense": args.dense, "headline": args.headline}


def earlier_seed_claims(args: argparse.Namespace, cfg: Config, path: Path, root: Path, now: list[int]) -> list[dict]:
    """The claim entries of the seed folders that earlier invocations on `root` finished with these settings and
    the same held-out set, so that claim.md sums up every seed there, not only this invocation's."""
    claims = []
    for folder in sorted(root.glob("seed*")):
        tail = folder.name[len("seed"):]
        if not tail.isdigit() or int(tail) in now:
            continue
        scfg = copy.deepcopy(cfg)
        scfg.train.seed = int(tail)
        files = [folder / "settings.json", folder / "results.json", folder / "heldout" / "heldout.json"]
        if not all(f.is_file() for f in files):
            log(f"{folder}: no held-out results yet, left out of claim.md")
            continue
        settings, results, heldout = (json.loads(f.read_text()) for f in files)
        if settings != folder_settings(args, scfg, path) or heldout["heldout"]["images"] != args.heldout:
            log(f"{folder}: made with other settings or another held-out set, left out of claim.md")
            continue
        claims.append({"seed": int(tail), "folder": str(folder), "results": results, "heldout": heldout})
    return claims


def run_folder(args: argparse.Namespace, cfg: Config, data: Any, path: Path, out: Path, command: str) -> dict:
    """Dense, control, every arm at its targets, latency; results.json/.md and pareto.png in `out`."""
    settings = folder_settings(args, cfg, path)
    sfile = out / "settings.json"
    if sfile.is_file() and json.loads(sfile.read_text()) != settings:
        raise UsageError(f"{sfile}: this folder holds a run with other settings (config, dataset, --dense or "
                         "--headline differ); use a new --out")
    atomic_write_json(sfile, settings)

    bench = Bench(cfg, data, out, args)
    t0 = time.time()
    dense = bench.run_dense()
    control = bench.run_control() if args.control or args.converged else None
    rows = []
    for arm in args.arms:
        targets = args.targets if (arm in MAIN_ARMS or args.all_targets) else [args.headline]
        for t in targets:
            if args.cached_only and not (out / "arms" / f"{arm}@{_tag(t)}" / "result.json").is_file():
                log(f"arm {arm} @ -{100 * t:.0f}%: not run yet, left out (--cached-only)")
                continue
            rows.append(bench.run_arm(arm, t))
            r = rows[-1]
            # a latency arm is held to its latency budget, not to equal FLOPs
            r["off_target"] = arm not in LATENCY_ARMS and abs(r["flops_reduction"] - t) > FLOPS_TOL
            if r["off_target"]:
                log(f"arm {arm} @ -{100 * t:.0f}%: OFF TARGET, FLOPs -{100 * r['flops_reduction']:.1f}% is more than "
                    f"{100 * FLOPS_TOL:.0f} points from the target; its row is not an equal-FLOPs comparison")
            pruned = "" if r["map50_pruned"] is None else f"after prune {r['map50_pruned']:.3f}, "
            log(f"arm {arm} @ -{100 * t:.0f}%: FLOPs -{100 * r['flops_reduction']:.1f}%  mAP50 {r['map50']:.3f} "
                f"({pruned}dense {dense['map50']:.3f})")
    if not args.no_latency:
        dense_bundle = bench._bundle(Path(dense["checkpoint"]), out / "dense" / "bundle")
        for r in rows:
            r["latency"] = bench.latency(r, dense_bundle, args.redo_latency)
            log(f"latency {r['arm']} @ -{100 * r['target']:.0f}%: {r['latency']['infer_median_ms']:.2f} ms vs dense "
                f"{r['latency']['dense_infer_median_ms']:.2f} ms ({r['latency']['speedup_infer_median']:.2f}x)")
        dense["latency"] = {"infer_median_ms": float(sorted(r["latency"]["dense_infer_median_ms"] for r in rows)
                                                     [len(rows) // 2])} if rows else {}
    previous = out / "results.json"
    commands = json.loads(previous.read_text()).get("commands", []) if previous.is_file() else []
    name = args.data if not args.data or args.data in SYNTHETIC_DATA else Path(args.data).name
    doc = {"version": 1, "machine": machine(), "commands": commands + [command],   # every invocation on this folder
           "settings": {"model_family": cfg.model.family, "model_size": cfg.model.size, "imgsz": cfg.model.imgsz, "dataset": str(path),
                        "dataset_name": name or "synthetic",
                        "train_images": len(data.splits["train"]), "val_images": len(data.splits["val"]),
                        "dense_epochs": (dense.get("epochs_run") or cfg.train.epochs) if not args.dense else None,
                        "dense_patience": cfg.train.patience if not args.dense else None,
                        "train_seed": cfg.train.seed, "sparse_epochs": cfg.sparse.epochs,
                        "finetune_epochs": cfg.finetune.epochs, "targets": args.targets, "headline": args.headline,
                        "round_to": cfg.prune.round_to, "min_channels": cfg.prune.min_channels,
                        "ratio_batches": cfg.sparse.ratio_batches, "ratio_grid": cfg.sparse.ratio_grid,
                        "threads": args.threads, "quick": args.quick},
           "dense": dense, "control": control, "arms": rows, "seconds_this_invocation": round(time.time() - t0, 1)}
    atomic_write_json(out / "results.json", doc)
    write_markdown(doc, out / "results.md")
    plot_pareto(doc, out / "pareto.png")
    log(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'pareto.png'}")
    return doc


def heldout_pairs(doc: dict[str, Any]) -> list[str]:
    """L1RR against each peer at every target both ran at (heldout_eval.py --pair labels)."""
    have = {(r["arm"], round(100 * r["target"])) for r in doc["arms"]}
    return [f"{other}@{t:02d},l1rr@{t:02d}" if other in LATENCY_ARMS else f"l1rr@{t:02d},{other}@{t:02d}"
            for arm, t in sorted(have) if arm == "l1rr"
            for other in ("slimming", "tp_bnscale", "tp_groupnorm", *LATENCY_ARMS, SCRATCH_ARM) if (other, t) in have]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from edgeprune.data.dataset import load_dataset
    from edgeprune.data.synth import ensure_synthetic

    cfg = bench_config(args)
    c = cfg.data
    synthetic = c.source == "synthetic"
    path = ensure_synthetic(Path(args.synth_root), c.synth_train, c.synth_val, c.synth_size, c.seed,
                            progress=False, style=c.synth_style) if synthetic else Path(args.data)
    data = load_dataset(path, c.format, c.skip_bad)
    if args.heldout and not synthetic and not data.splits.get("test"):
        raise UsageError(f"{path}: --heldout scores a real data set on its test split, and it has none; add one "
                         "(YOLO data.yaml `test:`, VOC ImageSets/Main/test.txt) or leave out --heldout")
    torch.set_num_threads(args.threads)
    val_dir = path / "images" / "val" if path.is_dir() else None
    args._val_images = str(val_dir) if val_dir and val_dir.is_dir() else None
    command = "python benchmarks/compare_pruners.py " + " ".join(argv if argv is not None else sys.argv[1:])
    root = Path(args.out)
    seeds = args.seeds or [cfg.train.seed]
    claims = []
    for seed in seeds:
        scfg = copy.deepcopy(cfg)
        scfg.train.seed = seed
        out = root / f"seed{seed}" if args.seeds else root
        if args.seeds:
            log(f"seed {seed}: {out}")
        doc = run_folder(args, scfg, data, path, out, command)
        if args.heldout:
            import heldout_eval
            ho = out / "heldout"
            heldout_eval.main(["--run", str(out), "--out", str(ho), "--holdout", str(args.heldout),
                               "--bootstrap", str(args.bootstrap), "--jobs", str(args.jobs),
                               "--threads", str(args.threads), "--synth-root", args.synth_root]
                              + [x for p in heldout_pairs(doc) for x in ("--pair", p)])
            claims.append({"seed": seed, "folder": str(out), "results": doc,
                           "heldout": json.loads((ho / "heldout.json").read_text())})
    if claims and args.seeds:
        claims = sorted(claims + earlier_seed_claims(args, cfg, path, root, seeds), key=lambda c: c["seed"])
    if claims:
        summary = claim_summary(claims, args.targets)
        summary["command"] = command
        write_claim(summary, root / "claim.json", root / "claim.md")
        log(f"wrote {root / 'claim.json'}, {root / 'claim.md'}")
    return 0


if __name__ == "__main__":
    run_script(main)
