"""Datasets: formats (YOLO, COCO, VOC/DIOR, NWPU VHR-10), the synthetic aerial-scene generator, the torch dataset.

Kept import-free: `edgeprune.data.cli` is loaded through this package on the device (Python 3.6, no torch).
Import the submodules directly: `edgeprune.data.dataset`, `.synth`, `.torchdata`, `.yolo`, `.coco`, `.voc`,
`.nwpu`, `.convert`, `.check`.
"""
