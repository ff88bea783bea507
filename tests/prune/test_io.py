"""Pruned detector -> arch.json + weights.pt -> rebuilt exactly in a fresh process; the CLI end to end."""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgeprune.errors import PruneError
from edgeprune.models.io import save_checkpoint
from edgeprune.models.spec import new_spec
from edgeprune.models.yolo import build_model
from edgeprune.prune import cli
from edgeprune.prune.apply import prune_model
from edgeprune.prune.graph import build_graph
from edgeprune.prune.io import load_pruned, save_pruned, spec_from_pruned, spec_sha

X = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))

LOAD_AND_RUN = """
import sys, torch
from edgeprune.prune.io import load_pruned
model, rec = load_pruned(sys.argv[1])
x = torch.load(sys.argv[2], weights_only=True)
with torch.no_grad():
    torch.save({"out": model.eval()(x), "junctions": torch.tensor(len(rec["junctions"]))}, sys.argv[3])
"""


def _pruned_detector(helpers, seed=0):
    model = helpers.randomize_bn(build_model(new_spec(4, size="n")), seed)
    dense_spec = model.spec
    keep = helpers.random_keep(build_graph(model, X), seed)
    res = prune_model(model, keep, rule="topk", example_input=X)
    return res, dense_spec


def test_save_and_load_in_a_fresh_process(helpers, tmp_path):
    res, dense_spec = _pruned_detector(helpers)
    spec = spec_from_pruned(res.model, dense_spec)
    assert spec["widths"] and spec_sha(spec) == spec_sha(dense_spec)
    out = save_pruned(tmp_path / "pruned", res.model, spec, res.recombination_map, res.table, res.stats)
    assert sorted(p.name for p in out.iterdir()) == ["arch.json", "prune_table.json", "prune_table.txt",
                                                      "prune_widths.png", "recombination.json", "weights.pt"]
    assert (out / "prune_widths.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(out.glob(".tmp-*"))
    torch.save(X, tmp_path / "x.pt")
    subprocess.run([sys.executable, "-c", LOAD_AND_RUN, str(out), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                   check=True, cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"})
    got = torch.load(tmp_path / "y.pt", weights_only=True)
    with torch.no_grad():
        want = res.model.eval()(X)
    assert torch.equal(got["out"], want)
    assert int(got["junctions"]) == len(res.recombination_map["junctions"]) == 4
    table = json.loads((out / "prune_table.json").read_text())
    assert table["stats"]["params_after"] == sum(p.numel() for p in res.model.parameters())


def test_load_pruned_errors_name_the_file(helpers, tmp_path):
    res, dense_spec = _pruned_detector(helpers, 1)
    out = save_pruned(tmp_path / "p", res.model, spec_from_pruned(res.model, dense_spec), res.recombination_map,
                      res.table)
    (out / "weights.pt").write_bytes(b"not a zip")
    with pytest.raises(PruneError, match=r"weights.pt: truncated or corrupt"):
        load_pruned(out)
    torch.save(build_model(dense_spec).state_dict(), out / "weights.pt")
    with pytest.raises(PruneError, match=r"weights.pt: does not fit .*arch.json"):
        load_pruned(out)
    (out / "weights.pt").write_bytes(b"")
    with pytest.raises(PruneError, match=r"weights.pt: empty file \(0 bytes\)"):
        load_pruned(out)
    (out / "weights.pt").unlink()
    with pytest.raises(PruneError, match=r"weights.pt: not found"):
        load_pruned(out)


def test_empty_checkpoint_is_named_by_eval(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    out = subprocess.run([sys.executable, "-m", "edgeprune", "eval", str(tmp_path / "empty.pt")], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 1, out.stderr
    assert "empty.pt: empty file (0 bytes)" in out.stderr and "Traceback" not in out.stderr


def test_pruned_folder_records_its_input_size_and_export_uses_it(helpers, tmp_path, capsys):
    from edgeprune.cli import main
    from edgeprune.prune.io import pruned_imgsz, save_pruned_model

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "sparse.pt", build_model(new_spec(2, size="n")), imgsz=128)
    assert _cli(["prune", str(tmp_path / "sparse.pt"), "--global-ratio", "0.3", "--out", str(tmp_path / "p")]) == 0
    assert pruned_imgsz(tmp_path / "p") == 128
    save_pruned_model(tmp_path / "ft", load_pruned(tmp_path / "p").model, tmp_path / "p")  # the fine-tune stage's copy
    assert pruned_imgsz(tmp_path / "ft") == 128
    capsys.readouterr()
    assert main(["export", str(tmp_path / "ft"), "--out", str(tmp_path / "b"), "--parity-images", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["manifest"]["model"]["input_shape"] == [1, 3, 128, 128]
    assert json.loads((tmp_path / "b" / "reports" / "parity.json").read_text())["imgsz"] == 128


def _cli(argv):
    parser = argparse.ArgumentParser(prog="edgeprune")
    cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_with_ratios_json(helpers, tmp_path, capsys):
    model = helpers.randomize_bn(build_model(new_spec(2, size="n")), 2)
    save_checkpoint(tmp_path / "sparse.pt", model, imgsz=64)
    graph = build_graph(model, X)
    rng = np.random.default_rng(0)
    layers = {}
    for bn in sorted(graph.owner_bn)[:20]:
        n = len(graph.bn_layouts[bn])
        idx = sorted(rng.choice(n, size=n // 4, replace=False).tolist())
        layers[bn] = {"channels": n, "keep": len(idx), "keep_idx": idx, "reason": "test"}
    ratios = {"version": 1, "spec_sha": spec_sha(model.spec), "method": "l1rr", "layers": layers}
    (tmp_path / "ratios.json").write_text(json.dumps(ratios))
    code = _cli(["prune", str(tmp_path / "sparse.pt"), "--ratios", str(tmp_path / "ratios.json"), "--rule",
                 "intersection", "--out", str(tmp_path / "out"), "--json"])
    assert code == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["rule"] == "intersection" and stats["params_after"] < stats["params_before"]
    loaded, rec = load_pruned(tmp_path / "out")
    assert rec["rule"] == "intersection"
    assert loaded.layers[0].conv.out_channels == 8  # 16 // 4 = 4 kept, rounded up to 8
    assert _cli(["prune", str(tmp_path / "sparse.pt"), "--global-ratio", "0.5", "--out", str(tmp_path / "g")]) == 0
    text = capsys.readouterr().out
    assert "layers.2.cv1.conv" in text and "junction layers.2" in text and "params" in text


def test_cli_help_has_an_example(capsys):
    with pytest.raises(SystemExit):
        _cli(["prune", "--help"])
    assert "example" in capsys.readouterr().out


def test_compress_stage_api(helpers, tmp_path):
    """What edgeprune/stages.py calls: prune_checkpoint(ckpt, dir, ratios.json) -> load_pruned(dir).model
    -> save_pruned_model(dir, fine-tuned model, pruned dir)."""
    from edgeprune.prune.io import save_pruned_model
    from edgeprune.prune.run import prune_checkpoint

    model = helpers.randomize_bn(build_model(new_spec(2, size="n")), 4)
    save_checkpoint(tmp_path / "sparse.pt", model)
    graph = build_graph(model, X)
    layers = {bn: {"channels": len(graph.bn_layouts[bn]), "keep_idx": list(range(0, len(graph.bn_layouts[bn]), 3))}
              for bn in graph.owner_bn}
    (tmp_path / "ratios.json").write_text(json.dumps({"version": 1, "spec_sha": spec_sha(model.spec), "layers": layers}))
    result = prune_checkpoint(tmp_path / "sparse.pt", tmp_path / "prune", ratios=tmp_path / "ratios.json",
                              rule="topk", round_to=4, imgsz=64)
    assert result["stats"]["rule"] == "topk" and result["spec"]["widths"]["layers.0"] == 8  # ceil(16/3)=6 -> 8
    first = load_pruned(tmp_path / "prune")
    assert first.model.spec == result["spec"]
    save_pruned_model(tmp_path / "ft", first.model, tmp_path / "prune")
    again = load_pruned(tmp_path / "ft")
    assert again.recombination_map == first.recombination_map
    with torch.no_grad():
        assert torch.equal(again.model.eval()(X), first.model.eval()(X))
