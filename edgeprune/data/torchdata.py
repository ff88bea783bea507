"""Torch side of the data: `DetectionDataset` (letterbox + seeded augmentation) and `collate`.

Letterboxing is `jetson.preprocess.letterbox`, the one implementation the device uses too. Augmentation works
on the letterboxed SxS uint8 canvas: mosaic (4 images, random SxS window of a 2Sx2S tiling at native scale so
small objects stay small), left-right / up-down flips, 90-degree rotations (aerial images have no "up") and HSV
jitter. Each item's randomness comes from (seed, epoch, index) only, so a run is reproducible whatever the
worker count or order; call `set_epoch(e)` at the start of every epoch, or index with (epoch, index) pairs
(what the trainer's sampler yields, so persistent loader workers need no per-epoch message).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from jetson.preprocess import letterbox

from ..config import TrainConfig
from .dataset import Sample, read_image

PAD_VALUE = 114
# Mosaic keeps a clipped box if at least this share of its area and MIN_SIDE_PX per side remain in the window.
MOSAIC_MIN_VISIBLE = 0.4
MIN_SIDE_PX = 2.0
# Letterboxed canvases are kept in RAM when they fit in this budget (decode + resize is ~75% of item time).
CACHE_BUDGET_BYTES = 1 << 30


def flip_lr(img: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = img.shape[1]
    return img[:, ::-1], np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)


def flip_ud(img: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = img.shape[0]
    return img[::-1], np.stack([boxes[:, 0], h - boxes[:, 3], boxes[:, 2], h - boxes[:, 1]], 1)


def rot90(img: np.ndarray, boxes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rotate counter-clockwise by k*90 degrees (as np.rot90): a point (x, y) goes to (y, W - x)."""
    for _ in range(k % 4):
        w = img.shape[1]
        img = np.rot90(img)
        boxes = np.stack([boxes[:, 1], w - boxes[:, 2], boxes[:, 3], w - boxes[:, 0]], 1)
    return img, boxes


def hsv_jitter(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Random hue shift / saturation and value gains. strength 0.5 = YOLOv5's defaults (h 0.015, s 0.7, v 0.4)."""
    dh, gs, gv = rng.uniform(-1, 1, 3) * np.array([0.03, 1.4, 0.8]) * strength
    x = np.arange(256, dtype=np.float32)
    lut_h = ((x + dh * 256) % 256).astype(np.uint8)
    lut_s = np.clip(x * max(0.0, 1 + gs), 0, 255).astype(np.uint8)
    lut_v = np.clip(x * max(0.0, 1 + gv), 0, 255).astype(np.uint8)
    # the three uint8 LUTs applied by Pillow in C on the HSV image (no numpy round trip in between)
    hsv = Image.fromarray(np.ascontiguousarray(img)).convert("HSV")
    return np.asarray(hsv.point(np.concatenate([lut_h, lut_s, lut_v]).tolist()).convert("RGB"))


class DetectionDataset(torch.utils.data.Dataset):
    """Item = (img float32 [3,S,S] in 0..1 RGB, targets [N,6] = (0, cls, cx, cy, w, h) normalised to S,
    meta {"path", "scale", "pad", "orig_shape"}) — see docs/CONTRACTS.md."""

    def __init__(self, samples: Sequence[Sample], imgsz: int, augment: bool = False,
                 train_cfg: TrainConfig | None = None, seed: int = 0, cache: bool | None = None) -> None:
        self.samples = list(samples)
        self.imgsz = int(imgsz)
        self.augment = augment
        self.cfg = train_cfg or TrainConfig()
        self.seed = int(seed)
        self.epoch = 0
        if cache is None:
            cache = len(self.samples) * self.imgsz * self.imgsz * 3 <= CACHE_BUDGET_BYTES
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]] | None = {} if cache else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Letterboxed canvas (SxSx3 uint8, read-only when cached), boxes xyxy in canvas pixels, classes, meta."""
        if self._cache is not None and index in self._cache:
            canvas, boxes, cls, meta = self._cache[index]
            return canvas, boxes.copy(), cls.copy(), dict(meta)
        s = self.samples[index]
        img = read_image(s.image)
        canvas, scale, pad = letterbox(img, self.imgsz, PAD_VALUE)
        boxes = s.boxes * np.float32(scale) + np.array([pad[0], pad[1], pad[0], pad[1]], np.float32)
        meta = {"path": str(s.image), "scale": float(scale), "pad": (int(pad[0]), int(pad[1])),
                "orig_shape": (int(img.shape[0]), int(img.shape[1]))}
        boxes = boxes.astype(np.float32)
        if self._cache is not None:
            canvas.setflags(write=False)
            self._cache[index] = (canvas, boxes.copy(), s.classes.copy(), dict(meta))
        return canvas, boxes, s.classes.copy(), meta

    def _mosaic(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        S = self.imgsz
        others = rng.integers(0, len(self.samples), 3)
        big = np.full((2 * S, 2 * S, 3), PAD_VALUE, np.uint8)
        all_boxes, all_cls = [], []
        for k, idx in enumerate([index, *others.tolist()]):
            canvas, boxes, cls, _ = self.load(int(idx))
            ox, oy = (k % 2) * S, (k // 2) * S
            big[oy:oy + S, ox:ox + S] = canvas
            all_boxes.append(boxes + np.array([ox, oy, ox, oy], np.float32))
            all_cls.append(cls)
        x0, y0 = (int(v) for v in rng.integers(0, S + 1, 2))
        img = big[y0:y0 + S, x0:x0 + S]
        boxes = np.concatenate(all_boxes) - np.array([x0, y0, x0, y0], np.float32)
        cls = np.concatenate(all_cls)
        clipped = np.clip(boxes, 0, S)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
        keep = (cw >= MIN_SIDE_PX) & (ch >= MIN_SIDE_PX) & (cw * ch >= MOSAIC_MIN_VISIBLE * np.maximum(area, 1e-6))
        return img, clipped[keep], cls[keep]

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        epoch, index = index if isinstance(index, tuple) else (self.epoch, index)
        img, boxes, cls, meta = self.load(index)
        if self.augment:
            cfg = self.cfg
            rng = np.random.default_rng([self.seed, epoch, index])
            if len(self.samples) > 1 and rng.random() < cfg.mosaic:
                img, boxes, cls = self._mosaic(index, rng)
            if rng.random() < cfg.flip:
                img, boxes = flip_lr(img, boxes)
            if rng.random() < cfg.flip:
                img, boxes = flip_ud(img, boxes)
            if rng.random() < cfg.rot90:
                img, boxes = rot90(img, boxes, int(rng.integers(1, 4)))
            if cfg.hsv > 0:
                img = hsv_jitter(img, rng, cfg.hsv)
        S = float(self.imgsz)
        targets = np.zeros((len(cls), 6), np.float32)
        if len(cls):
            targets[:, 1] = cls
            targets[:, 2] = (boxes[:, 0] + boxes[:, 2]) / 2 / S
            targets[:, 3] = (boxes[:, 1] + boxes[:, 3]) / 2 / S
            targets[:, 4] = (boxes[:, 2] - boxes[:, 0]) / S
            targets[:, 5] = (boxes[:, 3] - boxes[:, 1]) / S
        chw = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) * np.float32(1 / 255.0)
        tensor = torch.from_numpy(chw)
        return tensor, torch.from_numpy(targets), meta


def collate(batch: list[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]]
            ) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, Any]]]:
    """Stack images; concatenate targets with column 0 = the index of the image in the batch."""
    imgs = torch.stack([b[0] for b in batch])
    targets = []
    for i, (_, t, _) in enumerate(batch):
        t = t.clone()
        t[:, 0] = i
        targets.append(t)
    return imgs, torch.cat(targets) if targets else torch.zeros((0, 6)), [b[2] for b in batch]
