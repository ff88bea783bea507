import numpy as np
import pytest
import yaml
from PIL import Image


def make_yolo(root, n_train=3, n_val=1, size=(40, 32), names=("plane", "ship", "tank")):
    """Tiny YOLO dataset: image i has a bright box per class k at a known place."""
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = np.zeros((size[1], size[0], 3), np.uint8)
            lines = []
            for k in range(len(names)):
                x1, y1 = 2 + 11 * k, 3 + i
                x2, y2 = x1 + 7 + (i % 2), y1 + 9
                img[y1:y2, x1:x2] = 200
                lines.append("%d %.6f %.6f %.6f %.6f" % (k, (x1 + x2) / 2 / size[0], (y1 + y2) / 2 / size[1],
                                                         (x2 - x1) / size[0], (y2 - y1) / size[1]))
            Image.fromarray(img).save(root / "images" / split / f"{split}{i}.png")
            (root / "labels" / split / f"{split}{i}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val",
                                                    "nc": len(names), "names": list(names)}))
    return root


@pytest.fixture
def yolo_dir(tmp_path):
    return make_yolo(tmp_path / "yolo")
