"""Tiny models and scenes shared by the export tests (imported as tests.export.export_helpers)."""
import numpy as np

IMGSZ = 64
NAMES = ["plane", "ship", "tank"]
# random_bn_stats spread of the export tests' models: test_parity's near-tie case was built on these statistics
BN_SPREAD = 0.1


PRUNED_WIDTHS = {
    "layers.2.cv1": 5, "layers.2.m.0.cv2": 5, "layers.2.m.0.cv1": 7, "layers.2.cv2": 11,
    "layers.4.cv1": 12, "layers.4.m.0.cv2": 12, "layers.4.m.1.cv2": 12, "layers.4.m.0.cv1": 9,
    "layers.9.cv1": 40, "layers.17.cv3": 40, "layers.14": 48,
}

RECOMBINATION = {
    "version": 1, "rule": "union",
    "junctions": [
        {"id": "layers.2.m", "producers": ["layers.2.cv1.conv", "layers.2.m.0.cv2.conv"],
         "consumers": ["layers.2.m.0.cv1.conv", "layers.2.cv3.conv"], "channels_before": 16,
         "kept": [0, 2, 5, 9, 13]},
        {"id": "layers.4.m", "producers": ["layers.4.cv1.conv", "layers.4.m.0.cv2.conv", "layers.4.m.1.cv2.conv"],
         "consumers": ["layers.4.m.0.cv1.conv", "layers.4.m.1.cv1.conv", "layers.4.cv3.conv"],
         "channels_before": 32, "kept": list(range(0, 24, 2))},
    ],
}


def scenes(n, seed=0):
    """Images with known boxes (xyxy, image pixels) and classes: bright rectangles on noisy ground."""
    rng = np.random.default_rng(seed)
    images, truth = [], []
    for _ in range(n):
        h, w = int(rng.integers(48, 96)), int(rng.integers(48, 96))
        img = rng.normal(90, 20, (h, w, 3)).clip(0, 255).astype(np.uint8)
        boxes, classes = [], []
        for _ in range(int(rng.integers(1, 4))):
            bh, bw = int(rng.integers(8, h // 2)), int(rng.integers(8, w // 2))
            y, x = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
            c = int(rng.integers(0, len(NAMES)))
            img[y:y + bh, x:x + bw] = (255 if c == 0 else 60, 255 if c == 1 else 60, 255 if c == 2 else 60)
            boxes.append([x, y, x + bw, y + bh])
            classes.append(c)
        images.append(img)
        truth.append((np.asarray(boxes, np.float32), np.asarray(classes, np.int64)))
    return images, truth
