import json
import os
import subprocess
import sys

import pytest

from edgeprune.cli import _Parser
from edgeprune.data import cli


def run(argv):
    parser = _Parser(prog="edgeprune")
    cli.register(parser.add_subparsers(dest="command", parser_class=_Parser))
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.mark.parametrize("action", ["synth", "check", "convert"])
def test_every_action_has_help_with_an_example(action, capsys):
    with pytest.raises(SystemExit) as exc:
        run(["data", action, "--help"])
    assert exc.value.code == 0 and "example" in capsys.readouterr().out.lower()


def test_synth_check_convert(tmp_path, capsys):
    assert run(["data", "synth", "--out", str(tmp_path / "cache"), "--images", "3", "--val", "2", "--size", "96",
                "--seed", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert os.path.isfile(out["data_yaml"]) and out["train"] == 3

    png = tmp_path / "sizes.png"
    assert run(["data", "check", out["path"], "--json", "--plot", str(png)]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["splits"]["train"]["images"] == 3 and rep["splits"]["val"]["images"] == 2 and rep["skipped"] == 0
    assert png.read_bytes()[:4] == b"\x89PNG"

    assert run(["data", "convert", out["path"], str(tmp_path / "coco"), "--to", "coco", "--json"]) == 0
    conv = json.loads(capsys.readouterr().out)
    assert conv["images"] == {"train": 3, "val": 2}
    assert (tmp_path / "coco" / "annotations" / "instances_train.json").is_file()


def test_synth_style_dior_then_check(tmp_path, capsys):
    assert run(["data", "synth", "--out", str(tmp_path), "--images", "4", "--val", "0", "--size", "64",
                "--style", "dior", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["style"] == "dior" and "synth-dior-64px" in out["path"]
    assert run(["data", "check", out["path"], "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert len(rep["names"]) == 20 and rep["splits"]["train"]["images"] == 4


def test_check_exits_1_and_lists_bad_lines(yolo_dir, capsys):
    label = yolo_dir / "labels" / "val" / "val0.txt"
    label.write_text("0 0.5 0.5 0.2\n")
    assert run(["data", "check", str(yolo_dir)]) == 1
    text = capsys.readouterr().out
    assert f"{label}:1: expected 5 fields" in text and "1 bad sample(s)" in text and "--set data.skip_bad=true" in text


def test_cli_module_is_python36_compatible():
    # the device installs this module under Python 3.6: it must import there without torch and register
    py36 = os.path.expanduser("~/.pyenv/versions/3.6.15/bin/python")
    if not os.path.exists(py36):
        pytest.skip("Python 3.6 is not installed here")
    code = ("import argparse, sys; from edgeprune.data import cli; p = argparse.ArgumentParser(); "
            "cli.register(p.add_subparsers()); print('torch' in sys.modules)")
    res = subprocess.run([py36, "-c", code], cwd=os.getcwd(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


def test_package_exports_resolve_lazily():
    code = ("import sys; import edgeprune.data.cli; assert 'numpy' not in sys.modules; "
            "from edgeprune.data import load_dataset, Dataset, Sample, ensure_synthetic; "
            "from edgeprune.data.dataset import load_dataset as direct; assert load_dataset is direct")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.getcwd())
