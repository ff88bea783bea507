"""The trainer hooks (CONTRACTS.md, Training). SparsityHook: attention loss in `extra_loss`, L1RR subgradients
in `after_backward`, sparsity statistics in `on_epoch_end`, resumable through `state_dict`. DistillHook: the
same attention loss alone, for fine-tuning a pruned model against the dense one (`finetune.distill`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config, SparseConfig
from .attention import attention_loss, target_energy
from .graph import unwrap
from .regularizer import L1RRRegularizer

# log10|gamma| histogram bins for the per-epoch snapshots (plots.py draws them).
HIST_EDGES = np.linspace(-5.0, 1.0, 61)


def gamma_histogram(gammas: torch.Tensor) -> list[int]:
    logs = np.log10(np.clip(gammas.detach().abs().cpu().numpy(), 10 ** HIST_EDGES[0], 10 ** HIST_EDGES[-1]))
    return np.histogram(logs, bins=HIST_EDGES)[0].astype(int).tolist()


def total_steps(trainer: Any) -> int:
    """Optimizer steps of the run: `trainer.total_steps` if it has one, else epochs x iterations per epoch."""
    total = getattr(trainer, "total_steps", None)
    return int(total) if total else int(trainer.epochs) * int(trainer.nb)


def bn_lr(trainer: Any, reg: L1RRRegularizer) -> float | None:
    """The current learning rate of the optimizer group holding the BN weights (None if unknown)."""
    opt = getattr(trainer, "optimizer", None)
    if opt is None:
        return None
    probe = next(iter(reg.bns.values())).weight
    for group in opt.param_groups:
        if any(p is probe for p in group["params"]):
            return float(group["lr"])
    return None


def _attention_kw(c: SparseConfig) -> dict[str, float]:
    return {"p": c.attention_p, "fg_weight": c.fg_weight, "small_area": c.small_area, "small_boost": c.small_boost}


def _freeze(teacher: torch.nn.Module) -> None:
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)


def teacher_attention(cfg: SparseConfig, trainer: Any, imgs: torch.Tensor, targets: torch.Tensor,
                      feats: list[torch.Tensor]) -> torch.Tensor:
    """The feature attention loss of the student's neck features `feats` against `trainer.teacher`'s on the
    same images. Attention maps average over channels, so a pruned student compares with its dense teacher.
    The trainer calls this inside its autocast region: the teacher runs without autograd in the student's
    precision (bf16/fp16 under AMP on CUDA)."""
    with torch.no_grad():
        teacher_feats = trainer.teacher.forward_features(imgs)
    return attention_loss(feats, teacher_feats, targets, **_attention_kw(cfg))


class DistillHook:
    """Fine-tuning with the feature attention loss (weight `sparse.attention_weight`) against the frozen dense
    model passed to the trainer as `teacher`: the pruned model is pulled back to the dense model's target
    features while it recovers."""

    def __init__(self, cfg: SparseConfig):
        self.cfg = cfg

    def on_train_start(self, trainer: Any) -> None:
        if trainer.teacher is None:
            raise ValueError("DistillHook needs the trainer's teacher (the dense model)")
        _freeze(trainer.teacher)

    def extra_loss(self, trainer: Any, imgs: torch.Tensor, targets: torch.Tensor, feats: list[torch.Tensor]):
        loss = teacher_attention(self.cfg, trainer, imgs, targets, feats)
        return self.cfg.attention_weight * loss, {"att": loss.detach()}


def distill_args(cfg: Config, dense_checkpoint: str | Path) -> dict[str, Any]:
    """fit() keyword arguments of a fine-tune: with `finetune.distill`, the dense teacher and a DistillHook."""
    if not cfg.finetune.distill:
        return {}
    from ..models.io import model_from_checkpoint
    return {"teacher": model_from_checkpoint(dense_checkpoint), "hooks": [DistillHook(cfg.sparse)]}


class SparsityHook:
    def __init__(self, cfg: SparseConfig, skip_unsupported: bool = False):
        self.cfg, self.skip_unsupported = cfg, skip_unsupported      # prune.skip_unsupported (the channel graph)
        self.reg: L1RRRegularizer | None = None
        self.steps: list[list[Any]] = []       # [step, s(t), share, attention loss]: device tensors until epoch end
        self.epochs: list[dict[str, Any]] = []
        self._last_att: torch.Tensor | float = 0.0   # a device tensor during an epoch (no per-step host read)
        self._pending: dict[str, Any] | None = None

    @property
    def use_attention(self) -> bool:
        return self.cfg.method == "l1rr" and self.cfg.attention and self.cfg.attention_weight > 0

    def on_train_start(self, trainer: Any) -> None:
        model = unwrap(trainer.model)
        self.reg = L1RRRegularizer(model, self.cfg, total_steps(trainer), self.skip_unsupported)
        if trainer.teacher is not None:
            _freeze(trainer.teacher)
        if self._pending is not None:
            if self._pending.get("reg"):
                self.reg.load_state_dict(self._pending["reg"])
            self._pending = None
        else:
            lr0 = float(getattr(trainer.cfg, "lr0", 0.0) or 0.0)
            gam = torch.cat([m.weight.detach().abs().flatten() for m in self.reg.bns.values()])
            self.reg.controller.calibrate(float(gam.median()), lr0)
            self.reg.refresh()
            self.epochs.append(self._snapshot(-1))

    def extra_loss(self, trainer: Any, imgs: torch.Tensor, targets: torch.Tensor, feats: list[torch.Tensor]):
        assert self.reg is not None, "on_train_start was not called"
        if self.reg.adaptive and trainer.step % self.cfg.refresh_every == 0:
            self._observe_taylor(targets, feats)
        if not (self.use_attention and trainer.teacher is not None):
            return None
        loss = teacher_attention(self.cfg, trainer, imgs, targets, feats)
        self._last_att = loss.detach()
        return self.cfg.attention_weight * loss, {"att": self._last_att}

    def _observe_taylor(self, targets: torch.Tensor, feats: list[torch.Tensor]) -> None:
        """Target-region Taylor importance |gamma * dE/dgamma| of every penalised BN, from this step's graph."""
        names = list(self.reg.bns)
        params = [self.reg.bns[n].weight for n in names]
        energy = target_energy(feats, targets, **_attention_kw(self.cfg))
        if not energy.requires_grad:
            return
        grads = torch.autograd.grad(energy, params, retain_graph=True, allow_unused=True)
        self.reg.observe_importance({n: (g * p.detach()).abs() for n, g, p in zip(names, grads, params)
                                     if g is not None})

    def after_backward(self, trainer: Any, step: int) -> None:
        assert self.reg is not None, "on_train_start was not called"
        if step % self.cfg.refresh_every == 0:
            self.reg.refresh()
        s = self.reg.apply(step, bn_lr(trainer, self.reg))
        self.steps.append([int(step), s, self.reg.last_share, self._last_att])

    def _snapshot(self, epoch: int) -> dict[str, Any]:
        reg = self.reg
        gam = torch.cat([m.weight.detach().abs().flatten() for m in reg.all_bns.values()])
        return {"epoch": int(epoch), "zero_share": reg.zero_share(), "zero_share_all": reg.zero_share(False),
                "strength": float(reg.strength), "hist": gamma_histogram(gam),
                "lams": {n: round(v, 4) for n, v in reg.lams.items()}}

    def on_epoch_end(self, trainer: Any, epoch: int) -> dict[str, float]:
        for row in self.steps:                 # this epoch's s(t), shares and attention losses, read once
            row[1:] = [float(v) for v in row[1:]]
        self._last_att = float(self._last_att)
        snap = self._snapshot(epoch)
        self.epochs.append(snap)
        return {"zero_share": snap["zero_share"], "sparse_s": snap["strength"], "att": self._last_att}

    def log(self) -> dict[str, Any]:
        """What run.py writes to sparsity.json."""
        return {"zero_threshold": self.cfg.zero_threshold, "target": self.cfg.target,
                "hist_edges_log10": HIST_EDGES.tolist(), "epochs": self.epochs,
                "steps": self.steps}

    def state_dict(self) -> dict[str, Any]:
        return {"reg": self.reg.state_dict() if self.reg else None, "steps": self.steps, "epochs": self.epochs}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        # The trainer restores before on_train_start builds the regularizer (and a finished run never
        # calls it): take the logs now, keep the regularizer state until it exists.
        self.steps, self.epochs = list(d["steps"]), list(d["epochs"])
        if self.reg is None:
            self._pending = d
        elif d.get("reg"):
            self.reg.load_state_dict(d["reg"])
