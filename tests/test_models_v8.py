"""The YOLOv8/YOLO11-style family: shapes, decode, spec round trip, and exact physical pruning."""
import copy
import json

import numpy as np
import pytest
import torch

from edgeprune.errors import ModelError
from edgeprune.models.io import model_from_checkpoint, save_checkpoint
from edgeprune.models.spec import load_spec, new_spec, save_spec
from edgeprune.models.yolo import build_model
from edgeprune.prune.apply import masked_model, prune_model, random_bn_stats
from edgeprune.prune.graph import build_graph
from edgeprune.prune.io import spec_from_pruned
from tests.prune.conftest import random_keep, rel_err

X = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("family", ["yolov8", "yolo11"])
def test_shapes_and_decode(family):
    torch.manual_seed(0)
    model = build_model(new_spec(3, size="n", family=family))
    x = torch.rand(2, 3, 64, 96)
    raw = model.train()(x)
    assert [tuple(r.shape) for r in raw] == [(2, 67, 8, 12), (2, 67, 4, 6), (2, 67, 2, 3)]
    model.eval()
    with torch.no_grad():
        dec = model(x)
        raw = model.detect([f for f in model.forward_features(x)])  # eval: decoded again
    assert dec.shape == (2, 8 * 12 + 4 * 6 + 2 * 3, 7)
    assert torch.equal(dec, raw)
    assert float(dec[..., 4:].min()) >= 0 and float(dec[..., 4:].max()) <= 1
    assert float(dec[..., 2:4].min()) >= 0                      # widths/heights are sums of distances
    # cell (0, 0) of P3 is centred at (4, 4) px; its box lies within reg_max-1 cells of that centre
    assert abs(float(dec[0, 0, 0]) - 4) <= 15 * 8 and float(dec[0, 0, 2]) <= 2 * 15 * 8


def test_decode_matches_hand_computation():
    model = build_model(new_spec(1, size="n", family="yolov8")).eval()
    det = model.detect
    raw = [torch.zeros(1, det.no, 2, 2), torch.zeros(1, det.no, 1, 1), torch.zeros(1, det.no, 1, 1)]
    raw[0][0, 0:16, 1, 0] = torch.nn.functional.one_hot(torch.tensor(3), 16) * 50.0   # left = 3 cells
    raw[0][0, 48:64, 1, 0] = torch.nn.functional.one_hot(torch.tensor(1), 16) * 50.0  # bottom = 1 cell
    out = det.decode(raw)
    # row 1, col 0 of stride 8: centre (0.5, 1.5) cells; top/right: uniform -> 7.5 cells
    x1, x2 = 0.5 - 3, 0.5 + 7.5
    y1, y2 = 1.5 - 7.5, 1.5 + 1
    expect = torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]) * 8
    assert torch.allclose(out[0, 2, :4], expect, atol=1e-4)
    assert torch.allclose(out[0, :, 4], torch.full((6,), 0.5))


@pytest.mark.parametrize("family,size,params", [("yolov8", "n", 3157184), ("yolo11", "n", 2624064),
                                                ("yolov8", "s", 11166544)])
def test_published_parameter_counts(family, size, params):
    """80 classes: the counts the published n/s models report (their trainable parameters)."""
    model = build_model(new_spec(80, size=size, family=family))
    assert sum(p.numel() for p in model.parameters()) == params


def test_spec_round_trip_and_checkpoint(tmp_path):
    spec = new_spec(2, ["a", "b"], size="n", family="yolo11")
    save_spec(spec, tmp_path / "arch.json")
    assert load_spec(tmp_path / "arch.json") == spec
    model = build_model(spec)
    save_checkpoint(tmp_path / "m.pt", model)
    again = model_from_checkpoint(tmp_path / "m.pt")
    assert type(again).__name__ == "DetectorV8" and again.spec == spec


def test_bad_specs_name_the_key():
    spec = new_spec(2, size="n", family="yolov8")
    bad = copy.deepcopy(spec)
    bad["layers"][3]["type"] = "Focus"
    with pytest.raises(ModelError, match=r"layers\[3\]"):
        build_model(bad)
    bad = copy.deepcopy(spec)
    bad["layers"][5]["from"] = 9
    with pytest.raises(ModelError, match=r"layers\[5\]\.from"):
        build_model(bad)
    bad = copy.deepcopy(spec)
    bad["widths"] = {"layers.2.cv1": 7}
    with pytest.raises(ModelError, match="even"):
        build_model(bad)
    bad = copy.deepcopy(spec)
    bad["widths"] = {"layers.99.cv1": 8}
    with pytest.raises(ModelError, match="layers.99.cv1"):
        build_model(bad)
    with pytest.raises(ModelError, match="model.family"):
        new_spec(2, family="yolov9")
    json.dumps(spec)


@pytest.mark.parametrize("family,seed", [("yolov8", 0), ("yolov8", 1), ("yolo11", 2)])
def test_pruned_equals_masked(family, seed):
    """C2f/C3k2 chunk + concat, bottleneck adds and (YOLO11) the PSA residuals prune exactly; the
    attention's head reshapes are frozen (skip_unsupported)."""
    model = random_bn_stats(build_model(new_spec(3, size="n", family=family)), seed)
    skip = family == "yolo11"
    keep = random_keep(build_graph(model, X, skip_unsupported=skip), seed, p=0.5)
    dense = copy.deepcopy(model)
    res = prune_model(model, keep, rule=("union", "topk")[seed % 2], round_to=1 + 3 * (seed % 2), min_channels=1,
                      example_input=X, fold=False, skip_unsupported=skip)
    ref = masked_model(dense, res.plan, zero_beta=True).eval()
    with torch.no_grad():
        err = rel_err(ref(X), res.model.eval()(X))
    assert err <= 1e-4
    assert res.stats["params_after"] < 0.6 * res.stats["params_before"]
    assert res.stats["junction_channels_removed"] > 0
    # the pruned widths rebuild from the spec alone
    rebuilt = build_model(spec_from_pruned(res.model, {**dense.spec, "widths": {}}))
    rebuilt.load_state_dict(res.model.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(X), res.model(X))
    widths = res.model.conv_widths()
    assert widths["layers.2.cv1"] < dense.conv_widths()["layers.2.cv1"]   # a C2f/C3k2 split was pruned


def test_yolo11_attention_needs_skip_unsupported():
    """Without skip_unsupported the graph names the module and the op it cannot follow (the attention's matmul)."""
    from edgeprune.errors import PruneError
    model = build_model(new_spec(3, size="n", family="yolo11"))
    with pytest.raises(PruneError, match=r"layers\.10\.m\.0\.attn .*op matmul.*--skip-unsupported"):
        build_graph(model, X)


def test_config_key_model_family():
    from edgeprune.config import make_config, parse_set
    from edgeprune.errors import ConfigError

    assert make_config("quick").model.family == "yolov5"
    assert make_config("quick", parse_set(["model.family=yolo11"])).model.family == "yolo11"
    with pytest.raises(ConfigError, match="model.family"):
        make_config("quick", parse_set(["model.family=yolov9"]))


def test_yolo11_sparse_stage_to_prune():
    """The sparse stage penalises and solves ratios for the BNs the channel graph gates (sparsity.bnscan
    .prunable_bns): a YOLO11's BNs after depthwise convs (attention pe, the head's class branch) and the
    attention's frozen head-layout gates are left out, so its ratios prune without error."""
    from edgeprune.config import make_config
    from edgeprune.prune.io import keep_from_ratios
    from edgeprune.sparsity.bnscan import prunable_bns
    from edgeprune.sparsity.graph import alive_classes, trace_channels
    from edgeprune.sparsity.ratios import solve_ratios
    from edgeprune.sparsity.regularizer import L1RRRegularizer

    cfg = make_config("quick", {"prune": {"skip_unsupported": True},
                                "sparse": {"ratio_grid": 2, "attention_tol": 1e-6, "flops_target": 0.4}})
    model = random_bn_stats(build_model(new_spec(3, size="n", family="yolo11")), 3)
    graph = trace_channels(model, skip_unsupported=True)
    bns = prunable_bns(model, graph)
    left_out = {n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)} - set(bns)
    after_dw = {n for n in left_out if n not in graph.gates}
    frozen = {n for n in left_out if n in graph.gates}
    assert after_dw and frozen                # both kinds exist in YOLO11 and neither is penalised or scored
    assert all(graph.fixed[graph.gates[n].ids].all() for n in frozen)
    assert set(L1RRRegularizer(model, cfg.sparse, 10, skip_unsupported=True).bns) == set(bns)

    batch = (torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4)),
             torch.tensor([[0, 0, 0.5, 0.5, 0.3, 0.3], [1, 1, 0.25, 0.25, 0.2, 0.2]]))
    doc = solve_ratios(model, [batch], cfg.sparse, cfg.prune)
    assert set(doc["layers"]) == set(bns) and doc["flops_target_met"]
    res = prune_model(model, keep_from_ratios(doc, model), round_to=cfg.prune.round_to,
                      min_channels=cfg.prune.min_channels, example_input=batch[0][:1], skip_unsupported=True)
    # the solver's FLOPs estimate sees what the pruner does: the BNs after depthwise convs follow their producers
    # (no vote of their own), and frozen channels stay
    plan = res.plan
    kept = {n: set(e.get("group_keep_idx", e["keep_idx"])) for n, e in doc["layers"].items()}
    alive = alive_classes(plan.graph, kept)
    dw_ids = np.concatenate([plan.graph.bn_layouts[n] for n in sorted(after_dw)])
    assert not plan.kept(dw_ids).all()                       # some depthwise channels are pruned ...
    assert np.array_equal(alive[plan.graph.root[dw_ids]], plan.kept(dw_ids))   # ... and counted as such
    assert alive[plan.graph.root[plan.graph.fixed]].all()
    reached = 1 - res.stats["flops_after"] / res.stats["flops_before"]
    assert abs(reached - doc["flops_reduction"]) < 0.02
