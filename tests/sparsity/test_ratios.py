import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgeprune.errors import PruneError, SparsityError
from edgeprune.fsio import atomic_write_json
from edgeprune.models.spec import new_spec
from edgeprune.models.yolo import build_model
from edgeprune.prune.io import keep_from_ratios, read_ratios
from edgeprune.sparsity.bnscan import residual_groups, slimming_excluded
from edgeprune.sparsity.graph import conv_flops, trace_channels
from edgeprune.sparsity.ratios import round_keep, save_ratios, solve_ratios


def test_round_keep(cfg):
    p = cfg.prune
    p.round_to, p.min_channels = 8, 8
    assert [round_keep(k, 64, p) for k in (0, 1, 8, 9, 17, 63, 64)] == [8, 8, 8, 16, 24, 64, 64]
    assert round_keep(3, 4, p) == 4                                     # never above the layer's width


def test_dense_flops_match_torch_flop_counter(tiny_model):
    x = torch.zeros(1, 3, 32, 32)
    convs = trace_channels(tiny_model, x)
    with FlopCounterMode(display=False) as fc:
        tiny_model.eval()(x)                       # decoding adds no counted FLOPs
    assert sum(conv_flops(convs).values()) == fc.get_total_flops()


def test_pruned_flops_match_a_physically_smaller_conv_chain():
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.SiLU(),
                        nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8))
    convs = trace_channels(net, torch.zeros(1, 3, 8, 8))
    f = conv_flops(convs, {"1": set(range(4))})
    assert f["0"] == 2 * 4 * 3 * 9 * 64 and f["3"] == 2 * 8 * 4 * 1 * 64


def _check_doc(doc, model, prune):
    groups = residual_groups(model)
    for name, e in doc["layers"].items():
        assert e["keep"] == len(e["keep_idx"]) and e["channels"] >= e["keep"] >= min(prune.min_channels, e["channels"])
        eff = e.get("group_keep_idx", e["keep_idx"])
        assert len(eff) % prune.round_to == 0 or len(eff) == e["channels"]
    for gid, members in groups.items():
        sets = [set(doc["layers"][m]["group_keep_idx"]) for m in members]
        assert all(s == sets[0] for s in sets)                          # masked jointly
        assert set().union(*(doc["layers"][m]["keep_idx"] for m in members)) <= sets[0]


@pytest.mark.parametrize("target", [0.3, 0.6])
def test_attention_solver_meets_flops_target_and_constraints(tiny_model, batch, cfg, target):
    cfg.sparse.flops_target = target
    cfg.sparse.attention_tol = 1e-9          # force the FLOPs target to drive the tolerance up
    cfg.prune.round_to, cfg.prune.min_channels = 8, 8
    doc = solve_ratios(tiny_model, [batch], cfg.sparse, cfg.prune)
    assert doc["flops_reduction"] >= target and doc["flops_target_met"]
    assert doc["tau"] >= cfg.sparse.attention_tol
    assert set(doc["layers"]) == {n for n, m in tiny_model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    _check_doc(doc, tiny_model, cfg.prune)


def test_attention_solver_prunes_weak_channels_first(tiny_model, batch, cfg):
    cfg.sparse.importance = "gamma"
    cfg.prune.round_to, cfg.prune.min_channels = 4, 4
    doc = solve_ratios(tiny_model, [batch], cfg.sparse, cfg.prune)
    e = doc["layers"]["layers.13.cv1.bn"]
    g = dict(tiny_model.named_modules())["layers.13.cv1.bn"].weight.abs()
    kept, dropped = g[e["keep_idx"]], g[[i for i in range(e["channels"]) if i not in e["keep_idx"]]]
    assert len(dropped) == 0 or kept.min() >= dropped.max()


def test_larger_tolerance_prunes_more(tiny_model, batch, cfg):
    cfg.sparse.flops_target = 0.01
    reds = []
    for tol in (1e-6, 1.0):
        cfg.sparse.attention_tol = tol
        reds.append(solve_ratios(tiny_model, [batch], cfg.sparse, cfg.prune)["flops_reduction"])
    assert reds[1] > reds[0]


def test_threshold_mode_is_slimming(tiny_model, batch, cfg):
    cfg.sparse.method = "slimming"
    cfg.sparse.target = 0.5
    doc = solve_ratios(tiny_model, [batch], cfg.sparse, cfg.prune, mode="threshold")
    assert doc["mode"] == "threshold" and doc["threshold"] > 0
    for name in slimming_excluded(tiny_model):
        assert doc["layers"][name]["keep"] == doc["layers"][name]["channels"]
    bn = dict(tiny_model.named_modules())["layers.17.cv3.bn"]
    above = int((bn.weight.abs() > doc["threshold"]).sum())
    assert doc["layers"]["layers.17.cv3.bn"]["keep"] == round_keep(above, bn.num_features, cfg.prune)


def test_ratios_roundtrip_and_architecture_checks(tiny_model, batch, cfg, tmp_path):
    """The file the sparse stage writes, read the way the prune stage reads it (prune.io)."""
    doc = solve_ratios(tiny_model, [batch], cfg.sparse, cfg.prune, mode="threshold")
    path = tmp_path / "ratios.json"
    save_ratios(doc, path)
    assert read_ratios(path)["layers"] == json.loads(json.dumps(doc["layers"]))
    keep = keep_from_ratios(read_ratios(path), tiny_model, str(path))
    assert {n: len(k) for n, k in keep.items()} == {n: e["keep"] for n, e in doc["layers"].items()}
    other = build_model(new_spec(3, size="n"))                           # another class count -> other spec
    with pytest.raises(PruneError, match="spec_sha"):
        keep_from_ratios(read_ratios(path), other, str(path))
    bad = dict(doc, layers={**doc["layers"], "layers.99.bn": doc["layers"]["layers.0.bn"]})
    atomic_write_json(path, bad)
    with pytest.raises(PruneError, match="layers.99.bn"):
        keep_from_ratios(read_ratios(path), tiny_model, str(path))
    with pytest.raises(PruneError, match="not found"):
        read_ratios(tmp_path / "missing.json")


def test_input_errors(tiny_model, batch, cfg):
    cfg.sparse.flops_target = 1.2
    with pytest.raises(SparsityError, match="sparse.flops_target"):
        solve_ratios(tiny_model, [batch], cfg.sparse, cfg.prune)
    cfg.sparse.flops_target = 0.5
    with pytest.raises(SparsityError, match="no validation batches"):
        solve_ratios(tiny_model, [], cfg.sparse, cfg.prune)
    no_bn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    no_bn.spec = tiny_model.spec
    with pytest.raises(SparsityError, match="no BatchNorm2d"):
        solve_ratios(no_bn, [batch], cfg.sparse, cfg.prune)


def test_solver_flops_are_the_pruned_models_flops(tiny_model, batch, cfg, tmp_path):
    """One channel model: the FLOPs the ratio solver predicts are what the pruner's model costs."""
    from edgeprune.models.io import save_checkpoint
    from edgeprune.prune.run import prune_checkpoint
    cfg.sparse.flops_target, cfg.sparse.attention_tol = 0.5, 1e-9
    doc = solve_ratios(tiny_model, [batch], cfg.sparse, cfg.prune)
    save_checkpoint(tmp_path / "sparse.pt", tiny_model)
    (tmp_path / "ratios.json").write_text(json.dumps(doc))
    p = cfg.prune
    res = prune_checkpoint(tmp_path / "sparse.pt", tmp_path / "pruned", ratios=tmp_path / "ratios.json", rule=p.rule,
                           round_to=p.round_to, min_channels=p.min_channels, fold=p.fold, imgsz=32,
                           skip_unsupported=p.skip_unsupported)
    assert res["stats"]["flops_before"] == doc["flops_dense"]
    assert res["stats"]["flops_after"] == doc["flops_kept"] < doc["flops_dense"]


@pytest.mark.parametrize("family", ["yolov5", "yolov8"])
def test_cached_deviation_equals_a_full_forward_and_skips_the_unmasked_prefix(family, monkeypatch):
    """The solver's evaluation replays the layers before the first masked one: the same deviation to the bit as
    a full forward against the unmasked model, and the replayed layers' convolutions do not run."""
    from edgeprune.sparsity.attention import attention_deviation
    from edgeprune.sparsity.bnscan import prunable_bns
    from edgeprune.sparsity.ratios import _Deviation, _Masker

    torch.manual_seed(0)
    net = build_model(new_spec(2, size="n", family=family)).eval()
    # torch's default conv init shrinks activations ~3x in variance per layer: at the v8 head's last hidden
    # layer they fall below the attention map's flat floor. A variance-keeping init keeps every level alive.
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    imgs = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))     # P5 2x2: attention can move
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.3, 0.3], [1, 1, 0.25, 0.25, 0.1, 0.1]])
    batches = [(imgs, targets), (imgs.flip(-1), targets)]
    kw = {"p": 2.0, "fg_weight": 4.0, "small_area": 1024.0, "small_boost": 4.0}
    bns = prunable_bns(net)
    deviation = _Deviation(net, bns, batches, kw)
    assert deviation.order == list(range(len(net.layers)))
    with torch.no_grad():
        refs = [net.prediction_features(x) for x, _ in batches]
    first_conv = [m for m in net.layers[0].modules() if isinstance(m, nn.Conv2d)][0]
    calls = []
    first_conv.register_forward_hook(lambda *a: calls.append(1))
    masker = _Masker(bns, mask_beta=True)
    names = [n for n in bns if n.startswith("layers.")]
    head = [n for n in bns if n.startswith("detect.")]       # v8: the decoupled head's conv -> BN blocks
    assert bool(head) == (family == "yolov8")
    for masked in ([names[0]], [names[len(names) // 2]], [names[-1]], [names[-1], names[3]], *([h] for h in head[:2])):
        drop = {n: list(range(0, bns[n].num_features, 2)) for n in masked}
        calls.clear()
        got = masker.run(drop, lambda: deviation(masked))
        replayed = not calls
        with torch.no_grad():
            want = masker.run(drop, lambda: float(torch.stack(
                [attention_deviation(net.prediction_features(x), r, t, **kw).mean()
                 for (x, t), r in zip(batches, refs)]).mean()))
        assert got == want and got > 0, masked
        assert replayed == (names[0] not in masked), masked
    # layer outputs beyond the memory budget: no replay, the same deviation from full forwards
    from edgeprune.sparsity import ratios
    monkeypatch.setattr(ratios, "_memory_budget", lambda batches: 0)
    full = _Deviation(net, bns, batches, kw)
    assert full.order == [] and full.outs == []
    assert masker.run(drop, lambda: full(masked)) == got
