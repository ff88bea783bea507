import numpy as np
import pytest
import torch
from PIL import Image

from edgeprune.config import TrainConfig
from edgeprune.data.samples import Sample
from edgeprune.data.torchdata import DetectionDataset, collate, rot90


def _square_sample(tmp_path, name="sq.png", size=(64, 48), box=(10, 6, 22, 14)):
    img = np.zeros((size[1], size[0], 3), np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = 255
    p = tmp_path / name
    Image.fromarray(img).save(p)
    return Sample(p, np.array([box], np.float32), np.array([1]), size)


def _bright_box(img_chw):
    m = img_chw.numpy().min(0) > 0.9
    ys, xs = np.nonzero(m)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def _target_box(t, s):
    cx, cy, w, h = (t[0, 2:] * s).tolist()
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def test_letterbox_item_matches_contract(tmp_path):
    s = _square_sample(tmp_path)
    ds = DetectionDataset([s], 64, augment=False)
    img, t, meta = ds[0]
    assert img.shape == (3, 64, 64) and img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
    assert t.shape == (1, 6) and t[0, 0] == 0 and t[0, 1] == 1
    assert meta["scale"] == 1.0 and meta["pad"] == (0, 8) and meta["orig_shape"] == (48, 64)
    assert np.allclose(_target_box(t, 64), _bright_box(img), atol=1.0)


@pytest.mark.parametrize("flip,rot", [(0.0, 1.0), (0.5, 0.0), (0.5, 0.5)])
def test_geometric_augmentation_moves_box_with_pixels(tmp_path, flip, rot):
    s = _square_sample(tmp_path)
    cfg = TrainConfig(mosaic=0.0, flip=flip, rot90=rot, hsv=0.0)
    ds = DetectionDataset([s], 64, augment=True, train_cfg=cfg, seed=1)
    boxes = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        img, t, _ = ds[0]
        assert np.allclose(_target_box(t, 64), _bright_box(img), atol=1.0)
        boxes.add(tuple(np.round(_target_box(t, 64)).tolist()))
    assert len(boxes) >= 2  # the augmentation really moved the square


def test_rot90_maps_a_point_counter_clockwise():
    img = np.zeros((8, 8, 3), np.uint8)
    img[1, 5] = 255  # pixel at x=5, y=1
    out, b = rot90(img, np.array([[5, 1, 6, 2]], np.float32), 1)
    ys, xs = np.nonzero(out[..., 0])
    assert (xs[0], ys[0]) == (1, 2)
    assert b.tolist() == [[1, 2, 2, 3]]


def test_mosaic_and_hsv_keep_boxes_on_their_squares(tmp_path):
    samples = [_square_sample(tmp_path, f"s{i}.png", (64, 64), (8 + 4 * i, 10, 24 + 4 * i, 30)) for i in range(4)]
    cfg = TrainConfig(mosaic=1.0, flip=0.5, rot90=0.5, hsv=0.5)
    ds = DetectionDataset(samples, 64, augment=True, train_cfg=cfg, seed=0)
    checked = 0
    for epoch in range(6):
        ds.set_epoch(epoch)
        for i in range(4):
            img, t, _ = ds[i]
            m = img.numpy().max(0) > 0.5  # HSV jitter changes the white a little, never to dark
            for row in t:
                x1, y1, x2, y2 = _target_box(row[None], 64)
                inner = m[int(np.ceil(y1)):int(y2), int(np.ceil(x1)):int(x2)]
                assert inner.size and inner.mean() > 0.95
                checked += 1
    assert checked > 10


def test_augmentation_is_reproducible_per_seed_epoch_index(tmp_path):
    samples = [_square_sample(tmp_path, f"s{i}.png", (64, 64), (8, 8 + 8 * i, 20, 16 + 8 * i)) for i in range(3)]
    mk = lambda seed: DetectionDataset(samples, 64, augment=True, seed=seed)  # noqa: E731
    a, b, c = mk(0), mk(0), mk(1)
    a.set_epoch(2)
    b.set_epoch(2)
    c.set_epoch(2)
    assert all(torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1]) for i in range(3))
    assert any(not torch.equal(a[i][0], c[i][0]) for i in range(3))
    b.set_epoch(3)
    assert any(not torch.equal(a[i][0], b[i][0]) for i in range(3))


def test_collate_shapes(tmp_path):
    samples = [_square_sample(tmp_path, "a.png"), _square_sample(tmp_path, "b.png"),
               Sample(_square_sample(tmp_path, "c.png").image, np.zeros((0, 4)), np.zeros(0))]
    ds = DetectionDataset(samples, 64)
    imgs, targets, metas = collate([ds[i] for i in range(3)])
    assert imgs.shape == (3, 3, 64, 64)
    assert targets.shape == (2, 6) and targets[:, 0].tolist() == [0, 1]
    assert len(metas) == 3 and metas[2]["path"].endswith("c.png")
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate)
    shapes = [b[0].shape[0] for b in loader]
    assert shapes == [2, 1]


def test_augmented_targets_stay_valid_on_synthetic_scenes(tmp_path):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from edgeprune.data.dataset import load_dataset
    from edgeprune.data.synth import write_synthetic

    ds = load_dataset(write_synthetic(tmp_path / "s", 4, 0, 96, seed=2, progress=False))
    items = DetectionDataset(ds.splits["train"], 64, augment=True, train_cfg=TrainConfig(mosaic=0.7), seed=0)

    @settings(max_examples=40, deadline=None)
    @given(st.integers(0, 10**6), st.integers(0, 3))
    def check(epoch, index):
        items.set_epoch(epoch)
        img, t, _ = items[index]
        assert img.shape == (3, 64, 64)
        assert t.shape[1] == 6 and bool((t[:, 1] >= 0).all()) and bool((t[:, 1] < 6).all())
        x1, x2 = t[:, 2] - t[:, 4] / 2, t[:, 2] + t[:, 4] / 2
        y1, y2 = t[:, 3] - t[:, 5] / 2, t[:, 3] + t[:, 5] / 2
        eps = 1e-5
        assert bool((x1 >= -eps).all() and (y1 >= -eps).all() and (x2 <= 1 + eps).all() and (y2 <= 1 + eps).all())
        assert bool((t[:, 4] > 0).all() and (t[:, 5] > 0).all())

    check()
