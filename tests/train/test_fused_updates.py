"""The fused (torch._foreach_*) EMA and L1RR updates give the per-tensor results they replaced."""
import copy
import math

import pytest
import torch

from edgeprune.config import SparseConfig
from edgeprune.models.spec import new_spec
from edgeprune.models.yolo import build_model
from edgeprune.sparsity.regularizer import L1RRRegularizer
from edgeprune.train.ema import ModelEMA


def _model(seed=0):
    torch.manual_seed(seed)
    m = build_model(new_spec(2, size="n"))
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for bn in m.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.weight.copy_(torch.rand(bn.num_features, generator=gen) ** 2 - 0.1)   # some negative
                bn.bias.copy_(torch.randn(bn.num_features, generator=gen) * 0.1)
    return m


def _perturb(model, gen):
    with torch.no_grad():
        for v in model.state_dict().values():
            if v.dtype.is_floating_point:
                v.add_(torch.randn(v.shape, generator=gen) * 0.01)
            else:
                v.add_(1)


def test_ema_update_equals_per_tensor_update():
    model = _model()
    ema = ModelEMA(model, tau=3.0)
    ref = copy.deepcopy(ema.ema)
    gen = torch.Generator().manual_seed(5)
    for u in range(1, 6):
        _perturb(model, gen)
        ema.update(model)
        d = 0.9999 * (1 - math.exp(-u / 3.0))
        src = model.state_dict()
        with torch.no_grad():                              # the previous per-tensor update
            for name, v in ref.state_dict().items():
                if v.dtype.is_floating_point:
                    v.mul_(d).add_(src[name].detach(), alpha=1.0 - d)
                else:
                    v.copy_(src[name])
    mine, theirs = ema.ema.state_dict(), ref.state_dict()
    assert mine.keys() == theirs.keys()
    moved = 0
    for k in mine:
        torch.testing.assert_close(mine[k], theirs[k], rtol=0, atol=1e-6)
        moved += int(not torch.equal(mine[k], model.state_dict()[k]))
    assert moved > 100          # the EMA lags the model: the update really blended


def _reference_apply(reg, s, lr, prox):
    """The previous per-layer penalty (after s(t) and the Taylor EMA are known)."""
    with torch.no_grad():
        for n, m in reg.bns.items():
            g = m.weight
            shrink = s * reg.lams[n] * reg.weights[n]
            if prox:
                g.copy_(torch.sign(g) * (g.abs() - lr * shrink).clamp_min(0))
            else:
                if g.grad is None:
                    g.grad = torch.zeros_like(g)
                g.grad.add_(shrink * torch.sign(g))
            if reg.cfg.beta_l1 > 0 and m.bias is not None:
                b = m.bias
                if prox:
                    b.copy_(torch.sign(b) * (b.abs() - lr * reg.cfg.beta_l1 * s).clamp_min(0))
                else:
                    if b.grad is None:
                        b.grad = torch.zeros_like(b)
                    b.grad.add_(reg.cfg.beta_l1 * s * torch.sign(b))


def _reference_taylor(reg, taylor):
    mom = reg.cfg.adapt_momentum
    for n, m in reg.bns.items():
        if m.weight.grad is not None:
            t = (m.weight.detach() * m.weight.grad).abs()
            taylor[n] = t if n not in taylor else mom * taylor[n] + (1 - mom) * t


@pytest.mark.parametrize("update", ["proximal", "subgradient"])
def test_l1rr_fused_penalty_equals_per_layer_penalty(update):
    cfg = SparseConfig(l1_update=update, beta_l1=2.0, lam=0.05, dynamic=False)
    fused, ref = _model(), _model()
    reg_f, reg_r = L1RRRegularizer(fused, cfg, 100), L1RRRegularizer(ref, cfg, 100)
    gen = torch.Generator().manual_seed(3)
    for n in reg_f.bns:                                   # non-trivial per-layer lambdas and channel weights
        lam, w = float(torch.rand((), generator=gen)) + 0.5, torch.rand(reg_f.weights[n].shape, generator=gen) * 3
        reg_f.lams[n] = reg_r.lams[n] = lam
        reg_f.weights[n], reg_r.weights[n] = w.clone(), w.clone()
    ref_taylor = {}
    for step in range(4):
        for m_f, m_r in zip(reg_f.bns.values(), reg_r.bns.values()):
            grad = torch.randn(m_f.weight.shape, generator=gen)
            m_f.weight.grad, m_r.weight.grad = grad.clone(), grad.clone()
            if step % 2:
                m_f.bias.grad, m_r.bias.grad = None, None   # the penalty creates missing grads
        s = reg_f.apply(step, lr=0.1)
        _reference_taylor(reg_r, ref_taylor)
        _reference_apply(reg_r, s, 0.1, update == "proximal")
    for m_f, m_r in zip(reg_f.bns.values(), reg_r.bns.values()):
        torch.testing.assert_close(m_f.weight, m_r.weight, rtol=0, atol=1e-6)
        torch.testing.assert_close(m_f.bias, m_r.bias, rtol=0, atol=1e-6)
        torch.testing.assert_close(m_f.weight.grad, m_r.weight.grad, rtol=0, atol=1e-6)
        torch.testing.assert_close(m_f.bias.grad, m_r.bias.grad, rtol=0, atol=1e-6)
    assert ref_taylor.keys() == reg_f.taylor.keys() and ref_taylor
    for n in ref_taylor:
        torch.testing.assert_close(reg_f.taylor[n], ref_taylor[n], rtol=0, atol=1e-6)
    zeros = sum(int((m.weight == 0).sum()) for m in reg_f.bns.values())
    assert (zeros > 0) == (update == "proximal")          # the proximal step really soft-thresholded
