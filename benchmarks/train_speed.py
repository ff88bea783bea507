"""Training and evaluation throughput of the trainer's own loop: images per second of dense, sparse (L1RR hook +
attention teacher) and distilled fine-tune steps, and of evaluation (`metrics.evaluate`), per model size and
input side, with the share of the step time spent waiting for data; and the ratio solver's forwards per second
(`ratios`: `solve_ratios` with the default sparse/prune config on the first validation batches, on the device).

Each training mode runs `Trainer._train_epoch` over `--steps + 1` batches of a synthetic data set; the first
step (worker start-up, lazy allocations) is not timed. The data wait is the time spent in the loader's
`__next__`; on CUDA the device is synchronised before each clock read at the epoch's end, so queued work counts.
The machine's load average (os.getloadavg) is recorded before and after: on a shared machine other processes
take CPU time from the measurement, so this process's CPU time per image (cpu_ms_per_img; the main process
only, not loader workers) is reported too: it moves much less with the load than wall-clock img/s.

example:
  python benchmarks/train_speed.py --sizes n s --imgsz 256 640 --steps 4 --batch 8 \\
      --out benchmarks/results/train_speed_cpu.json
  python benchmarks/train_speed.py --device cuda --sizes n s --imgsz 256 640 --steps 20 --batch 16 --workers auto
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

MODES = ("dense", "sparse", "finetune", "eval", "ratios")


class _TimedLoader:
    """Wraps a DataLoader: records when each batch was asked for and when it arrived."""

    def __init__(self, loader, sync):
        self.loader, self.sync = loader, sync
        self.asked: list[float] = []
        self.got: list[float] = []
        self.cpu: list[float] = []                          # this process's CPU time at each request

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        it = iter(self.loader)
        while True:
            self.sync()
            self.asked.append(time.perf_counter())
            self.cpu.append(time.process_time())
            try:
                batch = next(it)
            except StopIteration:
                return
            self.got.append(time.perf_counter())
            yield batch

    def rates(self, batch: int) -> dict[str, float]:
        n = len(self.got) - 1                              # the first step is a warm-up
        wall = self.asked[-1] - self.asked[1]
        wait = sum(g - a for a, g in zip(self.asked[1:], self.got[1:]))
        cpu = self.cpu[-1] - self.cpu[1]
        return {"steps": n, "img_per_s": round(n * batch / max(wall, 1e-9), 2),
                "step_ms": round(1e3 * wall / max(n, 1), 1), "data_wait_share": round(wait / max(wall, 1e-9), 3),
                "cpu_ms_per_img": round(1e3 * cpu / max(n * batch, 1), 1)}


def _train_rate(mode: str, model, ds, args, out: Path, device: str) -> dict[str, float]:
    from edgeprune.config import SparseConfig, TrainConfig
    from edgeprune.sparsity.hook import DistillHook, SparsityHook
    from edgeprune.train.ema import ModelEMA
    from edgeprune.train.trainer import Trainer

    import dataclasses
    kw = {} if args.workers is None else {"workers": args.workers}
    if args.threads and "threads" in {f.name for f in dataclasses.fields(TrainConfig)}:
        kw["threads"] = args.threads             # else the trainer's own policy would replace --threads
    cfg = TrainConfig(epochs=1, batch=args.batch, eval_every=1000, **kw)
    hooks, teacher = [], None
    if mode == "sparse":
        hooks, teacher = [SparsityHook(SparseConfig(refresh_every=10))], copy.deepcopy(model)
    elif mode == "finetune":
        hooks, teacher = [DistillHook(SparseConfig())], copy.deepcopy(model)
    trainer = Trainer(model, ds, cfg, out, hooks=hooks, teacher=teacher, imgsz=args.imgsz_now, device=device,
                      progress=False)
    trainer.ema = ModelEMA(trainer.model)
    for h in hooks:
        h.on_train_start(trainer)
    sync = _sync(device)
    make = trainer._loader
    timed: list[_TimedLoader] = []

    def loader(epoch):
        timed.append(_TimedLoader(make(epoch), sync))
        return timed[-1]

    trainer._loader = loader
    trainer._train_epoch()
    return timed[-1].rates(args.batch)


def _sync(device: str):
    import torch
    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def _eval_rate(model, ds, args, device: str) -> dict[str, float]:
    from edgeprune.metrics import evaluate

    val = ds.splits["val"]
    model = model.to(device)
    evaluate(model, val[:args.batch], ds.names, args.imgsz_now, batch=args.batch)       # warm-up
    _sync(device)()
    t0, c0 = time.perf_counter(), time.process_time()
    evaluate(model, val, ds.names, args.imgsz_now, batch=args.batch)
    _sync(device)()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"images": len(val), "img_per_s": round(len(val) / max(dt, 1e-9), 2),
            "cpu_ms_per_img": round(1e3 * cpu / max(len(val), 1), 1)}


def _ratio_rate(model, ds, args, device: str) -> dict[str, float]:
    """Wall time of `solve_ratios` and the model forwards it ran (each candidate evaluation runs one per batch)."""
    from edgeprune.config import make_config
    from edgeprune.sparsity.ratios import solve_ratios
    from edgeprune.sparsity.run import val_batches

    cfg = make_config()
    cfg.model.imgsz = args.imgsz_now
    batches = [(x.to(device), t.to(device)) for x, t in val_batches(ds, cfg, args.batch)]
    model = model.to(device)
    calls: list[int] = []      # runs of the last layer: one per batch and evaluation (fx tracing runs no hooks)
    model.layers[-1].register_forward_pre_hook(lambda *_: calls.append(1))
    _sync(device)()
    t0, c0 = time.perf_counter(), time.process_time()
    doc = solve_ratios(model, batches, cfg.sparse, cfg.prune)
    _sync(device)()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"batches": len(batches), "forwards": len(calls), "forwards_per_s": round(len(calls) / max(dt, 1e-9), 2),
            "wall_s": round(dt, 2), "cpu_s": round(cpu, 2), "flops_reduction": round(doc["flops_reduction"], 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["n", "s"])
    ap.add_argument("--imgsz", nargs="+", type=int, default=[256, 640])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--steps", type=int, default=4, help="timed training steps per mode (one more runs untimed)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--val", type=int, default=16, help="validation images for the evaluation rate")
    ap.add_argument("--workers", default=None, help="train.workers (default: the config's default)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the trainer's policy)")
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    ap.add_argument("--out", default=None, help="JSON output (default: stdout only)")
    args = ap.parse_args()
    if args.workers is not None and args.workers != "auto":
        args.workers = int(args.workers)

    try:                    # what `compress` does before torch loads (absent from older trees)
        from edgeprune.train.resources import passive_wait
        passive_wait()
    except ImportError:
        pass
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from edgeprune.data.dataset import load_dataset
    from edgeprune.data.synth import ensure_synthetic
    from edgeprune.train.trainer import new_model

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    result = {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or "cpu",
              "torch": torch.__version__, "cpus": len(os.sched_getaffinity(0)), "batch": args.batch,
              "steps": args.steps, "workers": args.workers, "threads_arg": args.threads,
              "loadavg_before": [round(x, 2) for x in os.getloadavg()], "runs": []}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for imgsz in args.imgsz:
            args.imgsz_now = imgsz
            n_train = (args.steps + 1) * args.batch
            ds = load_dataset(ensure_synthetic(Path(tmp) / "synth", n_train, args.val, imgsz, seed=0, progress=False))
            for size in args.sizes:
                for mode in args.modes:
                    model, _ = new_model(ds, size, imgsz, seed=0, autoanchor=False)
                    if mode == "eval":
                        rate = _eval_rate(model, ds, args, device)
                    elif mode == "ratios":
                        rate = _ratio_rate(model, ds, args, device)
                    else:
                        rate = _train_rate(mode, model, ds, args, Path(tmp) / f"{size}{imgsz}{mode}", device)
                    row = {"size": size, "imgsz": imgsz, "mode": mode, "threads": torch.get_num_threads(), **rate}
                    print(json.dumps(row), flush=True)
                    result["runs"].append(row)
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    if args.out:
        from edgeprune.fsio import atomic_write_json
        atomic_write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
