import argparse
import subprocess
from pathlib import Path

import pytest

from edgeprune.config import PRESETS, config_from_args
from edgeprune.errors import UsageError
from edgeprune.sparsity import cli
from edgeprune.sparsity.commands import sparse_command


def _parse(argv):
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    return parser.parse_args(argv)


def test_flags_map_onto_the_config():
    args = _parse(["sparse", "dense.pt", "--out", "o", "--method", "l1rr", "--no-reweight", "--no-attention",
                   "--target", "0.7", "--flops-target", "0.5", "--preset", "quick", "--set", "sparse.lam=0.002"])
    cfg = config_from_args(args)
    s = cfg.sparse
    assert (s.reweight, s.dynamic, s.adaptive, s.attention) == (False, True, True, False)
    assert (s.target, s.flops_target, s.lam, s.epochs) == (0.7, 0.5, 0.002, PRESETS["quick"]["sparse"]["epochs"])


def test_help_has_an_example():
    with pytest.raises(SystemExit):
        _parse(["sparse", "--help"])


def test_missing_checkpoint_is_a_usage_error(tmp_path):
    args = _parse(["sparse", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o")])
    with pytest.raises(UsageError, match="nope.pt"):
        sparse_command(args)


def test_cli_module_is_python36_compatible():
    root = Path(__file__).resolve().parents[2]
    py36 = Path(subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip() or "/nonexistent")
    exe = py36 / "versions" / "3.6.15" / "bin" / "python"
    if not exe.exists():
        pytest.skip("Python 3.6 is not installed here")
    code = ("import sys, argparse; sys.path.insert(0, %r); from edgeprune.sparsity import cli; "
            "p = argparse.ArgumentParser(); cli.register(p.add_subparsers()); "
            "print(p.parse_args(['sparse', 'x', '--out', 'y']).out); print('torch' in sys.modules)") % str(root)
    out = subprocess.run([str(exe), "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["y", "False"]


@pytest.mark.slow
def test_sparse_command_runs_end_to_end(tmp_path, capsys):
    import json

    from edgeprune.config import make_config
    from edgeprune.data.dataset import load_data
    from edgeprune.train.trainer import fit, new_model

    sets = ["data.synth_train=16", "data.synth_val=8", "model.imgsz=64", "train.epochs=1", "train.mosaic=0.0",
            "sparse.epochs=1", "sparse.ratio_batches=1", "sparse.ratio_grid=2"]
    cfg = make_config("quick", {"data": {"synth_train": 16, "synth_val": 8}, "model": {"imgsz": 64},
                                "train": {"epochs": 1, "mosaic": 0.0}})
    data = load_data(cfg.data, tmp_path / "data")
    model, _ = new_model(data, "n", 64, 0, autoanchor=False)
    fit(model, data, cfg.train, tmp_path / "dense", imgsz=64, progress=False)
    argv = ["sparse", str(tmp_path / "dense" / "last.pt"), "--data-root", str(tmp_path / "data"), "--out",
            str(tmp_path / "sp"), "--preset", "quick", "--quiet", "--json", "--no-adaptive"]
    for s in sets:
        argv += ["--set", s]
    assert sparse_command(_parse(argv)) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ablation"]["adaptive"] is False and (tmp_path / "sp" / "ratios.json").is_file()
