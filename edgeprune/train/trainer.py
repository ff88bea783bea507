"""The training loop: `fit(model, data, cfg, out_dir, ...)` (see docs/CONTRACTS.md, "Training").

SGD (nesterov; BN weights / conv weights with decay / biases as three groups) or AdamW; linear warm-up
(bias lr falls from warmup_bias_lr, momentum rises from warmup_momentum), then cosine from lr0 to lr0*lrf,
evaluated per iteration; EMA weights are evaluated and saved; gradient clipping.
On CUDA: AMP (bf16 where the GPU supports it, else fp16 with a GradScaler), channels_last, pinned batches copied
without blocking. The step never waits for the device: losses are summed on it and read every LOG_EVERY steps
(and at the epoch's end), where a non-finite loss is caught. Threads and data workers: train/resources.py.
Every epoch writes last.pt (everything needed for an exact resume: raw + EMA weights, optimizer, epoch,
RNG states, hooks' state, history) and best.pt (by mAP50), log.csv, log.json and curves.png.
Early stopping (`train.patience` > 0): the run ends once the EMA's val mAP50 has not improved for that many
epochs (checked on evaluation epochs; never while it is still 0); `epochs` stays the length of the lr schedule, and the final metrics say
where it stopped (`epochs`, `stopped_early`, `best_epoch`).

Hooks (the sparsity trainer plugs in here) are objects with any of: on_train_start(trainer),
extra_loss(trainer, imgs, targets, feats) -> (tensor, dict) | None, after_backward(trainer, step) (called
with unscaled gradients, before the optimizer step), on_epoch_end(trainer, epoch) -> dict, state_dict(),
load_state_dict(d).

Under torchrun (WORLD_SIZE > 1) the loop runs DistributedDataParallel on a gloo/nccl process group:
`cfg.batch` is the global batch per optimizer step whatever the world size: each rank loads micro-batches
of batch / (world_size * accumulate) images from its DistributedSampler shard and steps every `accumulate`
micro-batches. The same sampler (one replica) orders a single-process run, so 1 and N processes see the
same images per step. Rank 0 alone evaluates and writes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..config import ModelConfig, TrainConfig
from ..errors import CheckpointError, ConfigError, DataError
from ..fsio import atomic_write_json, atomic_write_text
from ..models.io import load_checkpoint, save_checkpoint
from .dist import check_global_batch, default_device, dist_info, init_process_group
from .ema import ModelEMA
from .global_bn import plain_bn, use_global_bn
from .loss import DetectionLoss
from .loss_v8 import V8DetectionLoss
from .resources import resolve_threads, resolve_workers

log = logging.getLogger(__name__)

# Steps between reads of the device-side loss sums (progress bar, non-finite check).
LOG_EVERY = 20


class _TrainStep(nn.Module):
    """Wraps the detector so one forward (the one DDP sees) returns both the neck features and head maps."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        feats = self.model.forward_features(x)
        return feats, self.model.detect(feats)


class _EpochSampler(torch.utils.data.Sampler):
    """DistributedSampler order, yielding (epoch, index) so that persistent workers (whose dataset copies never
    see `set_epoch`) still draw each item's augmentation from (seed, epoch, index)."""

    def __init__(self, sampler: torch.utils.data.DistributedSampler):
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        return ((self.epoch, i) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    st = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(st[1].astype(np.int64)), "pos": int(st[2]),
                       "has_gauss": int(st[3]), "gauss": float(st[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """[BN/norm weights (no decay), other weights (decay), biases (no decay)] — YOLOv5's three groups."""
    bn, weights, biases = [], [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if name == "bias":
                biases.append(p)
            elif isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)):
                bn.append(p)
            else:
                weights.append(p)
    return [{"params": bn, "weight_decay": 0.0, "name": "bn"},
            {"params": weights, "weight_decay": weight_decay, "name": "weights"},
            {"params": biases, "weight_decay": 0.0, "name": "biases"}]


def build_loss(model: nn.Module, imgsz: int, cfg) -> nn.Module:
    """The loss of `model`'s family: anchor-free (train.loss_v8, its own gains) or this YOLOv5-style one
    with the config's gains."""
    if model.spec["family"] == "edgeprune-yolov8":
        return V8DetectionLoss(model)
    return DetectionLoss(model, imgsz, cfg.box_gain, cfg.obj_gain, cfg.cls_gain, cfg.anchor_t)


class Trainer:
    """State of one training run; hooks receive it. Public attributes: model (raw, unwrapped), ema,
    optimizer, cfg, epoch, step (global iteration), epochs, nb (iterations per epoch), teacher, device,
    imgsz, out_dir, data, rank, world_size, is_main."""

    def __init__(self, model: nn.Module, data: Any, cfg: TrainConfig, out_dir: str | Path,
                 hooks: Sequence[Any] = (), teacher: nn.Module | None = None, imgsz: int = ModelConfig.imgsz,
                 device: str | None = None, progress: bool = True):
        if not data.splits.get("train"):
            raise DataError("the dataset has no 'train' samples; check the dataset path / split names")
        self.world_size, self.rank, _ = dist_info()
        self.is_main = self.rank == 0
        check_global_batch(cfg.batch, cfg.accumulate, self.world_size)
        self.cfg, self.data, self.imgsz, self.progress = cfg, data, imgsz, progress
        self.out_dir = Path(out_dir)
        if device is None:
            device = default_device()
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        self.use_amp = bool(cfg.amp and cuda)
        # bf16 needs no loss scaling; fp16 (GPUs without bf16) does
        self.amp_dtype = torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported() else torch.float16
        self.memory_format = torch.channels_last if cuda else torch.contiguous_format
        self.workers = resolve_workers(cfg.workers, self.device.type)
        self.threads = resolve_threads(cfg.threads, self.workers)
        torch.set_num_threads(self.threads)
        self.hooks = list(hooks)
        self.model = model.to(self.device, memory_format=self.memory_format)
        self.teacher = None
        if teacher is not None:
            self.teacher = teacher.to(self.device, memory_format=self.memory_format).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        self.epochs = cfg.epochs
        self.epoch = 0
        self.step = 0
        self.best_map50 = -1.0
        self.best_epoch = 0                 # the epoch (1-based) whose evaluation gave best_map50
        if cfg.patience > 0 and not data.splits.get("val"):
            raise ConfigError("config key train.patience: early stopping needs a 'val' split to evaluate on; "
                              "set train.patience=0 or add a val split")
        self.history: list[dict[str, Any]] = []
        self.loss_fn = build_loss(self.model, imgsz, cfg).to(self.device)
        self.micro_batch = cfg.batch // (self.world_size * cfg.accumulate)
        self.dataset = self._make_dataset()
        self.nb = math.ceil(math.ceil(len(self.dataset) / self.world_size) / self.micro_batch)
        self.optimizer = self._make_optimizer()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self._data_loader: torch.utils.data.DataLoader | None = None
        self.ema: ModelEMA | None = None
        self.step_module: nn.Module = _TrainStep(self.model)
        if self.world_size > 1:
            self._wrap_ddp()

    # ----------------------------------------------------------------- setup
    def _make_dataset(self):
        from ..data.torchdata import DetectionDataset
        cache = {"auto": None, "ram": True, "off": False}[self.cfg.cache]
        return DetectionDataset(self.data.splits["train"], self.imgsz, augment=True, train_cfg=self.cfg,
                                seed=self.cfg.seed, cache=cache, shared=self.workers > 0)

    def _loader(self, epoch: int) -> torch.utils.data.DataLoader:
        """One DataLoader for the whole run (its workers persist across epochs), set to `epoch`."""
        from ..data.torchdata import collate

        if self._data_loader is None:
            # permutation = randperm(seed + epoch) for any world size; rank r takes every world_size-th index
            sampler = _EpochSampler(torch.utils.data.DistributedSampler(
                self.dataset, self.world_size, self.rank, shuffle=True, seed=self.cfg.seed, drop_last=False))
            gen = torch.Generator().manual_seed(self.cfg.seed * 1000003)   # worker seeds (items do not use them)
            self._data_loader = torch.utils.data.DataLoader(
                self.dataset, self.micro_batch, sampler=sampler, generator=gen, num_workers=self.workers,
                collate_fn=collate, pin_memory=self.device.type == "cuda", persistent_workers=self.workers > 0)
        self._data_loader.sampler.set_epoch(epoch)
        return self._data_loader

    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.cfg
        groups = param_groups(self.model, cfg.weight_decay)
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=cfg.lr0, momentum=cfg.momentum, nesterov=True)
        return torch.optim.AdamW(groups, lr=cfg.lr0, betas=(cfg.momentum, 0.999))

    def _wrap_ddp(self) -> None:
        init_process_group(self.cfg.dist_timeout_s, self.device.type)
        cuda = self.device.type == "cuda"
        if self.cfg.sync_bn is True and cuda:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.optimizer = self._make_optimizer()
        elif self.cfg.sync_bn in (True, "auto") and not cuda:
            use_global_bn(self.model)          # in place: the hooks' and the EMA's module references stay valid
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.step_module = nn.parallel.DistributedDataParallel(_TrainStep(self.model), device_ids=ids)

    # ------------------------------------------------------------- schedule
    def lr_factor(self, progress_epochs: float) -> float:
        """Cosine from 1 to lrf over the run (progress in epochs, fractional)."""
        x = min(progress_epochs / max(self.epochs, 1), 1.0)
        return ((1 - math.cos(x * math.pi)) / 2) * (self.cfg.lrf - 1) + 1

    def _set_lr(self, step: int) -> None:
        cfg = self.cfg
        target = cfg.lr0 * self.lr_factor(step / self.nb)
        warm = max(round(cfg.warmup_epochs * self.nb), 1) if cfg.warmup_epochs > 0 else 0
        for g in self.optimizer.param_groups:
            lr, mom = target, cfg.momentum
            if step < warm:
                xi = step / warm
                start = cfg.warmup_bias_lr if (g["name"] == "biases" and cfg.optimizer == "sgd") else 0.0
                lr = start + (target - start) * xi
                mom = cfg.warmup_momentum + (cfg.momentum - cfg.warmup_momentum) * xi
            g["lr"] = lr
            if "momentum" in g:
                g["momentum"] = mom
            else:
                g["betas"] = (mom, g["betas"][1])

    # ----------------------------------------------------------- checkpoint
    def _state(self, final: dict[str, Any] | None) -> dict[str, Any]:
        return {"train": {
            "epoch": self.epoch, "step": self.step, "epochs": self.epochs,
            "model_raw": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema_updates": self.ema.updates,
            "best_map50": self.best_map50,
            "best_epoch": self.best_epoch,
            "hooks": [h.state_dict() if hasattr(h, "state_dict") else None for h in self.hooks],
            "rng": _rng_state(),
            "history": self.history,
            "cfg": dataclasses.asdict(self.cfg),
            "imgsz": self.imgsz,
            "final": final,
        }}

    def _resume(self, path: Path) -> dict[str, Any] | None:
        ckpt = load_checkpoint(path, map_location=str(self.device))
        st = ckpt.get("train")
        if not isinstance(st, dict):
            raise CheckpointError(f"{path}: has no training state to resume from; use another out_dir "
                                  "or resume=False")
        if ckpt["spec"] != self.model.spec:
            raise CheckpointError(f"{path}: was written for another model (architecture spec differs); "
                                  "use another out_dir or resume=False")
        if st["cfg"] != dataclasses.asdict(self.cfg):
            changed = sorted(k for k, v in dataclasses.asdict(self.cfg).items() if st["cfg"].get(k) != v)
            log.warning("%s: resuming with changed train settings %s; the run is no longer exact", path, changed)
        self.model.load_state_dict(st["model_raw"])
        self.ema = ModelEMA(self.model, updates=int(st["ema_updates"]))
        self.ema.ema.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(st["optimizer"])
        if st["scaler"]:        # empty when saved without fp16 scaling (CPU, bf16): the new scaler starts fresh
            self.scaler.load_state_dict(st["scaler"])
        for h, hs in zip(self.hooks, st["hooks"]):
            if hs is not None and hasattr(h, "load_state_dict"):
                h.load_state_dict(hs)
        self.epoch, self.step = int(st["epoch"]), int(st["step"])
        self.best_map50 = float(st["best_map50"])
        self.best_epoch = int(st.get("best_epoch", 0))      # absent in checkpoints from before train.patience
        self.history = list(st["history"])
        _set_rng_state(st["rng"])
        return st.get("final")

    def _save(self, metrics: dict[str, Any] | None, final: dict[str, Any] | None, improved: bool) -> None:
        save_checkpoint(self.out_dir / "last.pt", self.ema.ema, **self._state(final))
        if improved or not (self.out_dir / "best.pt").exists():
            save_checkpoint(self.out_dir / "best.pt", self.ema.ema, metrics=metrics, epoch=self.epoch,
                            imgsz=self.imgsz)

    # -------------------------------------------------------------- running
    def run(self, resume: bool = True) -> dict[str, Any]:
        last = self.out_dir / "last.pt"
        final = None
        if resume and last.is_file():
            final = self._resume(last)
            if final is not None:
                return final
            if self.is_main:
                print(f"[train] resuming from {last} after epoch {self.epoch}/{self.epochs}", flush=True)
        else:
            seed_everything(self.cfg.seed)
            self.ema = ModelEMA(self.model)
        for h in self.hooks:
            if hasattr(h, "on_train_start"):
                h.on_train_start(self)
        while self.epoch < self.epochs:
            row = self._train_epoch()
            self.epoch += 1
            metrics = None
            if self.epoch % max(self.cfg.eval_every, 1) == 0 or self.epoch == self.epochs:
                metrics = self._evaluate()
                if metrics is not None:
                    row.update(map50=metrics["map50"], map=metrics["map"], ap_small=metrics["ap_small"])
            for h in self.hooks:
                if hasattr(h, "on_epoch_end"):
                    row.update(h.on_epoch_end(self, self.epoch - 1) or {})
            self.history.append(row)
            improved = metrics is not None and metrics["map50"] > self.best_map50
            if improved:
                self.best_map50, self.best_epoch = metrics["map50"], self.epoch
            stop = self._plateaued()
            if self.epoch == self.epochs or stop:
                final = {**(metrics or {}), "best_map50": self.best_map50, "best_epoch": self.best_epoch,
                         "epochs": self.epoch, "stopped_early": stop}
            if self.is_main:
                self._save(metrics, final, improved)
                # the PNG costs seconds on a busy CPU: draw it when there is a new mAP point (and at the end)
                self._write_logs(plot=metrics is not None or final is not None)
            if stop:
                if self.is_main:
                    print(f"[train] early stop after epoch {self.epoch}: val mAP50 has not improved for "
                          f"{self.epoch - self.best_epoch} epochs (best {self.best_map50:.4f} at epoch "
                          f"{self.best_epoch}; train.patience={self.cfg.patience})", flush=True)
                break
        return final if final is not None else {}

    def _plateaued(self) -> bool:
        """Early stopping: True when `patience` epochs have passed since the best evaluation. Only rank 0
        evaluates, so under DDP its decision is broadcast (on evaluation epochs, which every rank knows)."""
        if self.cfg.patience <= 0 or self.epoch >= self.epochs or self.epoch % max(self.cfg.eval_every, 1):
            return False
        # a model that has detected nothing yet (mAP50 0 through warm-up) is starting, not on a plateau
        stop = self.is_main and self.best_map50 > 0 and self.epoch - self.best_epoch >= self.cfg.patience
        if self.world_size > 1:
            import torch.distributed as dist
            flag = torch.tensor([int(stop)], device=self.device if self.device.type == "cuda" else "cpu")
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
        return stop

    def _evaluate(self) -> dict[str, Any] | None:
        val = self.data.splits.get("val")
        if not val or not self.is_main:
            return None
        from ..metrics import evaluate
        return evaluate(self.ema.ema, val, self.data.names, self.imgsz, batch=self.cfg.batch,
                        progress=self.progress)

    def _train_epoch(self) -> dict[str, Any]:
        cfg = self.cfg
        self.step_module.train()
        loader = self._loader(self.epoch)
        sums: dict[str, Any] = {}               # device tensors (and hooks' floats); read every LOG_EVERY steps
        seen, wait, t0, cpu0 = 0, 0.0, time.perf_counter(), time.process_time()
        bar = tqdm(total=self.nb, desc=f"epoch {self.epoch + 1}/{self.epochs}",
                   disable=not (self.progress and self.is_main), leave=False)
        self.optimizer.zero_grad(set_to_none=True)
        batches = iter(loader)
        i = 0
        while True:
            tw = time.perf_counter()
            try:
                imgs, targets, _metas = next(batches)
            except StopIteration:
                break
            wait += time.perf_counter() - tw
            self._set_lr(self.step - i % cfg.accumulate)   # one lr per optimizer step (its first micro-batch)
            imgs = imgs.to(self.device, non_blocking=True, memory_format=self.memory_format)
            targets = targets.to(self.device, non_blocking=True)
            last_of_epoch = i + 1 == self.nb
            stepping = (i + 1) % cfg.accumulate == 0 or last_of_epoch
            sync = contextlib.nullcontext()
            if self.world_size > 1 and not stepping:
                sync = self.step_module.no_sync()        # all-reduce once per optimizer step
            with sync:
                with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                    feats, raw = self.step_module(imgs)
                    loss, items = self.loss_fn(raw, targets)
                    # The detection loss is a sum over images (mean x batch): summing micro-batches keeps the
                    # global batch's gradient; DDP averages over ranks, so scale by the world size.
                    loss = loss * self.world_size
                    for h in self.hooks:
                        extra = h.extra_loss(self, imgs, targets, feats) if hasattr(h, "extra_loss") else None
                        if extra is not None:
                            loss = loss + extra[0]
                            items.update(extra[1])
                self.scaler.scale(loss).backward()
            if stepping:
                self.scaler.unscale_(self.optimizer)
                for h in self.hooks:
                    if hasattr(h, "after_backward"):
                        h.after_backward(self, self.step)
                if cfg.grad_clip > 0:
                    nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                self.ema.update(self.model)
            items["loss"] = loss.detach()
            for k, v in items.items():
                sums[k] = sums[k] + v if k in sums else v
            seen += imgs.shape[0]
            self.step += 1
            i += 1
            if i % LOG_EVERY == 0 or last_of_epoch:
                self._check_finite(float(sums["loss"]), i)
                dt = time.perf_counter() - t0
                bar.set_postfix(loss=f"{float(sums['loss']) / i:.3f}", img_s=f"{seen * self.world_size / dt:.1f}",
                                data=f"{100 * wait / dt:.0f}%")
            bar.update(1)
        bar.close()
        dt = time.perf_counter() - t0
        row: dict[str, Any] = {"epoch": self.epoch + 1, "lr": self.optimizer.param_groups[1]["lr"]}
        row.update({k: float(v) / max(self.nb, 1) for k, v in sums.items()})
        # cpu_s (this process's CPU time) lets a run on a shared machine be extrapolated to free cores
        row.update(time_s=round(dt, 3), cpu_s=round(time.process_time() - cpu0, 3),
                   img_per_s=round(seen * self.world_size / max(dt, 1e-9), 2),
                   data_wait=round(wait / max(dt, 1e-9), 3), threads=self.threads, workers=self.workers)
        return row

    def _check_finite(self, loss_sum: float, i: int) -> None:
        if not math.isfinite(loss_sum):
            first = (i - 1) // LOG_EVERY * LOG_EVERY
            raise DataError(f"training loss became {loss_sum} at epoch {self.epoch + 1}, batches {first}-{i - 1}; "
                            "lower train.lr0 or check the labels")

    def _write_logs(self, plot: bool) -> None:
        keys: list[str] = []
        for row in self.history:
            keys += [k for k in row if k not in keys]
        lines = [",".join(keys)]
        for row in self.history:
            lines.append(",".join("" if row.get(k) is None else str(row[k]) for k in keys))
        atomic_write_text(self.out_dir / "log.csv", "\n".join(lines) + "\n")
        atomic_write_json(self.out_dir / "log.json", {"cfg": dataclasses.asdict(self.cfg), "imgsz": self.imgsz,
                                                      "world_size": self.world_size, "history": self.history})
        if plot:
            from .plots import plot_curves
            plot_curves(self.history, self.out_dir / "curves.png")


def fit(model: nn.Module, data: Any, cfg: TrainConfig, out_dir: str | Path, hooks: Sequence[Any] = (),
        resume: bool = True, teacher: nn.Module | None = None, imgsz: int = ModelConfig.imgsz, device: str | None = None,
        progress: bool = True) -> dict[str, Any]:
    """Train `model` on data.splits["train"], evaluating its EMA on data.splits["val"]; see the module doc.
    Returns the final metrics ({"map50", "map", "ap_small", "per_class", "best_map50", "best_epoch", "epochs"
    (run, fewer than cfg.epochs after an early stop), "stopped_early"})."""
    trainer = Trainer(model, data, cfg, out_dir, hooks, teacher, imgsz, device, progress)
    try:
        return trainer.run(resume)
    finally:
        plain_bn(model)                         # the caller's model leaves as it came (global BN: DDP on CPU)


def new_model(data: Any, size: str = "n", imgsz: int = ModelConfig.imgsz, seed: int = 0, autoanchor: bool = True,
              family: str = "yolov5"):
    """A fresh detector of `family` for `data` (class names from it); the anchor-based yolov5 family gets
    k-means anchors when the defaults' best possible recall on the training boxes is below 0.98.
    Returns (model, anchor report)."""
    from ..models.spec import DEFAULT_ANCHORS, new_spec
    from ..models.yolo import build_model
    from .anchors import auto_anchors

    anchors, report = DEFAULT_ANCHORS, {"changed": False}
    if autoanchor and family == "yolov5":
        anchors, report = auto_anchors(data.splits["train"], imgsz, DEFAULT_ANCHORS, seed=seed)
    seed_everything(seed)
    return build_model(new_spec(len(data.names), data.names, size, anchors, family)), report


__all__ = ["fit", "new_model", "Trainer", "param_groups", "seed_everything"]
