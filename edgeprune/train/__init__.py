"""Training: YOLOv5-style loss, anchors fitted to the data, and the `fit` loop with hooks (see trainer.py)."""
