import numpy as np
import pytest

from jetson.postprocess import from_efficient_nms
from jetson.preprocess import _resize_bilinear, preprocess_from_manifest

pytestmark = pytest.mark.py36


def _bilinear_pixel(img, y, x, h, w, nh, nw):
    sy = min(max((y + 0.5) * h / nh - 0.5, 0), h - 1)
    sx = min(max((x + 0.5) * w / nw - 0.5, 0), w - 1)
    y0, x0 = int(np.floor(sy)), int(np.floor(sx))
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    fy, fx = sy - y0, sx - x0
    v = (img[y0, x0] * (1 - fx) + img[y0, x1] * fx) * (1 - fy) + (img[y1, x0] * (1 - fx) + img[y1, x1] * fx) * fy
    return np.clip(v + 0.5, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("h,w,nh,nw", [(7, 9, 4, 5), (5, 5, 11, 13), (1, 6, 3, 2), (8, 3, 8, 7)])
def test_resize_matches_per_pixel_definition(h, w, nh, nw):
    img = np.random.RandomState(h * w).randint(0, 256, (h, w, 3)).astype(np.uint8)
    out = _resize_bilinear(img, nh, nw)
    ref = np.array([[_bilinear_pixel(img.astype(np.float64), y, x, h, w, nh, nw) for x in range(nw)]
                    for y in range(nh)])
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1  # float32 vs float64 rounding at .5


def test_bgr_manifest_flips_channels():
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., 0] = 255  # pure red
    m = {"preprocess": {"size": [8, 8], "pad_value": 114, "color": "RGB"}}
    x_rgb, _ = preprocess_from_manifest(img, m)
    m["preprocess"]["color"] = "BGR"
    x_bgr, _ = preprocess_from_manifest(img, m)
    assert x_rgb[0, 0].max() == 1.0 and x_bgr[0, 2].max() == 1.0 and x_bgr[0, 0].max() == 0.0


def test_efficient_nms_outputs():
    num = np.array([[2], [0]], np.int32)
    boxes = np.zeros((2, 4, 4), np.float32)
    boxes[0, :2] = [[0, 0, 10, 10], [5, 5, 20, 20]]
    scores = np.array([[0.9, 0.3, 0, 0], [0, 0, 0, 0]], np.float32)
    classes = np.array([[1, 2, 0, 0], [0, 0, 0, 0]], np.int32)
    res = from_efficient_nms([num, boxes, scores, classes], conf_threshold=0.5)
    assert len(res) == 2 and res[0][0].shape == (1, 4) and res[0][2].tolist() == [1] and res[1][0].shape == (0, 4)
    assert len(from_efficient_nms([num, boxes, scores, classes], 0.0, max_detections=1)[0][1]) == 1
