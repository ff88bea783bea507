"""Typed configuration: dataclass sections, YAML in/out, validation whose errors name the key path.

`compress` stores the resolved config in `runs/<name>/config.yaml`; each stage hashes the sections it
depends on (`Config.section_hash`) so a changed value invalidates exactly the stages downstream of it.
Presets (`default`, `quick`, `benchmark`) are overrides applied on top of the dataclass defaults.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from .errors import ConfigError
from .fsio import read_yaml


@dataclass
class DataConfig:
    source: str = "synthetic"          # "synthetic" or a dataset path (YOLO dir/data.yaml, COCO json, VOC, NWPU)
    format: str = "auto"               # auto | yolo | coco | voc | nwpu
    synth_train: int = 800             # synthetic images in the train split
    synth_val: int = 200               # synthetic images in the val split
    synth_size: int = 320              # synthetic scene side in pixels
    synth_style: str = "aerial"        # aerial (6 classes, 8 px vehicles to harbors) | simple (3 large-object
                                       # classes, learnable in minutes: the quick preset and the end-to-end tests)
                                       # | dior (20 DIOR-like classes, mostly < 16 px, crops of 2x larger tiles)
    seed: int = 0
    skip_bad: bool = False             # skip corrupt samples (and report how many) instead of failing


@dataclass
class ModelConfig:
    family: str = "yolov5"             # yolov5 (anchors + objectness) | yolov8 | yolo11 (anchor-free DFL head)
    size: str = "n"                    # n | s | m
    imgsz: int = 256                   # network input side (multiple of 32)
    weights: str = ""                  # a trained model to start from (compress --model): the dense stage
                                       # evaluates it instead of training; size comes from it, not model.size


@dataclass
class TrainConfig:
    epochs: int = 12                   # dense epochs (what they reach: BENCHMARKS.md §0)
    batch: int = 16
    optimizer: str = "sgd"             # sgd | adamw
    lr0: float = 0.01
    lrf: float = 0.05                  # final lr = lr0 * lrf (cosine)
    momentum: float = 0.937
    weight_decay: float = 5e-4
    warmup_epochs: float = 2.0
    ema: bool = True
    workers: Union[int, str] = "auto"  # data-loader worker processes; auto: from the cores (train/resources.py)
    threads: Union[int, str] = "auto"  # torch CPU threads; auto: OMP_NUM_THREADS, else the free cores minus workers
    cache: str = "auto"                # letterboxed train images in RAM: auto (fit half the free RAM) | ram | off
    mosaic: float = 0.5                # probability of a mosaic sample
    flip: float = 0.5                  # probability of each flip (lr, ud)
    rot90: float = 0.5                 # probability of a random 90-degree rotation
    hsv: float = 0.5                   # strength of HSV jitter (0 = off)
    amp: bool = True                   # used on CUDA only
    seed: int = 0
    eval_every: int = 5                # evaluate mAP every N epochs (and at the end)
    patience: int = 0                  # early stopping: end when val mAP50 has not improved for N epochs (0 = off;
                                       # checked on eval epochs; `epochs` stays the lr schedule's length)
    # trainer details (edgeprune/train): YOLOv5's published hyper-parameters unless measured otherwise
    warmup_momentum: float = 0.8       # SGD momentum / AdamW beta1 at the start of warm-up
    warmup_bias_lr: float = 0.1        # SGD bias lr at the start of warm-up (falls to the scheduled lr)
    grad_clip: float = 10.0            # max global gradient norm (0 = off)
    accumulate: int = 1                # optimizer step every N batches (per process)
    box_gain: float = 0.05             # yolov5 family: loss gains before YOLOv5's rescaling by nc, imgsz and levels (the yolov8 family uses its own, train/loss_v8.py)
    obj_gain: float = 1.0
    cls_gain: float = 0.5
    anchor_t: float = 4.0              # anchor match: max w/h ratio either way
    sync_bn: Union[bool, str] = "auto"  # BatchNorm statistics over the global batch under DDP: true (SyncBatchNorm on
                                       # CUDA, train/global_bn.py on CPU) | false (each rank's own) | auto (on CPU only)
    dist_timeout_s: float = 300.0      # DDP: give up joining the process group (unreachable rendezvous) after this


@dataclass
class SparseConfig:
    method: str = "l1rr"               # l1rr | slimming
    epochs: int = 8                    # sparse-training epochs
    lr0: float = 0.005
    warmup_epochs: float = 0.25        # lr warm-up when continuing from the trained dense model (see continued())
    target: float = 0.55               # target share of prunable channels pushed to zero. Below flops_target on
                                       # purpose: the controller overshoots by ~5 points, and zeroing fewer channels
                                       # (the ratio solver removes the last, least important live ones) kept more
                                       # accuracy (BENCHMARKS.md §1a)
    lam: float = 1e-3                  # base sparsity strength (a floor when lam_auto)
    lam_auto: bool = True              # l1rr: base = max(lam, median|gamma| / (lr0 * steps)): at base strength the
                                       # median channel would just reach 0 by the end (any run length / lr)
    reweight: bool = True
    dynamic: bool = True
    adaptive: bool = True
    attention: bool = True
    attention_weight: float = 1.0
    attention_tol: float = 0.05        # attention deviation the ratio solver allows per layer; flops_target is a
                                       # floor (the tolerance is raised until it is met), so the attention loss
                                       # decides how far past it to prune (BENCHMARKS.md §0). A tiny
                                       # value (e.g. 1e-6) makes the FLOPs target bind exactly (benchmarks do that)
    zero_threshold: float = 1e-2       # |gamma| below this counts as zero
    refresh_every: int = 50            # steps between reweighting refreshes
    flops_target: float = 0.65         # global FLOPs reduction the ratio solver aims for
    # --- L1RR details (edgeprune/sparsity; docs/l1rr.md derives each one; the paper gives none of them) ---
    reweight_eps: float = 0.05         # eps in the reweighting w = 1/(|gamma|+eps)
    reweight_taylor: float = 0.5       # reweighting also by (loss Taylor importance)^-this per channel (0 = by |gamma| only)
    protect_margin: float = 0.1        # reweighting: channels ranked above the (target + margin) share by importance
                                       # get no penalty, so zeros (sticky under the proximal step) cannot overshoot
    reweight_max: float = 10.0         # cap on a normalised channel weight (stops near-zero channels dominating)
    l1_update: str = "proximal"        # l1rr: proximal (soft-threshold gamma by lr*s*lam*w; zeros stay zero) | subgradient
    beta_l1: float = 0.0               # L1 on BN beta as a multiple of the gamma strength (yolov5 slimming repos: 10)
    ramp_frac: float = 0.05            # dynamic: share of steps over which s(t) ramps in from 0
    relax_frac: float = 0.2            # dynamic: final share of steps over which s(t) decays so accuracy recovers
    relax_to: float = 0.1              # dynamic: s(t) at the very end as a multiple of its value when relaxing starts
    dyn_gain: float = 0.25             # dynamic: log s grows by dyn_gain * gap per 1% of training
    lam_max_mult: float = 1000.0       # dynamic: s(t) stays within [lam_min_mult, lam_max_mult] * lam
    lam_min_mult: float = 0.1
    adapt_redundancy: float = 1.0      # self-adaptive: exponent on a layer's gamma redundancy (more -> more penalty)
    adapt_importance: float = 0.5      # self-adaptive: exponent on a layer's target-attention importance (more -> less)
    adapt_clip: float = 4.0            # self-adaptive: per-layer lambda multiplier clipped to [1/clip, clip]
    adapt_momentum: float = 0.8        # self-adaptive: EMA momentum of the per-layer statistics
    attention_p: float = 2.0           # attention map A = normalise(mean_c |F|^p)
    fg_weight: float = 4.0             # attention: extra weight inside ground-truth boxes (1 outside)
    small_area: float = 1024.0         # attention: boxes smaller than this many px^2 are boosted ...
    small_boost: float = 4.0           # ... by sqrt(small_area/area), at most this factor
    slim_lam: float = 1e-4             # slimming: the constant lam of network slimming (Liu et al. 2017: 1e-4)
    slim_decay: bool = True            # slimming: lam decays linearly to 0.1*lam like the yolov5 slimming repos
    importance: str = "taylor"         # ratio solver channel ranking: gamma (|gamma|) | taylor (|gamma| x target attention Taylor)
    mask_beta: bool = True             # ratio solver: masking zeroes beta too (False: keep beta, as the pruner folds it)
    ratio_batches: int = 2             # validation batches the ratio solver measures attention deviation on
    ratio_grid: int = 8                # ratio solver: candidate keep fractions per layer (1/grid steps)


def continued(train: TrainConfig, epochs: int, lr0: float, warmup_epochs: float) -> TrainConfig:
    """The training schedule for a stage that continues from trained weights (sparse, finetune): its own
    epochs, lr0 and a short warm-up in which the bias lr does NOT start at warmup_bias_lr. That spike (0.1,
    YOLOv5's from-scratch default, 20x the sparse lr0) shakes every BN beta of a trained model. A fixed
    budget: no early stopping (train.patience is the dense training's)."""
    return dataclasses.replace(train, epochs=epochs, lr0=lr0, warmup_bias_lr=0.0, patience=0,
                               warmup_epochs=min(warmup_epochs, train.warmup_epochs))


@dataclass
class PruneConfig:
    rule: str = "union"                # union | intersection | topk (residual junction retained-set rule)
    round_to: int = 8
    min_channels: int = 8
    skip_unsupported: bool = False
    fold: bool = True                  # fold removed channels' constant act(beta) into consumers (prune/apply.py)
    latency_table: str = ""            # a latency_table.json (bench --profile-layers): report.md predicts latency from it
    target: str = "flops"              # what the ratio solver meets: flops (sparse.flops_target, a floor on the FLOPs
                                       # cut) | latency (prune.latency_budget, a ceiling on the predicted latency)
    latency_budget: float = 0.6        # target=latency: the pruned model's predicted latency as a fraction of the dense
                                       # model's, from prune.latency_table or, when empty, a table measured on the spot
                                       # on this host with ONNX Runtime (1 thread); widths snap to each layer's
                                       # latency staircase (docs/pruning.md §6)


@dataclass
class FinetuneConfig:
    epochs: int = 8
    lr0: float = 0.005
    warmup_epochs: float = 1.0         # lr warm-up of the pruned model (see continued())
    distill: bool = False              # add the feature attention loss against the dense model (sparse.attention_*)


@dataclass
class ExportConfig:
    opset: int = 13                    # 13 so TensorRT 8.0/8.2 (JetPack 4.6) parses it
    dynamic_batch: bool = False
    simplify: bool = True
    nms_plugin: bool = False           # append TensorRT's EfficientNMS_TRT
    parity_images: int = 16
    parity_atol: float = 1e-3          # ORT vs torch, raw outputs before NMS; relax only knowingly
    parity_min_match: float = 0.99     # share of post-NMS detections that agree (near-ties excused)


# Keys that choose resources, not results (any worker count or cache setting gives the same batches; threads only
# reorder float sums): changing one must not invalidate a finished `compress` stage nor empty a resumable one.
RESOURCE_KEYS: dict[str, tuple[str, ...]] = {"train": ("workers", "threads", "cache")}


@dataclass
class Config:
    name: str = "default"
    preset: str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sparse: SparseConfig = field(default_factory=SparseConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section_hash(self, *sections: str) -> str:
        """Hash of what `sections` (or single keys, `section.key`) say about the results: RESOURCE_KEYS are left
        out."""
        d = self.to_dict()

        def part(s: str) -> Any:
            if "." in s:
                section, key = s.split(".", 1)
                return d[section][key]
            return {k: v for k, v in d[s].items() if k not in RESOURCE_KEYS.get(s, ())}

        blob = json.dumps({s: part(s) for s in sections}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # A smoke run that learns something visible: the "simple" synthetic scenes (3 classes, large objects), 128
    # images at 128 px, AdamW (SGD learns far less in 12 epochs), the FLOPs target binding (attention_tol ~0);
    # its mAPs and time: BENCHMARKS.md §0c. The end-to-end tests run this preset and check mAP50 floors before
    # they compare (tests/quick_floors.py).
    "quick": {
        "data": {"synth_style": "simple", "synth_train": 128, "synth_val": 32, "synth_size": 128},
        "model": {"imgsz": 128},
        "train": {"epochs": 12, "batch": 8, "optimizer": "adamw", "lr0": 0.002, "mosaic": 0.0, "eval_every": 4,
                  "warmup_epochs": 1.0},
        "sparse": {"epochs": 3, "lr0": 0.0005, "target": 0.35, "flops_target": 0.45, "attention_tol": 1e-6,
                   "refresh_every": 5, "ratio_grid": 4, "ratio_batches": 1},
        "finetune": {"epochs": 4, "lr0": 0.001},
        "export": {"parity_images": 4},
    },
    "benchmark": {
        "data": {"synth_train": 3000, "synth_val": 500, "synth_size": 416},
        "model": {"size": "s", "imgsz": 416},
        "train": {"epochs": 100},
        "sparse": {"epochs": 50},
        "finetune": {"epochs": 50},
    },
}

CHOICES = {
    "data.format": ("auto", "yolo", "coco", "voc", "nwpu"),
    "model.family": ("yolov5", "yolov8", "yolo11"),
    "data.synth_style": ("aerial", "simple", "dior"),
    "model.size": ("n", "s", "m"),
    "train.optimizer": ("sgd", "adamw"),
    "train.cache": ("auto", "ram", "off"),
    "sparse.method": ("l1rr", "slimming"),
    "sparse.importance": ("gamma", "taylor"),
    "sparse.l1_update": ("proximal", "subgradient"),
    "prune.rule": ("union", "intersection", "topk"),
    "prune.target": ("flops", "latency"),
}


def _check_ranges(cfg: Config) -> None:
    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"config key {key}: {why}")

    flat = _flatten(cfg.to_dict())
    for key, allowed in CHOICES.items():
        if flat[key] not in allowed:
            raise bad(key, f"{flat[key]!r} is not one of {list(allowed)}")
    if cfg.model.imgsz % 32 or cfg.model.imgsz < 64:
        raise bad("model.imgsz", f"must be a multiple of 32 and >= 64, got {cfg.model.imgsz}")
    for key in ("sparse.target", "sparse.flops_target", "prune.latency_budget"):
        if not 0.0 < flat[key] < 1.0:
            raise bad(key, f"must lie strictly between 0 and 1, got {flat[key]}")
    for key in ("train.epochs", "train.batch", "sparse.epochs", "prune.round_to", "prune.min_channels",
                "data.synth_train", "data.synth_val", "data.synth_size"):
        if flat[key] < 1:
            raise bad(key, f"must be >= 1, got {flat[key]}")
    for key in ("sparse.ramp_frac", "sparse.relax_frac", "sparse.relax_to", "sparse.adapt_momentum"):
        if not 0.0 <= flat[key] <= 1.0:
            raise bad(key, f"must lie in [0, 1], got {flat[key]}")
    if cfg.sparse.ramp_frac + cfg.sparse.relax_frac > 1.0:
        raise bad("sparse.relax_frac", "sparse.ramp_frac + sparse.relax_frac must be <= 1")
    for key in ("sparse.lam", "sparse.reweight_eps", "sparse.zero_threshold", "sparse.attention_tol",
                "sparse.adapt_clip", "sparse.lam_max_mult", "sparse.lam_min_mult", "sparse.attention_p", "sparse.slim_lam"):
        if flat[key] <= 0:
            raise bad(key, f"must be > 0, got {flat[key]}")
    if cfg.train.patience < 0:
        raise bad("train.patience", f"must be >= 0 (0 = no early stopping), got {cfg.train.patience}")
    for key in ("sparse.refresh_every", "sparse.ratio_batches", "sparse.ratio_grid"):
        if flat[key] < 1:
            raise bad(key, f"must be >= 1, got {flat[key]}")
    if flat["train.sync_bn"] not in (True, False, "auto"):
        raise bad("train.sync_bn", f"must be true, false or 'auto', got {flat['train.sync_bn']!r}")
    for key in ("train.workers", "train.threads"):
        v, low = flat[key], 0 if key == "train.workers" else 1
        if v != "auto" and not (isinstance(v, int) and not isinstance(v, bool) and v >= low):
            raise bad(key, f"must be 'auto' or an integer >= {low}, got {v!r}")
    if cfg.finetune.epochs < 0:
        raise bad("finetune.epochs", "must be >= 0")
    if not 0.0 <= cfg.export.parity_min_match <= 1.0:
        raise bad("export.parity_min_match", f"must lie in [0, 1], got {cfg.export.parity_min_match}")
    if cfg.export.parity_atol <= 0:
        raise bad("export.parity_atol", f"must be > 0, got {cfg.export.parity_atol}")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


_YAML12_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


def _coerce(value: Any, typ: Any, key: str) -> Any:
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _YAML12_FLOAT.fullmatch(value.strip()):
            return float(value)         # `1e-6`: a float in YAML 1.2 and to a user, a string to PyYAML (1.1)
    elif typ is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise ConfigError(f"config key {key}: expected {typ.__name__}, got {type(value).__name__} {value!r}")


def _apply(obj: Any, updates: dict[str, Any], prefix: str) -> None:
    if not isinstance(updates, dict):
        raise ConfigError(f"config key {prefix.rstrip('.') or '<root>'}: expected a mapping, got {type(updates).__name__}")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in updates.items():
        path = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"config key {path}: unknown key (known: {sorted(names)})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _apply(current, value, path + ".")
        else:
            setattr(obj, key, _coerce(value, hints[key], path))


def make_config(preset: str = "default", overrides: dict[str, Any] | None = None) -> Config:
    if preset not in PRESETS:
        raise ConfigError(f"config key preset: unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    cfg = Config(preset=preset)
    _apply(cfg, copy.deepcopy(PRESETS[preset]), "")
    if overrides:
        _apply(cfg, overrides, "")
    _check_ranges(cfg)
    return cfg


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set train.epochs=5 --set prune.rule=topk` -> nested dict (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=5")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: {key!r} is not a key path like train.epochs")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: value {raw!r} is not a valid YAML scalar") from None
        node = out
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[:i + 1])} is a value, not a section")
        node[parts[-1]] = value
    return out


def default_value(key: str) -> Any:
    """The dataclass default of a dotted config key (what `--help` shows beside a config flag)."""
    flat = _flatten(Config().to_dict())
    if key not in flat:
        raise ConfigError(f"config key {key}: unknown key")
    return flat[key]


def config_from_args(args: Any, overrides: dict[str, Any] | None = None) -> Config:
    """The config of a command, built the same way by every command: `--config FILE` (with its preset) or
    `--preset` (default "default"), then `--set KEY=VALUE`, then each flag declared with
    `cliconfig.config_flag` that the user gave (flags win over --set), then `overrides` (values a handler
    derives, e.g. compress's resolved --model path). A --preset that contradicts the file's is an error."""
    merged = parse_set(getattr(args, "set", None) or [])
    flags = {key: getattr(args, dest) for dest, key in (getattr(args, "config_keys", None) or {}).items()
             if getattr(args, dest, None) is not None}
    for key, value in flags.items():
        node = merged
        *sections, leaf = key.split(".")
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
    for section, values in (overrides or {}).items():
        merged.setdefault(section, {}).update(values)
    preset, path = getattr(args, "preset", None), getattr(args, "config", None)
    if path:
        cfg = load_config(path, merged)
        if preset and preset != cfg.preset:
            raise ConfigError(f"--preset {preset} conflicts with preset {cfg.preset!r} in {path}")
        return cfg
    return make_config(preset or "default", merged)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    path = Path(path)
    raw = read_yaml(path, ConfigError, "config file not found") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping of sections")
    raw = dict(raw)
    preset = raw.pop("preset", "default")
    if not isinstance(preset, str):
        raise ConfigError(f"{path}: config key preset must be a string")
    cfg = make_config(preset)
    _apply(cfg, raw, "")
    if overrides:
        _apply(cfg, overrides, "")
    _check_ranges(cfg)
    return cfg


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
