"""prune.target=latency: the ratio solver meets a predicted-latency budget from a (here synthetic) latency table and
snaps widths to each layer's latency staircase; the FLOPs target is untouched by default."""
import copy
import math

import pytest
import torch

from edgeprune.config import make_config
from edgeprune.errors import ConfigError, SparsityError
from edgeprune.fsio import atomic_write_json
from edgeprune.prune.apply import prune_from_ratios
from edgeprune.prune.latency import conv_layers, predict_model
from edgeprune.sparsity.latency import alignment, solver_table
from edgeprune.sparsity.ratios import solve_ratios


def synthetic_table(model, imgsz, out_ms, rest_ms=1.0, precision="fp32", device_profile="host"):
    """A latency table of `model`'s dense architecture whose output staircase is out_ms(layer, c), timed at every
    width (so every lookup is exact); the input side is flat."""
    layers = {}
    for layer in conv_layers(model, imgsz)["layers"]:
        grid = [[c, out_ms(layer, c)] for c in range(1, layer["cout"] + 1)] if layer["prune_out"] else []
        e = {k: v for k, v in layer.items() if k != "name"}
        flat = [[1, 1.0], [layer["cin"], 1.0]] if layer["prune_in"] else []
        e.update(out_grid=grid, in_grid=flat, dense_ms=out_ms(layer, layer["cout"]))
        layers[layer["name"]] = e
    return {"version": 1, "key": {"device_profile": device_profile, "backend": "onnxruntime", "precision": precision,
                                  "batch": 1, "input_size": [imgsz, imgsz], "versions": {}},
            "rest_ms": rest_ms, "statistic": "median", "layers": layers}


def linear(layer, c):
    return 1e-3 * c * layer["cin"] * layer["kernel"] ** 2 * layer["hw"][0] * layer["hw"][1] / layer["stride"] ** 2


def steps32(layer, c):
    """A 32-wide staircase, and a width off a multiple of 8 costs 20 % more (the GPU picture of the issue)."""
    return linear(layer, 32 * math.ceil(c / 32)) * (1.2 if c % 8 else 1.0)


def _latency_cfg(cfg, budget):
    cfg.prune.target, cfg.prune.latency_budget = "latency", budget
    cfg.sparse.ratio_grid = 2                # keep 1/2 or all (then snapped): fewer masked passes, faster tests
    cfg.sparse.attention_tol = 1e-9          # the budget, not the tolerance, decides
    cfg.prune.round_to, cfg.prune.min_channels = 8, 8
    return cfg


def _widths(doc):
    return {n: len(e.get("group_keep_idx", e["keep_idx"])) for n, e in doc["layers"].items()}


def test_budget_met_and_the_solver_predicts_the_pruned_model(tiny_model, batch, cfg):
    table = synthetic_table(tiny_model, 32, linear)
    dense_ms = predict_model(table, tiny_model, 32)["total_ms"]
    shares = []
    for budget in (0.45, 0.7):
        doc = solve_ratios(tiny_model, [batch], cfg.sparse, _latency_cfg(cfg, budget).prune, table=(table, "synthetic"))
        lat = doc["latency"]
        assert doc["target"] == "latency" and lat["met"] and lat["table"] == "synthetic"
        assert lat["dense_ms"] == pytest.approx(dense_ms)
        assert lat["predicted_ms"] <= budget * dense_ms + 1e-9
        # one channel model: what the solver predicts is what the table predicts for the physically pruned model
        pruned = prune_from_ratios(copy.deepcopy(tiny_model), doc, cfg.prune, imgsz=32).model
        assert predict_model(table, pruned, 32)["total_ms"] == pytest.approx(lat["predicted_ms"])
        shares.append(lat["predicted_share"])
    assert shares[0] < shares[1]             # a looser budget keeps more


def test_widths_snap_to_the_staircase_minimum(tiny_model, batch, cfg):
    _latency_cfg(cfg, 0.6)
    channels = {n: m.num_features for n, m in tiny_model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    doc = solve_ratios(tiny_model, [batch], cfg.sparse, cfg.prune, table=(synthetic_table(tiny_model, 32, steps32), "t"))
    assert doc["latency"]["met"]
    widths = _widths(doc)
    # on a 32-wide staircase a width inside a step is as slow as the step's top: every pruned width is a top
    assert all(w % 32 == 0 or w == channels[n] for n, w in widths.items()), widths
    assert any(w < channels[n] for n, w in widths.items())
    assert any("latency staircase" in e["reason"] for e in doc["layers"].values())
    # with a linear cost (no staircase) the same solver keeps widths off multiples of 32: the table decides
    lin = _widths(solve_ratios(tiny_model, [batch], cfg.sparse, cfg.prune,
                               table=(synthetic_table(tiny_model, 32, linear), "t")))
    assert any(w % 32 and w != channels[n] for n, w in lin.items())


def test_flops_target_unchanged_by_default(tiny_model, batch, cfg, tmp_path):
    assert make_config("default").prune.target == "flops"
    cfg.sparse.flops_target, cfg.sparse.attention_tol = 0.5, 1e-9
    base = solve_ratios(tiny_model, [batch], cfg.sparse, cfg.prune)
    # latency settings are ignored unless prune.target=latency (even a table that is not there)
    cfg.prune.latency_table, cfg.prune.latency_budget = str(tmp_path / "missing.json"), 0.2
    other = solve_ratios(tiny_model, [batch], cfg.sparse, cfg.prune)
    assert base["target"] == "flops" and "latency" not in base and base["flops_target_met"]
    assert base["layers"] == other["layers"] and base["flops_reduction"] >= 0.5
    # min_channels everywhere: the FLOPs target never removes a residual block (only the latency target does)
    assert all(e["keep"] >= min(cfg.prune.min_channels, e["channels"]) for e in base["layers"].values())


def test_table_checks_and_alignment(tiny_model, batch, cfg, tmp_path):
    _latency_cfg(cfg, 0.6)
    table = synthetic_table(tiny_model, 32, linear)
    path = tmp_path / "t.json"
    atomic_write_json(path, table)
    cfg.prune.latency_table = str(path)
    assert solver_table(tiny_model, cfg.prune, 32)[0]["layers"] == table["layers"]
    with pytest.raises(SparsityError, match="another input"):
        solver_table(tiny_model, cfg.prune, 64)
    wider = copy.deepcopy(table)
    wider["layers"]["layers.2.cv1.conv"]["cout"] += 8
    with pytest.raises(SparsityError, match="layers.2.cv1.conv"):
        solve_ratios(tiny_model, [batch], cfg.sparse, cfg.prune, table=(wider, "wider"))
    # the device profile sets the alignment: INT8 tensor cores want 32, FP16 / CPU 8; TX2 has no fast INT8
    assert alignment(synthetic_table(tiny_model, 32, linear, precision="int8", device_profile="orin-nano"), 8) == 32
    assert alignment(synthetic_table(tiny_model, 32, linear, precision="int8", device_profile="tx2"), 8) == 8
    assert alignment(table, 8) == 8 and alignment(table, 12) == 24
    with pytest.raises(ConfigError, match="prune.target"):
        make_config("quick", {"prune": {"target": "speed"}})
    with pytest.raises(ConfigError, match="prune.latency_budget"):
        make_config("quick", {"prune": {"latency_budget": 1.5}})
    cfg.sparse.method = "slimming"
    with pytest.raises(SparsityError, match="sparse.method=l1rr"):
        solve_ratios(tiny_model, [batch], cfg.sparse, cfg.prune, mode="threshold")


@pytest.mark.slow
def test_table_measured_on_the_spot_with_onnxruntime(tiny_model, batch, cfg):
    """No prune.latency_table: the solver measures one on this host (ORT CPU, layerprof's profiler)."""
    pytest.importorskip("onnxruntime")
    _latency_cfg(cfg, 0.6)
    cfg.prune.min_channels = 256             # small grids: a layer narrower than that is timed at its width only
    table, source = solver_table(tiny_model, cfg.prune, 32)
    assert "measured on the spot" in source and table["key"]["backend"] == "onnxruntime"
    assert table["key"]["input_size"] == [32, 32] and table["rest_ms"] is not None
    assert set(table["layers"]) == {l["name"] for l in conv_layers(tiny_model, 32)["layers"]}
    doc = solve_ratios(tiny_model, [batch], cfg.sparse, cfg.prune, table=(table, source))
    # the dense model is predicted at the table's own whole-model time; the pruned one below it
    assert doc["latency"]["dense_ms"] == pytest.approx(table["whole_model_ms"])
    assert doc["latency"]["predicted_ms"] < doc["latency"]["dense_ms"]


def test_latency_target_removes_a_residual_block_when_its_branch_is_what_costs(tiny_model, batch, cfg):
    """Branch convs 50x dearer than the rest, inputs flat: only removing blocks (depth pruning) meets the budget."""
    def branch_heavy(layer, c):
        return linear(layer, c) * (50.0 if ".m." in layer["name"] else 1.0)

    table = synthetic_table(tiny_model, 32, branch_heavy)
    doc = solve_ratios(tiny_model, [batch], cfg.sparse, _latency_cfg(cfg, 0.5).prune, table=(table, "t"))
    gone = doc["latency"]["blocks_removed"]
    assert doc["latency"]["met"] and gone
    assert all(doc["layers"][f"{b}.cv1.bn"]["keep"] == 0 for b in gone)
    pruned = prune_from_ratios(copy.deepcopy(tiny_model), doc, cfg.prune, imgsz=32)
    assert pruned.stats["blocks_removed"] == sorted(gone)
    assert predict_model(table, pruned.model, 32)["total_ms"] == pytest.approx(doc["latency"]["predicted_ms"])
