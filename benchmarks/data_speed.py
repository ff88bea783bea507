"""Speed of the data side on one core: synthetic scene generation (render + PNG encode) and DetectionDataset
items (letterbox + augmentation, first epoch uncached, second epoch from the RAM cache).

Reports images per second of CPU time (time.process_time, so other processes sharing the machine do not
count) and of wall time. Writes JSON.

example:
  python benchmarks/data_speed.py --size 320 --images 100 --imgsz 256 --out benchmarks/data_speed.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _rate(n: int, fn) -> dict[str, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {"n": n, "cpu_s": round(cpu, 3), "wall_s": round(wall, 3), "per_cpu_s": round(n / max(cpu, 1e-9), 1),
            "per_wall_s": round(n / max(wall, 1e-9), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=320, help="scene side in pixels")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--imgsz", type=int, default=256, help="DetectionDataset input side")
    ap.add_argument("--out", default=None, help="JSON output (default: stdout only)")
    args = ap.parse_args()

    import torch
    torch.set_num_threads(1)
    from edgeprune.data.dataset import load_dataset
    from edgeprune.data.synth import render_scene, write_synthetic
    from jetson.imageio import encode_png
    from edgeprune.data.torchdata import DetectionDataset
    from edgeprune.fsio import atomic_write_json

    result = {"size": args.size, "images": args.images, "imgsz": args.imgsz}
    result["render_and_encode"] = _rate(args.images, lambda: [encode_png(render_scene(0, i, args.size)[0])
                                                              for i in range(args.images)])
    with tempfile.TemporaryDirectory() as tmp:
        result["write_dataset"] = _rate(args.images, lambda: write_synthetic(Path(tmp) / "d", args.images, 0,
                                                                             args.size, 0, progress=False))
        ds = load_dataset(Path(tmp) / "d")
        items = DetectionDataset(ds.splits["train"], args.imgsz, augment=True, seed=0)
        for epoch, key in ((0, "items_epoch0_uncached"), (1, "items_epoch1_cached")):
            items.set_epoch(epoch)
            result[key] = _rate(len(items), lambda: [items[i] for i in range(len(items))])
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
