import io
import os

import numpy as np
import pytest
from PIL import Image

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


def test_png_writer_round_trips_through_pillow():
    img = synth.render_scene(3, 1, 96)[0]
    back = np.asarray(Image.open(io.BytesIO(synth.png_bytes(img))).convert("RGB"))
    assert np.array_equal(back, img)


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
