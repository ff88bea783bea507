import os

import numpy as np
import pytest

from edgeprune.data import synth
from edgeprune.data.dataset import load_dataset


def _tree(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    a = synth.write_synthetic(tmp_path / "a", 4, 2, 128, seed=7, progress=False)
    b = synth.write_synthetic(tmp_path / "b", 4, 2, 128, seed=7, progress=False)
    c = synth.write_synthetic(tmp_path / "c", 4, 2, 128, seed=8, progress=False)
    ta, tb, tc = _tree(a), _tree(b), _tree(c)
    assert len(ta) == 4 + 2 + 4 + 2 + 1
    assert ta == tb
    assert sorted(ta) == sorted(tc)
    pngs = [k for k in ta if k.endswith(".png")]
    assert all(ta[k] != tc[k] for k in pngs)


@pytest.mark.parametrize("style, scenes", [("aerial", 16), ("simple", 8)])
def test_boxes_are_tight_around_drawn_objects(style, scenes):
    # Render each scene again with one object left undrawn (same random draws): the pixels that change are
    # that object's, and their extent must be its label within 2 px (the sensor blur spreads edges by 1 px,
    # a polygon's rasterised edge lies within 1 px of its float outline). A loose, shifted or swapped box fails.
    seen = set()
    for i in range(scenes):
        img, boxes, classes = synth.render_scene(0, i, 192, style=style)
        assert img.shape == (192, 192, 3) and img.dtype == np.uint8
        assert boxes.dtype == np.float32 and classes.dtype == np.int64
        for k, box in enumerate(boxes):
            without = synth.render_scene(0, i, 192, style=style, hide=k)[0]
            ys, xs = np.nonzero(np.abs(img.astype(int) - without.astype(int)).max(-1) > 12)
            assert len(xs), (i, k)
            drawn = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
            assert np.abs(drawn - box).max() <= 2.0, (i, k, drawn, box)
        seen.update(classes.tolist())
    assert seen == set(range(len(synth.STYLES[style])))


def test_tank_box_matches_its_pixels():
    # storage tanks are bright discs: the bright pixels inside an isolated tank box must reach its borders
    for i in range(60):
        img, boxes, classes = synth.render_scene(1, i, 256)
        for (x1, y1, x2, y2), c in zip(boxes, classes):
            if c != synth.TANK or x2 - x1 < 16:
                continue
            gray = img.astype(int).sum(-1)
            x1i, y1i, x2i, y2i = int(x1), int(y1), int(np.ceil(x2)), int(np.ceil(y2))
            pad = 4
            win = gray[max(0, y1i - pad):y2i + pad, max(0, x1i - pad):x2i + pad] > 600
            ys, xs = np.nonzero(win)
            ox, oy = max(0, x1i - pad), max(0, y1i - pad)
            # the bright disc's extent agrees with the label within 2 px (blur widens it slightly)
            assert abs(xs.min() + ox - x1) <= 2.5 and abs(xs.max() + 1 + ox - x2) <= 2.5
            assert abs(ys.min() + oy - y1) <= 2.5 and abs(ys.max() + 1 + oy - y2) <= 2.5
            return
    pytest.fail("no large storage tank in 60 scenes")


def test_ensure_synthetic_caches_and_regenerates_half_written(tmp_path):
    p = synth.ensure_synthetic(tmp_path, 3, 1, 96, seed=1, progress=False)
    assert (p / synth.DONE_MARKER).is_file() and (p / "data.yaml").is_file()
    stamp = (p / "images" / "train" / "train_000000.png").stat().st_mtime_ns
    assert synth.ensure_synthetic(tmp_path, 3, 1, 96, seed=1, progress=False) == p
    assert (p / "images" / "train" / "train_000000.png").stat().st_mtime_ns == stamp
    # a cache without its done-marker (interrupted run) is regenerated, not trusted
    (p / synth.DONE_MARKER).unlink()
    (p / "images" / "train" / "train_000000.png").write_bytes(b"half")
    assert synth.ensure_synthetic(tmp_path, 3, 1, 96, seed=1, progress=False) == p
    assert (p / "images" / "train" / "train_000000.png").read_bytes()[:4] == b"\x89PNG"
    # other parameters → another folder
    q = synth.ensure_synthetic(tmp_path, 3, 1, 96, seed=2, progress=False)
    assert q != p
    ds = load_dataset(p)
    assert ds.names == synth.NAMES and len(ds.splits["train"]) == 3 and len(ds.splits["val"]) == 1
    assert not [x for x in os.listdir(tmp_path) if x.startswith(".staging")]


def test_concurrent_ensure_synthetic_agrees(tmp_path):
    import subprocess
    import sys
    code = ("import sys; from edgeprune.data.synth import ensure_synthetic; "
            "print(ensure_synthetic(sys.argv[1], 6, 2, 96, 3, progress=False))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=os.getcwd()) for _ in range(3)]
    outs = {p.communicate()[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(outs) == 1
    assert len(load_dataset(outs.pop()).splits["train"]) == 6
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(synth.ensure_synthetic(tmp_path, 6, 2, 96, 3,
                                                                                     progress=False))]


@pytest.mark.parametrize("size", [64, 80, 96, 128])
def test_small_scene_sizes_render(size):
    for i in range(25):
        img, boxes, _ = synth.render_scene(i, i, size)
        assert img.shape == (size, size, 3)
        assert ((boxes[:, :2] >= 0) & (boxes[:, 2:] <= size)).all()


def test_simple_style_is_its_own_cached_dataset_with_three_large_object_classes(tmp_path):
    aerial = synth.ensure_synthetic(tmp_path, 3, 1, 96, seed=1, progress=False)
    simple = synth.ensure_synthetic(tmp_path, 3, 1, 96, seed=1, progress=False, style="simple")
    assert simple != aerial and "simple" in simple.name and "simple" not in aerial.name
    ds = load_dataset(simple)
    assert ds.names == ["airplane", "ship", "storage-tank"] and len(ds.splits["train"]) == 3
    for i in range(10):     # large objects: every box spans at least a fifth of the scene
        _, boxes, classes = synth.render_scene(0, i, 128, style="simple")
        assert 1 <= len(boxes) <= 3 and set(classes.tolist()) <= {0, 1, 2}
        assert ((boxes[:, 2:] - boxes[:, :2]).max(1) >= 128 / 5).all()
    with pytest.raises(synth.DataError, match="data.synth_style"):
        synth.ensure_synthetic(tmp_path, 3, 1, 96, style="photo")


def _sha_tree(root):
    import hashlib
    return hashlib.sha256(b"".join(k.encode() + v for k, v in sorted(_tree(root).items()))).hexdigest()


def test_dior_style_is_deterministic_and_its_own_data_set(tmp_path):
    a = synth.write_synthetic(tmp_path / "a", 5, 2, 128, seed=4, progress=False, style="dior")
    b = synth.write_synthetic(tmp_path / "b", 5, 2, 128, seed=4, progress=False, style="dior")
    c = synth.write_synthetic(tmp_path / "c", 5, 2, 128, seed=5, progress=False, style="dior")
    assert _sha_tree(a) == _sha_tree(b) != _sha_tree(c)
    cached = synth.ensure_synthetic(tmp_path / "cache", 5, 2, 128, seed=4, progress=False, style="dior")
    assert "-dior-" in cached.name
    ds = load_dataset(cached)
    assert ds.names == synth.DIOR_NAMES and len(ds.names) == 20
    assert [s.image.read_bytes() for s in ds.splits["train"]] == \
        [(a / "images" / "train" / f"train_{i:06d}.png").read_bytes() for i in range(5)]


def test_dior_boxes_are_tight_also_where_a_tile_is_cut():
    # as test_boxes_are_tight_around_drawn_objects, on the four quarters of two tiles: objects cut by a quarter's
    # edge must be labelled by the extent of their visible part
    cut = 0
    for i in range(8):
        img, boxes, classes = synth.render_scene(2, i, 160, style="dior")
        assert img.shape == (160, 160, 3) and ((boxes >= 0) & (boxes <= 160)).all()
        assert ((classes >= 0) & (classes < 20)).all()
        for k, box in enumerate(boxes):
            without = synth.render_scene(2, i, 160, style="dior", hide=k)[0]
            ys, xs = np.nonzero(np.abs(img.astype(int) - without.astype(int)).max(-1) > 12)
            assert len(xs), (i, k)
            drawn = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
            assert np.abs(drawn - box).max() <= 2.0, (i, k, int(classes[k]), drawn, box)
            cut += bool(min(box[0], box[1]) < 0.5 or max(box[2], box[3]) > 159.5)
    assert cut >= 3


def test_dior_has_every_class_mostly_tiny_objects_and_passes_the_data_check(tmp_path):
    from edgeprune.data.check import BANDS, check
    path = synth.ensure_synthetic(tmp_path, 120, 0, 256, seed=0, progress=False, style="dior")  # 512 px tiles
    ds, rep = check(path)
    tr = rep["splits"]["train"]
    assert not rep["problems"] and rep["skipped"] == 0
    assert all(v["boxes"] > 0 for v in tr["per_class"].values()), tr["per_class"]
    # from the labels: the share of objects under 16 px (sqrt of the box area), and dense scenes
    boxes = np.concatenate([s.boxes for s in ds.splits["train"]])
    side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    assert (side < BANDS[0][1]).mean() >= 0.5 and tr["bands"]["tiny"] == int((side < 16).sum())
    assert (side >= 64).sum() >= 10                      # and some large areas (airports, golf, stations)
    assert len(boxes) / len(ds.splits["train"]) >= 10
    aerial = np.concatenate([synth.render_scene(0, i, 256)[1] for i in range(60)])
    a_side = np.sqrt((aerial[:, 2] - aerial[:, 0]) * (aerial[:, 3] - aerial[:, 1]))
    assert (a_side < 16).mean() < (side < 16).mean() - 0.2      # unlike the default aerial scenes
