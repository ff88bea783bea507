import pytest
import torch

from edgeprune.sparsity.attention import attention_loss, attention_map, target_energy, target_weights


def _feats(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(2, 4, s, s, generator=g) + 0.5 for s in (16, 8, 4)]


# one 32x32-px box in image 0 (input 128 px): cells 4..7 at P3
BOX = torch.tensor([[0, 0, 0.375, 0.375, 0.25, 0.25]])


def test_attention_map_is_unit_norm_and_scale_free():
    f = _feats()[0]
    a = attention_map(f)
    assert torch.allclose(a.norm(dim=1), torch.ones(2))
    assert torch.allclose(attention_map(f * 1e-9), a, atol=1e-6)


def test_zero_for_identical_and_grows_with_deviation():
    t = _feats()
    assert attention_loss(t, [f.clone() for f in t], BOX).item() == pytest.approx(0.0, abs=1e-12)
    losses = []
    for amp in (0.5, 1.0, 2.0, 4.0):
        s = [f.clone() for f in t]
        s[0][:, :, 0:4, 0:4] += amp
        losses.append(attention_loss(s, t, BOX).item())
    assert all(b > a for a, b in zip(losses, losses[1:])) and losses[0] > 0


def test_deviation_inside_targets_costs_more_than_outside():
    t = _feats()
    inside, outside = [f.clone() for f in t], [f.clone() for f in t]
    inside[0][0, :, 4:8, 4:8] += 2.0          # the box's cells
    outside[0][0, :, 10:14, 10:14] += 2.0     # same change, empty background
    assert attention_loss(inside, t, BOX).item() > 1.5 * attention_loss(outside, t, BOX).item()
    # without targets both cost about the same
    assert attention_loss(inside, t, None).item() == pytest.approx(attention_loss(outside, t, None).item(), rel=0.3)


def test_small_boxes_are_weighted_up_and_always_mark_a_cell():
    small = torch.tensor([[0, 0, 0.53, 0.53, 0.02, 0.02]])    # 2.5 px at 128 px: smaller than one P3 cell
    large = torch.tensor([[0, 0, 0.5, 0.5, 0.5, 0.5]])
    ws = target_weights(small, 1, 16, 16, 8, fg_weight=4.0, small_area=1024, small_boost=4.0)
    wl = target_weights(large, 1, 16, 16, 8, fg_weight=4.0, small_area=1024, small_boost=4.0)
    assert ws.max().item() == pytest.approx(1 + 4 * 4)          # boost capped at small_boost
    assert wl.max().item() == pytest.approx(1 + 4)              # large box: no boost
    assert int((ws > 1).sum()) == 1 and ws[0, 8, 8] > 1
    assert int((wl > 1).sum()) == 64
    assert target_weights(torch.zeros(0, 6), 2, 4, 4, 8).eq(1).all()


def test_target_energy_gradient_reaches_only_through_targets():
    f = [x.clone().requires_grad_(True) for x in _feats()]
    target_energy(f, BOX).backward()
    g = f[0].grad
    assert g[0, :, 4:8, 4:8].abs().sum() > 0
    assert g[0, :, 10:, 10:].abs().sum() == 0 and g[1].abs().sum() == 0


def test_all_zero_features_give_finite_gradients():
    f = [torch.zeros(2, 4, s, s, requires_grad=True) for s in (16, 8, 4)]
    loss = attention_loss(f, _feats(), BOX)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(x.grad).all() for x in f)


def _per_box_weights(targets, batch, h, w, stride, fg_weight, small_area, small_boost):
    """The plain per-box formula (a Python loop over the boxes), the reference for the batched one."""
    import math
    weights = torch.ones(batch, h, w)
    img_px = (h * stride) * (w * stride)
    for b, _, cx, cy, bw, bh in targets.tolist():
        boost = min(max(math.sqrt(small_area / max(bw * bh * img_px, 1e-6)), 1.0), small_boost)
        x1 = max(min(math.floor((cx - bw / 2) * w), int(cx * w)), 0)
        x2 = min(max(math.ceil((cx + bw / 2) * w), int(cx * w) + 1), w)
        y1 = max(min(math.floor((cy - bh / 2) * h), int(cy * h)), 0)
        y2 = min(max(math.ceil((cy + bh / 2) * h), int(cy * h) + 1), h)
        weights[int(b), y1:y2, x1:x2].clamp_(min=1.0 + fg_weight * boost)
    return weights


@pytest.mark.parametrize("fg_weight,small_boost", [(4.0, 4.0), (2.5, 0.5)])
def test_batched_target_weights_equal_the_per_box_formula(fg_weight, small_boost):
    g = torch.Generator().manual_seed(3)
    n = 60
    wh = torch.rand(n, 2, generator=g) ** 3 * 0.9 + 1e-4         # many boxes below one cell, some large
    cxy = torch.rand(n, 2, generator=g)
    cxy[:4] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.999, 0.0], [0.5, 1.0]])   # centres on the borders
    t = torch.cat([torch.randint(0, 3, (n, 1), generator=g).float(), torch.zeros(n, 1), cxy, wh], 1)
    for h, w, s in ((16, 16, 8), (8, 12, 16), (1, 1, 32)):
        got = target_weights(t, 3, h, w, s, fg_weight, 1024.0, small_boost)
        want = _per_box_weights(t, 3, h, w, s, fg_weight, 1024.0, small_boost)
        assert torch.equal(got, want), (h, w)
        if h == 16:
            assert (want > 1).any() and (want == 1).any()
            assert len(want.unique()) > (3 if small_boost > 1 else 1)     # boosts vary unless capped below 1
