import math

import pytest
import torch

from edgeprune.sparsity.bnscan import prunable_bns, residual_groups, slimming_excluded
from edgeprune.sparsity.regularizer import (L1RRRegularizer, StrengthController, layer_lams, redundancy,
                                            reweight)


def test_reweight_is_normalised_and_favours_strong_channels():
    g = torch.tensor([1e-4, 0.01, 0.1, 0.5, 1.0, 2.0])
    w = reweight(g, eps=0.05, cap=1e9)
    assert w.mean().item() == pytest.approx(1.0, rel=1e-6)
    assert torch.all(w[:-1] > w[1:])                                  # weaker channel -> larger weight
    expect = 1 / (g.abs() + 0.05)
    assert torch.allclose(w, expect / expect.mean())
    assert torch.allclose(reweight(torch.full((5,), 0.7), 0.05, 10.0), torch.ones(5))
    assert reweight(g, eps=0.05, cap=2.0).max().item() == pytest.approx(2.0)


def test_redundancy_measures_concentration():
    assert redundancy(torch.ones(16)) == pytest.approx(0.0, abs=1e-9)
    one_hot = torch.zeros(16)
    one_hot[3] = 1.0
    assert redundancy(one_hot) == pytest.approx(1 - 1 / 16)
    assert 0 < redundancy(torch.linspace(0.01, 1, 16)) < redundancy(torch.tensor([1.0] + [0.01] * 15))


def test_layer_lams_penalise_redundant_and_protect_important(cfg):
    c = cfg.sparse
    sizes = {"a": 16, "b": 16, "c": 32}
    lams = layer_lams({"a": 0.1, "b": 0.6, "c": 0.3}, {}, sizes, c)
    assert lams["b"] > lams["c"] > lams["a"]
    assert sum(lams[n] * sizes[n] for n in sizes) / 64 == pytest.approx(1.0)
    lams = layer_lams({"a": 0.3, "b": 0.3, "c": 0.3}, {"a": 4.0, "b": 1.0, "c": 1.0}, sizes, c)
    assert lams["a"] < lams["b"] == pytest.approx(lams["c"])


def _controller(cfg, total=1000, **kw):
    for k, v in kw.items():
        setattr(cfg.sparse, k, v)
    return StrengthController(cfg.sparse, total)


def test_strength_reacts_to_the_sparsity_gap(cfg):
    cfg.sparse.target = 0.6
    ctl = _controller(cfg, ramp_frac=0.1, relax_frac=0.2)
    ramp = [ctl.update(t, 0.0) for t in range(100)]
    assert ramp[0] < ramp[50] < ramp[-1] == pytest.approx(cfg.sparse.lam)
    behind = [ctl.update(t, 0.1) for t in range(100, 300)]
    assert all(b2 > b1 for b1, b2 in zip(behind, behind[1:]))         # grows while behind the target
    ahead = [ctl.update(t, 0.9) for t in range(300, 500)]
    assert all(a2 < a1 for a1, a2 in zip(ahead, ahead[1:]))           # shrinks when ahead
    level = ctl.update(500, 0.6)
    assert ctl.update(501, 0.6) == pytest.approx(level)               # steady at the target
    relax = [ctl.update(t, 0.0) for t in range(800, 1000)]
    assert all(r2 < r1 for r1, r2 in zip(relax, relax[1:]))           # relaxes in the last 20 %
    assert relax[-1] == pytest.approx(level * (1 - 0.9 * 199 / 200), rel=1e-6)


def test_strength_is_bounded(cfg):
    ctl = _controller(cfg, ramp_frac=0.0, relax_frac=0.0, dyn_gain=50.0)
    s = [ctl.update(t, 0.0) for t in range(1000)][-1]
    assert s == pytest.approx(cfg.sparse.lam * cfg.sparse.lam_max_mult)


def test_static_and_slimming_schedules(cfg):
    ctl = _controller(cfg, dynamic=False)
    assert ctl.update(10, 0.0) == ctl.update(900, 1.0) == cfg.sparse.lam
    ctl = _controller(cfg, method="slimming")
    assert ctl.update(0, 0.0) == pytest.approx(1e-4)
    assert ctl.update(1000, 0.0) == pytest.approx(1e-5)
    assert ctl.update(500, 0.0) == pytest.approx(1e-4 * 0.55)


def test_apply_adds_the_exact_subgradient(tiny_model, cfg):
    reg = L1RRRegularizer(tiny_model, cfg.sparse, 100)
    reg.refresh()
    reg.lams = {n: 0.5 + (i % 3) for i, n in enumerate(reg.lams)}
    s = reg.apply(50)
    assert s > 0
    for n, bn in reg.bns.items():
        expect = s * reg.lams[n] * reg.weights[n] * torch.sign(bn.weight.detach())
        assert torch.allclose(bn.weight.grad, expect)
        assert bn.bias.grad is None                                     # beta_l1 = 0 by default


def test_slimming_skips_residual_bns(tiny_model, cfg):
    cfg.sparse.method = "slimming"
    cfg.sparse.beta_l1 = 10.0
    reg = L1RRRegularizer(tiny_model, cfg.sparse, 100)
    reg.apply(0)
    excluded = slimming_excluded(tiny_model)
    assert "layers.2.cv1.bn" in excluded and "layers.2.m.0.cv1.bn" in excluded and "layers.13.cv1.bn" not in excluded
    for n, bn in prunable_bns(tiny_model).items():
        if n in excluded:
            assert bn.weight.grad is None
        else:
            assert torch.allclose(bn.weight.grad, 1e-4 * torch.sign(bn.weight.detach()))
            assert torch.allclose(bn.bias.grad, 1e-3 * torch.sign(bn.bias.detach()))


def test_residual_groups_of_the_detector(tiny_model):
    groups = residual_groups(tiny_model)
    assert groups["layers.4"] == ["layers.4.cv1.bn", "layers.4.m.0.cv2.bn", "layers.4.m.1.cv2.bn"]
    assert sorted(groups) == ["layers.2", "layers.4", "layers.6", "layers.8"]  # head C3s have no shortcut


def test_ablation_switches(tiny_model, cfg):
    cfg.sparse.reweight = False
    cfg.sparse.adaptive = False
    reg = L1RRRegularizer(tiny_model, cfg.sparse, 100)
    reg.refresh()
    assert all(torch.all(w == 1) for w in reg.weights.values())
    assert set(reg.lams.values()) == {1.0}
    assert math.isclose(reg.zero_share(), reg.zero_share(False))


def test_proximal_update_soft_thresholds_and_keeps_zeros(tiny_model, cfg):
    reg = L1RRRegularizer(tiny_model, cfg.sparse, 100)
    reg.refresh()
    before = {n: bn.weight.detach().clone() for n, bn in reg.bns.items()}
    lr = 0.5
    s = reg.apply(50, lr=lr)
    for n, bn in reg.bns.items():
        step = lr * s * reg.lams[n] * reg.weights[n]
        expect = torch.sign(before[n]) * (before[n].abs() - step).clamp_min(0)
        assert torch.allclose(bn.weight.detach(), expect) and bn.weight.grad is None
    zeroed = sum(int((bn.weight == 0).sum()) for bn in reg.bns.values())
    assert zeroed > 0
    reg.apply(51, lr=lr)
    assert sum(int((bn.weight == 0).sum()) for bn in reg.bns.values()) >= zeroed   # zeros stay exactly zero


def test_taylor_reweighting_separates_equal_gammas():
    g = torch.ones(4)
    taylor = torch.tensor([0.0, 0.1, 1.0, 3.0])
    w = reweight(g, 0.05, 1e9, taylor, 0.5)
    assert w.mean().item() == pytest.approx(1.0) and torch.all(w[:-1] > w[1:])   # unimportant -> more penalty
    assert torch.allclose(reweight(g, 0.05, 1e9, taylor, 0.0), torch.ones(4))


def test_lam_auto_calibrates_the_base_to_the_run(cfg):
    ctl = _controller(cfg, lam_auto=True)
    ctl.calibrate(median_gamma=1.0, lr0=0.01)
    assert ctl.base == pytest.approx(1.0 / (0.01 * 1000))
    ctl = _controller(cfg, lam_auto=True, lam=1.0)
    ctl.calibrate(1.0, 0.01)
    assert ctl.base == 1.0                                            # lam is a floor
    ctl = _controller(cfg, lam_auto=False)
    ctl.calibrate(1.0, 0.01)
    assert ctl.base == cfg.sparse.lam


def test_strongest_channels_are_protected(tiny_model, cfg):
    cfg.sparse.target, cfg.sparse.protect_margin = 0.5, 0.1
    reg = L1RRRegularizer(tiny_model, cfg.sparse, 100)
    reg.refresh()
    w = torch.cat([reg.weights[n] for n in reg.bns])
    g = torch.cat([bn.weight.detach().abs() for bn in reg.bns.values()])
    assert (w == 0).float().mean().item() == pytest.approx(0.4, abs=0.01)
    assert g[w == 0].min() >= g[w > 0].max()                              # exactly the strongest 40 %
    cfg.sparse.protect_margin = 0.5                                        # target + margin >= 1: off
    reg = L1RRRegularizer(tiny_model, cfg.sparse, 100)
    reg.refresh()
    assert all(torch.all(x > 0) for x in reg.weights.values())
