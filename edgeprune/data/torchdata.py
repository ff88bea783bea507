"""Torch side of the data: `DetectionDataset` (letterbox + seeded augmentation) and `collate`.

Letterboxing is `jetson.preprocess.letterbox`, the one implementation the device uses too. Augmentation works
on the letterboxed SxS uint8 canvas: mosaic (4 images, random SxS window of a 2Sx2S tiling at native scale so
small objects stay small), left-right / up-down flips, 90-degree rotations (aerial images have no "up") and HSV
jitter. Each item's randomness comes from (seed, epoch, index) only, so a run is reproducible whatever the
worker count or order; call `set_epoch(e)` at the start of every epoch, or index with (epoch, index) pairs
(what the trainer's sampler yields, so persistent loader workers need no per-epoch message).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from jetson.preprocess import letterbox

from ..config import TrainConfig
from .samples import Sample, read_image

PAD_VALUE = 114
# Mosaic keeps a clipped box if at least this share of its area and MIN_SIDE_PX per side remain in the window.
MOSAIC_MIN_VISIBLE = 0.4
MIN_SIDE_PX = 2.0
# Letterboxed canvases are kept in RAM (decode + resize is ~75% of item time) when they fit in half of the memory
# the kernel reports available (shared by torchrun's local ranks); this budget where /proc/meminfo is missing.
CACHE_BUDGET_BYTES = 1 << 30


def cache_budget(shared: bool = False) -> int:
    """Bytes one DetectionDataset may cache: half of MemAvailable over LOCAL_WORLD_SIZE (each rank caches its
    own copy); with `shared`, also at most half of the free space of /dev/shm, where the cache then lives."""
    budget = CACHE_BUDGET_BYTES
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    budget = int(line.split()[1]) * 1024 // 2
    except (OSError, ValueError, IndexError):
        pass
    budget //= max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    if shared:
        try:
            st = os.statvfs("/dev/shm")
            budget = min(budget, st.f_bavail * st.f_frsize // 2)
        except OSError:
            budget = 0
    return budget


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
                 train_cfg: TrainConfig | None = None, seed: int = 0, cache: bool | None = None,
                 shared: bool = False) -> None:
        """cache: keep letterboxed canvases in RAM (None: when they fit `cache_budget`). shared: put that cache
        in shared memory, so the DataLoader workers fill and read one copy instead of one each."""
        self.samples = list(samples)
        self.imgsz = int(imgsz)
        self.augment = augment
        self.cfg = train_cfg or TrainConfig()
        self.seed = int(seed)
        self.epoch = 0
        n, side = len(self.samples), self.imgsz
        if cache is None:
            cache = n * side * side * 3 <= cache_budget(shared)
        # canvases, (scale, pad x, pad y, height, width) and a filled flag per sample; pages are only committed
        # when an image is first loaded
        self._canvas = self._geom = self._filled = None
        if cache:
            self._canvas = torch.empty((n, side, side, 3), dtype=torch.uint8)
            self._geom = torch.zeros((n, 5), dtype=torch.float64)
            self._filled = torch.zeros(n, dtype=torch.bool)
            if shared:
                for t in (self._canvas, self._geom, self._filled):
                    t.share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Letterboxed canvas (SxSx3 uint8, read-only when cached), boxes xyxy in canvas pixels, classes, meta."""
        s = self.samples[index]
        if self._filled is not None and bool(self._filled[index]):
            canvas = self._canvas[index].numpy()
            scale, px, py, h, w = self._geom[index].tolist()
            pad, shape = (int(px), int(py)), (int(h), int(w))
        else:
            img = read_image(s.image)
            canvas, scale, pad = letterbox(img, self.imgsz, PAD_VALUE)
            pad, shape = (int(pad[0]), int(pad[1])), (int(img.shape[0]), int(img.shape[1]))
            if self._filled is not None:
                self._canvas[index] = torch.from_numpy(canvas)
                self._geom[index] = torch.tensor([float(scale), *pad, *shape], dtype=torch.float64)
                self._filled[index] = True               # last: a reader never sees a half-written entry
                canvas = self._canvas[index].numpy()
        if self._filled is not None:
            canvas.setflags(write=False)
        boxes = s.boxes * np.float32(scale) + np.array([pad[0], pad[1], pad[0], pad[1]], np.float32)
        meta = {"path": str(s.image), "scale": float(scale), "pad": pad, "orig_shape": shape}
        return canvas, boxes.astype(np.float32), s.classes.copy(), meta

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
