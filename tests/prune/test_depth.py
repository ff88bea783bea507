"""Depth pruning: a residual bottleneck whose branch is pruned to nothing is removed (x + a constant shift), exactly
as the masked model computes it, and the arch JSON rebuilds it."""
import copy

import numpy as np
import pytest
import torch

from edgeprune.errors import ModelError, PruneError
from edgeprune.models.blocks import Bottleneck, removable_branches
from edgeprune.models.spec import new_spec
from edgeprune.models.yolo import build_model
from edgeprune.prune.apply import masked_model, prune_model
from edgeprune.prune.graph import build_graph
from edgeprune.prune.io import keep_from_ratios, spec_from_pruned

X = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
GONE = ("layers.2.m.0", "layers.6.m.1", "layers.4.m.0")


def _pruned(helpers, fold, seed=0):
    model = helpers.randomize_bn(build_model(new_spec(3, size="n")), seed)
    keep = helpers.random_keep(build_graph(model, X), seed, p=0.6)
    for block in GONE:
        keep[f"{block}.cv1.bn"] = np.zeros_like(keep[f"{block}.cv1.bn"])
    dense = copy.deepcopy(model)
    res = prune_model(model, keep, round_to=1, min_channels=1, example_input=X, fold=fold)
    return dense, res


@pytest.mark.parametrize("seed", [0, 1])
def test_removed_blocks_equal_the_masked_model(helpers, seed):
    dense, res = _pruned(helpers, fold=False, seed=seed)
    model = res.model.eval()
    with torch.no_grad():
        err = helpers.rel_err(masked_model(dense, res.plan, zero_beta=True).eval()(X), model(X))
    assert err <= 1e-4, err
    mods = dict(model.named_modules())
    assert res.stats["blocks_removed"] == sorted(GONE)
    for block in GONE:
        assert mods[block].removed and not any(n.startswith(block + ".cv") for n in mods)
    assert res.stats["params_after"] < res.stats["params_before"]
    for j in res.recombination_map["junctions"]:
        assert not any(p.startswith(GONE) for p in j["producers"] + j["consumers"])
    assert not mods["layers.4.m.1"].removed          # its branch keeps channels


def test_fold_shift_is_exact_in_the_interior(helpers):
    """With folding the reference keeps each removed channel's beta: the branch is then cv2 of the constant
    act(beta), exact away from cv2's zero-padded border (the same caveat as any kxk fold)."""
    dense, res = _pruned(helpers, fold=True)
    ref = masked_model(dense, res.plan, zero_beta=False).eval()
    block = "layers.2.m.0"
    got, want = {}, {}
    dict(res.model.named_modules())[block].register_forward_hook(lambda m, a, o: got.setdefault("y", o))
    dict(ref.named_modules())[block].register_forward_hook(lambda m, a, o: want.setdefault("y", o))
    with torch.no_grad():
        res.model.eval()(X)
        ref(X)
    keep = torch.from_numpy(np.flatnonzero(res.plan.kept(res.plan.graph.producers[f"{block}.cv2.conv"])))
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    assert helpers.rel_err(want["y"].index_select(1, keep)[inner], got["y"][inner]) <= 1e-4


def test_arch_json_rebuilds_a_depth_pruned_model(helpers):
    dense, res = _pruned(helpers, fold=False)
    spec = spec_from_pruned(res.model, {**dense.spec, "widths": {}})
    assert all(spec["widths"][f"{b}.cv1"] == 0 for b in GONE) and f"{GONE[0]}.cv2" not in spec["widths"]
    rebuilt = build_model(spec)
    rebuilt.load_state_dict(res.model.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(X), res.model.eval()(X))
    assert set(removable_branches(rebuilt)).isdisjoint(f"{b}.cv1.bn" for b in GONE)
    # pruning the pruned model again keeps working (the shift is a parameter on the junction's channels)
    again = prune_model(copy.deepcopy(rebuilt), {}, example_input=X, fold=False)
    with torch.no_grad():
        assert helpers.rel_err(rebuilt(X), again.model.eval()(X)) <= 1e-5
    # only a residual bottleneck's inner width may be 0
    with pytest.raises(ModelError, match="may be 0"):
        build_model({**spec, "widths": {**spec["widths"], "layers.13.m.0.cv1": 0}})   # no shortcut in the neck
    with pytest.raises(ModelError, match="shortcut"):
        Bottleneck.remove_branch(dict(rebuilt.named_modules())["layers.13.m.0"], torch.zeros(1))


def test_ratios_may_empty_only_a_removable_branch(helpers):
    model = build_model(new_spec(3, size="n"))
    bns = {n: m.num_features for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    layers = {n: {"channels": c, "keep": c, "keep_idx": list(range(c))} for n, c in bns.items()}
    layers["layers.2.m.0.cv1.bn"].update(keep=0, keep_idx=[])
    assert keep_from_ratios({"version": 1, "layers": layers}, model)["layers.2.m.0.cv1.bn"] == []
    layers["layers.13.m.0.cv1.bn"].update(keep=0, keep_idx=[])
    with pytest.raises(PruneError, match="layers.13.m.0.cv1.bn"):
        keep_from_ratios({"version": 1, "layers": layers}, model)


@pytest.mark.parametrize("family", ["yolov8", "yolo11"])
def test_removed_blocks_in_the_v8_family(helpers, family):
    """C2f / C3k2 bottlenecks (chunked junctions) lose their branch exactly too, and the spec rebuilds them."""
    model = helpers.randomize_bn(build_model(new_spec(3, size="n", family=family)), 0)
    gone = sorted(removable_branches(model).items())[:2]
    skip = family == "yolo11"            # its attention's matmul is outside the channel graph (issue 18's work)
    keep = helpers.random_keep(build_graph(model, X, skip_unsupported=skip), 0, p=0.6)
    for bn, _ in gone:
        keep[bn] = np.zeros_like(keep[bn])
    dense = copy.deepcopy(model)
    res = prune_model(model, keep, round_to=1, min_channels=1, example_input=X, fold=False, skip_unsupported=skip)
    assert res.stats["blocks_removed"] == sorted(b for _, b in gone)
    with torch.no_grad():
        ref = masked_model(dense, res.plan, zero_beta=True).eval()(X)
        assert helpers.rel_err(ref, res.model.eval()(X)) <= 1e-4
        rebuilt = build_model(spec_from_pruned(res.model, {**dense.spec, "widths": {}}))
        rebuilt.load_state_dict(res.model.state_dict())
        assert torch.equal(rebuilt.eval()(X), res.model(X))
