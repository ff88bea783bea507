"""mAP through our COCO conversion equals pycocotools run by hand on the same fixture; FLOPs match torch's counter."""
import contextlib
import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from edgeprune.metrics import evaluate
from edgeprune.metrics.coco import coco_map
from edgeprune.metrics.complexity import count, cpu_latency
from edgeprune.models.spec import new_spec
from edgeprune.models.yolo import build_model


def test_hand_computed_ap():
    # one ground truth, a false positive ranked above the exact hit: precision 0.5 at recall 1 -> AP 0.5
    gts = [(np.array([[10, 10, 50, 50]], np.float32), np.array([0]))]
    dets = [(np.array([[100, 100, 140, 140], [10, 10, 50, 50]], np.float32), np.array([0.95, 0.9]), np.array([0, 0]))]
    for backend in ("faster-coco-eval", "pycocotools"):
        r = coco_map(gts, dets, ["a"], [(200, 200)], backend=backend)
        assert r["map50"] == pytest.approx(0.5, abs=1e-6)
        assert r["map"] == pytest.approx(0.5, abs=1e-6)
        assert r["ap_small"] == -1.0      # the only box is 40x40 = 1600 px^2 >= 32^2: no small ground truth


def _fixture(seed=3, n_img=6, names=("plane", "ship", "car")):
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for _ in range(n_img):
        n = rng.integers(1, 6)
        xy = rng.uniform(0, 200, (n, 2))
        wh = rng.uniform(8, 60, (n, 2))
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        cls = rng.integers(0, len(names), n)
        gts.append((boxes, cls))
        # jittered hits, some wrong classes, some misses, plus random false positives
        keep = rng.random(n) > 0.2
        hit = boxes[keep] + rng.normal(0, 3, (keep.sum(), 4)).astype(np.float32)
        hcls = np.where(rng.random(keep.sum()) > 0.15, cls[keep], (cls[keep] + 1) % len(names))
        fp_xy = rng.uniform(0, 200, (3, 2))
        fp = np.concatenate([fp_xy, fp_xy + rng.uniform(8, 60, (3, 2))], 1).astype(np.float32)
        dets.append((np.concatenate([hit, fp]), rng.uniform(0.05, 1, len(hit) + 3), np.concatenate([hcls, rng.integers(0, len(names), 3)])))
    return gts, dets, list(names)


def _pycocotools_by_hand(gts, dets, names):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ds = {"images": [], "annotations": [], "categories": [{"id": 7 + k, "name": n} for k, n in enumerate(names)]}
    res = []
    for i, (b, c) in enumerate(gts):
        ds["images"].append({"id": 100 + i, "width": 260, "height": 260})
        for bb, cc in zip(b, c):
            w, h = float(bb[2] - bb[0]), float(bb[3] - bb[1])
            ds["annotations"].append({"id": len(ds["annotations"]) + 1, "image_id": 100 + i, "category_id": 7 + int(cc),
                                      "bbox": [float(bb[0]), float(bb[1]), w, h], "area": w * h, "iscrowd": 0})
    for i, (b, s, c) in enumerate(dets):
        for bb, ss, cc in zip(b, s, c):
            res.append({"image_id": 100 + i, "category_id": 7 + int(cc), "score": float(ss),
                        "bbox": [float(bb[0]), float(bb[1]), float(bb[2] - bb[0]), float(bb[3] - bb[1])]})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = ds
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(res), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.mark.parametrize("backend", ["auto", "pycocotools"])
def test_map_equals_pycocotools(backend):
    gts, dets, names = _fixture()
    ours = coco_map(gts, dets, names, [(260, 260)] * len(gts), backend=backend)
    ev = _pycocotools_by_hand(gts, dets, names)
    assert 0.05 < ev.stats[1] < 0.99            # the fixture is neither trivial nor hopeless
    assert ours["map50"] == pytest.approx(ev.stats[1], abs=1e-9)
    assert ours["map"] == pytest.approx(ev.stats[0], abs=1e-9)
    assert ours["ap_small"] == pytest.approx(ev.stats[3], abs=1e-9)
    prec = ev.eval["precision"]
    for k, n in enumerate(names):
        p = prec[:, :, k, 0, -1]
        assert ours["per_class"][n]["ap"] == pytest.approx(p[p > -1].mean(), abs=1e-9)


def test_no_detections_and_no_ground_truth():
    gts = [(np.array([[1, 1, 20, 20]], np.float32), np.array([0]))]
    none = [(np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0, np.int64))]
    assert coco_map(gts, none, ["a"])["map50"] == 0.0
    empty_gt = [(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))]
    assert coco_map(empty_gt, none, ["a"])["ap_small"] == -1.0


def test_resampled_map50_is_coco_map_of_the_drawn_images():
    from edgeprune.metrics.coco import resampled_map50

    gts, dets, names = _fixture(n_img=8)
    sizes = [(260, 260)] * len(gts)
    draws = np.array([np.arange(8), [0, 0, 1, 1, 2, 2, 3, 3], [7, 6, 5, 4, 7, 6, 5, 4]])
    got = resampled_map50(gts, dets, names, sizes, draws)
    assert got[0] == coco_map(gts, dets, names, sizes)["map50"]                   # the identity draw
    # an image drawn twice counts as two images: the same as a data set holding it twice
    doubled = [0, 0, 1, 1, 2, 2, 3, 3]
    assert got[1] == coco_map([gts[i] for i in doubled], [dets[i] for i in doubled], names, sizes)["map50"]
    assert len(set(got.round(9))) == 3                                              # the draws differ
    # paired: a model that misses one hit of image 0 differs only on the draws that hold image 0
    worse = list(dets)
    b, s, c = dets[0]
    worse[0] = (b[1:], s[1:], c[1:])       # its first detection is a hit (IoU > 0.8 with a ground truth)
    diff = resampled_map50(gts, dets, names, sizes, draws) - resampled_map50(gts, worse, names, sizes, draws)
    assert diff[2] == 0.0 and diff[0] > 0 and diff[1] > 0


def test_evaluate_runs_the_device_pipeline(tmp_path):
    """A model whose decoded output is a fixed box must score AP 1 after letterbox + NMS + scale_boxes."""
    img = np.full((120, 200, 3), 50, np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    # 200x120 letterboxed to 64: scale 0.32, pad y = (64 - 38) // 2 = 13
    gt_box = np.array([[50, 30, 150, 90]], np.float32)

    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            cx, cy = (50 + 150) / 2 * 0.32, (30 + 90) / 2 * 0.32 + 13
            row = torch.tensor([cx, cy, 100 * 0.32, 60 * 0.32, 0.9, 0.1, 0.95])
            return row.expand(x.shape[0], 1, 7).clone()

    sample = SimpleNamespace(image=tmp_path / "a.png", boxes=gt_box, classes=np.array([1]))
    r = evaluate(Fixed(), [sample], ["x", "y"], 64)
    assert r["map"] == pytest.approx(1.0)
    assert r["per_class"]["y"]["ap50"] == pytest.approx(1.0)


def test_flops_match_torch_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(new_spec(3, size="n")).eval()
    ours = count(model, (96, 64))
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.zeros(1, 3, 96, 64))
    assert ours["flops"] == fc.get_total_flops()
    assert ours["params"] == sum(p.numel() for p in model.parameters())
    assert ours["flops"] > 0


def test_cpu_latency_reports_median():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    r = cpu_latency(model, 32, warmup=1, iters=5)
    assert 0 < r["min_ms"] <= r["median_ms"] and r["iters"] == 5


def _nms_fixture():
    """Decoded predictions [2, N, 5+3]: clusters of overlapping boxes of several classes, exact score ties,
    IoUs near 0.6, scores at the confidence threshold, one image with nothing above it; plus the raw output
    of an untrained detector (thousands of candidates, the regime of an early evaluation)."""
    gen = np.random.default_rng(0)
    n = 400
    centres = gen.uniform(20, 230, (8, 2))
    p = np.zeros((2, n, 8), np.float32)
    k = gen.integers(0, 8, n)
    p[0, :, :2] = centres[k] + gen.normal(0, 4, (n, 2))
    p[0, :, 2:4] = gen.uniform(10, 40, (n, 2))
    p[0, :, 4] = gen.uniform(0, 1, n)
    p[0, :, 5:] = gen.dirichlet(np.ones(3), n)
    p[0, ::7, 4] = 0.5                                     # exact ties in score
    p[0, ::7, 5:] = [0.2, 0.6, 0.2]
    p[0, 1, :4] = p[0, 0, :4] + [1.0, 0, 0, 0]            # a near-duplicate pair
    p[0, 2, 4] = 0.001                                     # exactly at the threshold: dropped
    p[1, :, 4] = 0.0005
    torch.manual_seed(0)
    model = build_model(new_spec(3, size="n")).eval()
    with torch.no_grad():
        raw = model(torch.rand(1, 3, 256, 256)).numpy()
    return [p, raw]


@pytest.mark.parametrize("agnostic", [False, True])
def test_torch_postprocess_equals_the_device_reference(agnostic):
    """metrics.postprocess (torchvision NMS) keeps exactly the detections of jetson.postprocess (numpy)."""
    from jetson.postprocess import postprocess as reference
    from edgeprune.metrics.postprocess import postprocess

    total = 0
    for pred in _nms_fixture():
        for conf, iou, max_det, max_cand in ((0.001, 0.6, 300, 30000), (0.25, 0.45, 50, 100)):
            ref = reference(pred, conf, iou, max_det, agnostic, max_cand)
            mine = postprocess(torch.from_numpy(pred), conf, iou, max_det, agnostic, max_cand)
            assert len(ref) == len(mine)
            for (rb, rs, rc), (b, s, c) in zip(ref, mine):
                assert b.dtype == rb.dtype and s.dtype == rs.dtype and c.dtype == rc.dtype
                np.testing.assert_array_equal(b, rb)
                np.testing.assert_array_equal(s, rs)
                np.testing.assert_array_equal(c, rc)
                total += len(rb)
    assert total > 400                                     # NMS kept and dropped something in every setting
