"""Real producer checkpoints for the importer tests: the `yolov5` and `ultralytics` packages from PyPI (AGPL;
installed for tests only, `pip install -e .[test-import]`), random weights from their stock YAMLs, saved the
way their trainers save. Tests that need them skip cleanly when they are absent."""
import copy
import sys
import types
from pathlib import Path

import pytest
import torch

from edgeprune.prune.apply import random_bn_stats


def _yolov5():
    stub = False
    try:  # yolov5 7.0.x imports pkg_resources for parse_version, which setuptools >= 81 no longer ships
        import pkg_resources  # noqa: F401
    except ImportError:
        from packaging.version import parse

        sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse)
        stub = True
    try:
        return pytest.importorskip("yolov5.models.yolo", reason="the yolov5 package (extra test-import) is not installed")
    finally:  # yolov5 keeps its reference; other code (pytest's syspath_prepend) must not find the stub
        if stub:
            sys.modules.pop("pkg_resources", None)


@pytest.fixture(scope="session")
def yolov5_yolo():
    return _yolov5()


def yolov5_yaml(name: str) -> Path:
    import yolov5

    return Path(yolov5.__file__).parent / "models" / name


def save_like_trainer(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    """As yolov5's train.py saves (half-precision model and EMA plus training metadata); returns the
    float32 copy of what was saved, the reference for output comparisons."""
    import numpy as np

    ckpt = {"epoch": 3, "best_fitness": np.array([0.25]), "model": copy.deepcopy(model).half(),
            "ema": copy.deepcopy(model).half(), "updates": 120, "optimizer": torch.optim.SGD(
                model.parameters(), lr=0.01, momentum=0.9).state_dict(),
            "opt": {"epochs": 3, "imgsz": 256, "hyp": {"lr0": 0.01}}, "git": None, "date": "2026-11-30T17:00:00"}
    torch.save(ckpt, path)
    return copy.deepcopy(model).half().float().eval()


def build_yolov5(yolo, cfg, nc: int = 10, seed: int = 0):
    torch.manual_seed(seed)
    model = yolo.Model(cfg, ch=3, nc=nc)
    model.names = ["class%d" % i for i in range(nc)]
    return random_bn_stats(model, seed, spread=0.2)


def save_like_ultralytics(tasks, cfg: str, path: Path, names: dict, strip: bool, seed: int = 0) -> torch.nn.Module:
    """As ultralytics' trainer saves (EMA in FP16, model None, hyper-parameters attached to the model as an
    IterableSimpleNamespace), then, with `strip`, as its strip_optimizer leaves best.pt. `tasks`: the package's
    ultralytics.nn.tasks. Returns the float32 copy of what was saved, the reference for output comparisons."""
    from ultralytics.utils import DEFAULT_CFG_DICT, IterableSimpleNamespace
    from ultralytics.utils.torch_utils import strip_optimizer

    torch.manual_seed(seed)
    model = random_bn_stats(tasks.DetectionModel(cfg, nc=len(names), verbose=False), seed, spread=0.2)
    model.names = dict(names)
    model.args = IterableSimpleNamespace(**DEFAULT_CFG_DICT)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    torch.save({"epoch": 4, "best_fitness": 0.31, "model": None, "ema": copy.deepcopy(model).half(), "updates": 50,
                "optimizer": opt.state_dict(), "train_args": dict(DEFAULT_CFG_DICT),
                "train_metrics": {"metrics/mAP50(B)": 0.4}, "date": "2026-11-30T17:00:00+00:00",
                "version": "8.4.190"}, path)
    if strip:
        strip_optimizer(path)
    return copy.deepcopy(model).half().float().eval()
