"""Datasets: formats (YOLO, COCO, VOC/DIOR, NWPU VHR-10), the synthetic aerial-scene generator, the torch dataset.

Kept light: `edgeprune.data.cli` is loaded through this package on the device (Python 3.6, no torch), so the
package imports nothing at load time. `from edgeprune.data import load_dataset, Dataset, Sample` resolves
lazily (PEP 562, Python 3.7+); submodules: `.dataset` (load_dataset), `.samples` (types, reader helpers), `.synth`, `.torchdata`, `.yolo`, `.coco`, `.voc`,
`.nwpu`, `.convert`, `.check`.
"""
import importlib

_LAZY = {"load_dataset": "dataset", "Dataset": "samples", "Sample": "samples", "ensure_synthetic": "synth"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module("." + _LAZY[name], __name__), name)
    raise AttributeError("module {!r} has no attribute {!r}".format(__name__, name))
