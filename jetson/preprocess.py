"""Pre-processing: the one implementation shared by host evaluation and device inference.
Python 3.6 compatible, numpy only.

letterbox: resize keeping the aspect ratio (nearest-neighbour-free: bilinear via the caller's decoder
is not assumed; we resize with numpy-only bilinear interpolation), pad to the square input with
`pad_value`, and return the (scale, (pad_x, pad_y)) needed to map boxes back to the source image.
"""
import numpy as np


def _resize_bilinear(img, new_h, new_w):
    """Bilinear resize of an HxWxC uint8 image (align_corners=False, like cv2.INTER_LINEAR)."""
    h, w = img.shape[:2]
    if (h, w) == (new_h, new_w):
        return img.copy()
    ys = (np.arange(new_h, dtype=np.float32) + 0.5) * (h / float(new_h)) - 0.5
    xs = (np.arange(new_w, dtype=np.float32) + 0.5) * (w / float(new_w)) - 0.5
    ys = np.clip(ys, 0, h - 1)
    xs = np.clip(xs, 0, w - 1)
    y0 = np.floor(ys).astype(np.int64)
    x0 = np.floor(xs).astype(np.int64)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    wy = (ys - y0)[:, None, None]
    wx = (xs - x0)[None, :, None]
    # gather the needed rows/columns as uint8 first, then convert: same values, ~20% faster than converting
    # the whole source image to float32 (this runs per frame on a Jetson CPU)
    r0, r1 = img[y0], img[y1]
    top = r0[:, x0].astype(np.float32) * (1 - wx) + r0[:, x1].astype(np.float32) * wx
    bot = r1[:, x0].astype(np.float32) * (1 - wx) + r1[:, x1].astype(np.float32) * wx
    out = top * (1 - wy) + bot * wy
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def letterbox(img, size, pad_value=114):
    """img: HxWx3 uint8 RGB. size: int or (h, w). Returns (canvas uint8 size_h x size_w x 3, scale, (pad_x, pad_y))."""
    if isinstance(size, int):
        size = (size, size)
    th, tw = int(size[0]), int(size[1])
    h, w = img.shape[:2]
    scale = min(th / float(h), tw / float(w))
    nh, nw = int(round(h * scale)), int(round(w * scale))
    resized = _resize_bilinear(img, nh, nw)
    canvas = np.full((th, tw, 3), pad_value, dtype=np.uint8)
    pad_y, pad_x = (th - nh) // 2, (tw - nw) // 2
    canvas[pad_y:pad_y + nh, pad_x:pad_x + nw] = resized
    return canvas, scale, (pad_x, pad_y)


def normalize(canvas, scale=1.0 / 255.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)):
    """HxWx3 uint8 -> 1x3xHxW float32 (NCHW), (x*scale - mean) / std per channel."""
    x = canvas.astype(np.float32) * np.float32(scale)
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def preprocess(img, size, pad_value=114, scale=1.0 / 255.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)):
    """Letterbox + normalise. Returns (tensor 1x3xHxW float32, meta) where meta maps boxes back."""
    canvas, ratio, pad = letterbox(img, size, pad_value)
    meta = {"scale": ratio, "pad": pad, "orig_shape": (int(img.shape[0]), int(img.shape[1]))}
    return normalize(canvas, scale, mean, std), meta


def preprocess_from_manifest(img, manifest):
    """Pre-process exactly as the bundle's manifest says (see docs/CONTRACTS.md, `preprocess`)."""
    p = manifest["preprocess"]
    if p.get("color", "RGB") == "BGR":  # the network was trained on BGR input; images arrive RGB
        img = np.ascontiguousarray(img[..., ::-1])
    return preprocess(img, tuple(p["size"]), p.get("pad_value", 114), p.get("scale", 1.0 / 255.0),
                      tuple(p.get("mean", (0.0, 0.0, 0.0))), tuple(p.get("std", (1.0, 1.0, 1.0))))
