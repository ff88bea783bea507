import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from edgeprune.errors import UsageError
from edgeprune.sparsity import cli
from edgeprune.sparsity.commands import _config, sparse_command


def _parse(argv):
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    return parser.parse_args(argv)


def test_flags_map_onto_the_config():
    args = _parse(["sparse", "dense.pt", "--out", "o", "--method", "l1rr", "--no-reweight", "--no-attention",
                   "--target", "0.7", "--flops-target", "0.5", "--preset", "quick", "--set", "sparse.lam=0.002"])
    cfg = _config(args)
    s = cfg.sparse
    assert (s.reweight, s.dynamic, s.adaptive, s.attention) == (False, True, True, False)
    assert (s.target, s.flops_target, s.lam, s.epochs) == (0.7, 0.5, 0.002, 2)


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
